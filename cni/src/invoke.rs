//! Running a plugin binary the way the spec says a runtime does: found by its
//! `type` in the `CNI_PATH` dirs, the command in the environment, the config
//! on stdin, the result or an error object on stdout. Used by `kubelab-bridge`
//! to delegate IPAM and by the agent's CNI client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::types::{CniError, CniResult, code};

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("CNI plugin {name:?} not found in {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":"))]
    NotFound { name: String, dirs: Vec<PathBuf> },
    #[error("running CNI plugin {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed (code {}): {error}", error.code)]
    Plugin {
        plugin: String,
        command: String,
        error: CniError,
    },
    #[error("CNI plugin {plugin} {command} wrote unreadable output ({reason}): {output:?}")]
    BadOutput {
        plugin: String,
        command: String,
        reason: String,
        output: String,
    },
}

impl From<InvokeError> for CniError {
    /// A delegated plugin's own error passes through unchanged.
    fn from(e: InvokeError) -> CniError {
        match e {
            InvokeError::Plugin { error, .. } => error,
            InvokeError::NotFound { .. } => CniError::new(code::INVALID_CONFIG, e.to_string()),
            other => CniError::new(code::IO_FAILURE, other.to_string()),
        }
    }
}

/// The environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct PluginEnv<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub path: &'a [PathBuf],
}

/// The first executable file named `name` in `dirs`.
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, InvokeError> {
    let not_found = || InvokeError::NotFound {
        name: name.to_string(),
        dirs: dirs.to_vec(),
    };
    // A type is a file name, never a path: no escaping the plugin dirs.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(not_found());
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(not_found)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `plugin` and returns its stdout (empty for DEL/CHECK).
pub fn exec(plugin: &Path, env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, InvokeError> {
    let name = plugin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cni_path = std::env::join_paths(env.path).unwrap_or_default();
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", env.command)
        .env("CNI_CONTAINERID", env.container_id)
        .env("CNI_NETNS", env.netns)
        .env("CNI_IFNAME", env.ifname)
        .env("CNI_ARGS", env.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| InvokeError::Spawn {
            path: plugin.to_path_buf(),
            source,
        })?;
    {
        let mut input = child.stdin.take().expect("piped");
        // A plugin that exits without reading its config closes the pipe; its
        // exit status says what happened.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|source| InvokeError::Spawn {
            path: plugin.to_path_buf(),
            source,
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match serde_json::from_slice::<CniError>(&out.stdout) {
        Ok(error) => Err(InvokeError::Plugin {
            plugin: name,
            command: env.command.to_string(),
            error,
        }),
        Err(_) => Err(InvokeError::BadOutput {
            plugin: name,
            command: env.command.to_string(),
            reason: format!(
                "{}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            output: text,
        }),
    }
}

/// Finds and runs plugin `name`; for ADD, parses the result.
pub fn exec_by_name(name: &str, env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, InvokeError> {
    let path = find_plugin(name, env.path)?;
    exec(&path, env, stdin)
}

/// Parses an ADD result.
pub fn parse_result(plugin: &str, command: &str, out: &[u8]) -> Result<CniResult, InvokeError> {
    serde_json::from_slice(out).map_err(|e| InvokeError::BadOutput {
        plugin: plugin.to_string(),
        command: command.to_string(),
        reason: e.to_string(),
        output: String::from_utf8_lossy(out).into_owned(),
    })
}
