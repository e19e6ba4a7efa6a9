//! The agent's side of one container run: prepare the bundle (rootfs, cgroup,
//! `config.json`), start a shim for it, learn when it ends, stop it.
//!
//! Blocking functions here are called from `spawn_blocking`; [`wait_for_exit`]
//! is the async notification, built on a pidfd of the shim so that it works
//! the same for shims this agent started and for ones it adopted after a restart.

use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::io::unix::AsyncFd;

use super::shim::{self, ContainerExit, ContainerStarted};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("creating bundle dir {path}: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("starting the shim: {0}")]
    Shim(#[source] std::io::Error),
}

/// The outcome of asking a shim to start a container.
pub enum StartOutcome {
    Running(ContainerStarted),
    /// The process never ran; the shim has written `exit.json` with the reason.
    Failed(String),
}

/// A new container id: 64 hex digits, as container runtimes print them.
pub fn new_container_id() -> String {
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let t = jiff::Timestamp::now().as_nanosecond().to_le_bytes();
        bytes[..16].copy_from_slice(&t);
    }
    hex::encode(bytes)
}

/// Writes `config.json` into the bundle dir.
pub fn write_bundle(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), ContainerError> {
    std::fs::create_dir_all(bundle).map_err(|source| ContainerError::Bundle {
        path: bundle.to_path_buf(),
        source,
    })?;
    let path = bundle.join("config.json");
    spec.save(&path)
        .map_err(|source| ContainerError::Config { path, source })
}

/// Settings of the shim for one run.
pub struct ShimLaunch<'a> {
    pub agent_exe: &'a Path,
    pub bundle: &'a Path,
    pub log_path: &'a Path,
    pub log_max_size: u64,
    pub log_max_files: usize,
    pub cgroup_dirs: &'a [PathBuf],
    /// The container's `stdin` and `stdinOnce`.
    pub stdin: bool,
    pub stdin_once: bool,
    /// Start the container with runc rather than the agent's own init.
    pub runc: Option<&'a super::runc::Runc>,
}

/// Starts the shim and waits for its one-line report. Blocking.
pub fn start_shim(launch: &ShimLaunch) -> Result<StartOutcome, ContainerError> {
    if let Some(dir) = launch.log_path.parent() {
        std::fs::create_dir_all(dir).map_err(ContainerError::Shim)?;
    }
    let mut cmd = Command::new(launch.agent_exe);
    cmd.arg("shim")
        .arg("--bundle")
        .arg(launch.bundle)
        .arg("--log-path")
        .arg(launch.log_path)
        .arg("--log-max-size")
        .arg(launch.log_max_size.to_string())
        .arg("--log-max-files")
        .arg(launch.log_max_files.to_string());
    for dir in launch.cgroup_dirs {
        cmd.arg("--cgroup-dir").arg(dir);
    }
    if launch.stdin {
        cmd.arg("--stdin");
    }
    if launch.stdin_once {
        cmd.arg("--stdin-once");
    }
    if let Some(runc) = launch.runc {
        cmd.arg("--runtime")
            .arg(&runc.binary)
            .arg("--runtime-root")
            .arg(&runc.root);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(ContainerError::Shim)?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(ContainerError::Shim)?;
    // The shim outlives this call (and maybe the agent); a thread reaps it
    // when it ends so it never stays a zombie of the agent.
    reap_in_background(child);
    let line = line.trim_end();
    if line.starts_with("started ") {
        match shim::read_started(launch.bundle) {
            Some(started) => Ok(StartOutcome::Running(started)),
            None => Ok(StartOutcome::Failed("the shim recorded no state".into())),
        }
    } else {
        let msg = line.strip_prefix("failed ").unwrap_or(line);
        Ok(StartOutcome::Failed(if msg.is_empty() {
            "the shim exited without a report".into()
        } else {
            msg.to_string()
        }))
    }
}

/// Waits for a child on a small thread of its own, so it never stays a zombie
/// of the agent; the thread needs almost no stack.
pub(crate) fn reap_in_background(mut child: std::process::Child) {
    let spawned = std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = spawned {
        tracing::warn!("no thread to reap a child process: {e}");
    }
}

/// A pidfd owned for the lifetime of its tokio registration.
struct PidFd(OwnedFd);

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// A pidfd for a process, or `None` if it is gone.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Resolves when the shim process has exited (a pidfd turns readable).
/// `started` is checked against `/proc` so a reused pid is not mistaken.
pub async fn wait_for_exit(started: &ContainerStarted) {
    let Some(fd) = pidfd_open(started.shim_pid) else {
        return;
    };
    // SAFETY: PidFd owns the descriptor and keeps it open while registered.
    match unsafe { AsyncFd::register_with_interest(PidFd(fd), tokio::io::Interest::READABLE) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            // Fall back to polling /proc if the pidfd cannot be registered.
            while super::sandbox::process_start_ticks(started.shim_pid).is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

/// Whether the shim recorded in `started` still runs.
pub fn shim_alive(started: &ContainerStarted) -> bool {
    super::sandbox::process_start_ticks(started.shim_pid).is_some()
}

/// How the run ended, from the shim's `exit.json`; a shim that vanished
/// without writing one is reported as Kubernetes does for a lost container.
pub fn read_exit(bundle: &Path) -> Option<ContainerExit> {
    shim::read_exit(bundle)
}

/// Sends a signal to the container's init process.
pub fn signal(started: &ContainerStarted, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(started.pid), sig);
}
