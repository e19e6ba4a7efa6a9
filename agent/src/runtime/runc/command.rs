//! The `runc` command line, as a shim drives it: `create` (the container's
//! process set up and waiting), `start` (it execs), `delete`. runc keeps its
//! state under `--root`; its own messages go to a JSON log in the bundle.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("running {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// runc's own words (its last logged error), e.g. `runc create failed:
    /// unable to start container process: exec: "nope": executable file not
    /// found in $PATH`.
    #[error("{0}")]
    Failed(String),
    #[error("reading the container's pid from {path}: {reason}")]
    PidFile { path: PathBuf, reason: String },
}

/// A `runc` binary and the state dir it keeps its containers in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runc {
    pub binary: PathBuf,
    /// `runc --root`: under the agent's root dir, so two agents never share it.
    pub root: PathBuf,
}

/// How a container's process gets its stdio from `runc create`: passed
/// through (runc hands its own stdin/stdout/stderr to the container), or a
/// terminal whose master end runc sends to a console socket.
pub struct CreateIo {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    pub console_socket: Option<PathBuf>,
}

/// The file runc logs to for a bundle.
pub fn log_path(bundle: &Path) -> PathBuf {
    bundle.join("runc.log")
}

impl Runc {
    fn command(&self, bundle: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log_path(bundle))
            .arg("--log-format")
            .arg("json");
        cmd
    }

    /// `runc create`: the container's process exists, set up, waiting for
    /// `start`; returns its pid.
    pub fn create(&self, id: &str, bundle: &Path, io: CreateIo) -> Result<i32, RuncError> {
        let pid_file = bundle.join("container.pid");
        let mut cmd = self.command(bundle);
        cmd.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some(socket) = &io.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id)
            .stdin(io.stdin)
            .stdout(io.stdout)
            .stderr(io.stderr);
        self.run(cmd, bundle, "create")?;
        let text = std::fs::read_to_string(&pid_file).map_err(|e| RuncError::PidFile {
            path: pid_file.clone(),
            reason: e.to_string(),
        })?;
        text.trim().parse().map_err(|_| RuncError::PidFile {
            path: pid_file,
            reason: format!("not a pid: {text:?}"),
        })
    }

    /// `runc start`: the created container's process execs.
    pub fn start(&self, id: &str, bundle: &Path) -> Result<(), RuncError> {
        let mut cmd = self.command(bundle);
        cmd.arg("start").arg(id);
        quiet(&mut cmd);
        self.run(cmd, bundle, "start")
    }

    /// `runc delete` (`--force`: kills a container still running): runc's
    /// state and the container's cgroup go.
    pub fn delete(&self, id: &str, bundle: &Path, force: bool) -> Result<(), RuncError> {
        let mut cmd = self.command(bundle);
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        quiet(&mut cmd);
        self.run(cmd, bundle, "delete")
    }

    fn run(&self, mut cmd: Command, bundle: &Path, verb: &str) -> Result<(), RuncError> {
        let status = cmd.status().map_err(|source| RuncError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        let logged = std::fs::read_to_string(log_path(bundle)).unwrap_or_default();
        Err(RuncError::Failed(
            last_error(&logged).unwrap_or_else(|| format!("runc {verb} failed: {status}")),
        ))
    }
}

impl Runc {
    /// `runc features`: what this runc can do, as containerd asks it for
    /// CRI's `RuntimeStatus`; `None` when runc is not there (the binary
    /// does not resolve) and all off when it cannot tell (runc before 1.1).
    pub fn features(&self) -> Option<RuncFeatures> {
        let out = Command::new(&self.binary)
            .arg("features")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        match out {
            Err(e) => {
                tracing::info!(binary = %self.binary.display(), "runc not found: {e}; no runc runtime handler reported");
                None
            }
            Ok(out) if !out.status.success() => Some(RuncFeatures::default()),
            Ok(out) => Some(RuncFeatures::from_json(&out.stdout)),
        }
    }
}

/// What `runc features` says of the two features a node reports per
/// runtime handler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuncFeatures {
    /// `rro` among its mount options (runc 1.1+).
    pub recursive_read_only_mounts: bool,
    /// idmapped mounts (runc 1.2+): what user namespaces with volumes need.
    pub user_namespaces: bool,
}

impl RuncFeatures {
    pub fn from_json(json: &[u8]) -> Self {
        let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
        let rro = v["mountOptions"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o == "rro"));
        let user_ns = v["linux"]["namespaces"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n == "user"));
        let idmap = v["linux"]["mountExtensions"]["idmap"]["enabled"] == true;
        RuncFeatures {
            recursive_read_only_mounts: rro,
            user_namespaces: user_ns && idmap,
        }
    }
}

fn quiet(cmd: &mut Command) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
}

/// The last error in runc's JSON log (`{"level":"error","msg":...}` lines):
/// why the last command failed.
pub fn last_error(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| matches!(entry["level"].as_str(), Some("error" | "fatal")))
        .and_then(|entry| entry["msg"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_come_from_runc_features() {
        // runc 1.1: rro, no idmapped mounts.
        let v11 = br#"{"ociVersionMin":"1.0.0","mountOptions":["bind","ro","rro","rw"],
            "linux":{"namespaces":["cgroup","ipc","mount","network","pid","user","uts"]}}"#;
        assert_eq!(
            RuncFeatures::from_json(v11),
            RuncFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: false
            }
        );
        // runc 1.2: both.
        let v12 = br#"{"mountOptions":["rro"],"linux":{"namespaces":["user"],
            "mountExtensions":{"idmap":{"enabled":true}}}}"#;
        assert_eq!(
            RuncFeatures::from_json(v12),
            RuncFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: true
            }
        );
        assert_eq!(
            RuncFeatures::from_json(b"not json"),
            RuncFeatures::default()
        );
    }

    #[test]
    fn the_last_logged_error_says_why_runc_failed() {
        let log = r#"{"level":"warning","msg":"lstat /x: no such file","time":"2026-12-06T21:00:00Z"}
{"level":"error","msg":"runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH","time":"2026-12-06T21:00:01Z"}
{"level":"info","msg":"done","time":"2026-12-06T21:00:02Z"}
"#;
        assert_eq!(
            last_error(log).as_deref(),
            Some(
                "runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
            )
        );
        assert_eq!(last_error("not json\n"), None);
        assert_eq!(last_error(""), None);
    }
}
