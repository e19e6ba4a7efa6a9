//! The pod sandbox: a pause-like process that holds the pod's network, IPC and
//! UTS namespaces, so containers can come and go (restarts) while the pod keeps
//! its hostname, its loopback and, later, its IP.
//!
//! `kubelab-agent sandbox` is the process itself (run from the agent's own
//! binary, single-threaded); [`start`] is the agent's side.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use serde::{Deserialize, Serialize};

use super::userns::UserNamespace;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("starting the sandbox process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the sandbox process failed: {0}")]
    Failed(String),
    #[error("writing pod file {path}: {source}")]
    PodFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    #[arg(long)]
    pub hostname: String,
    /// Share the node's network and UTS namespaces (`hostNetwork: true`).
    #[arg(long)]
    pub host_network: bool,
    /// Hold a PID namespace for the pod too (`shareProcessNamespace: true`):
    /// the sandbox becomes its PID 1.
    #[arg(long)]
    pub share_pid: bool,
    /// A pod sysctl to set in the new namespaces, `name=value` (repeated).
    #[arg(long = "sysctl", value_name = "NAME=VALUE")]
    pub sysctls: Vec<String>,
    /// Own the pod's namespaces from a new user namespace (`hostUsers:
    /// false`): the sandbox reports `userns`, waits for the agent to write
    /// its ID maps and to say `mapped` on stdin, then becomes its root.
    #[arg(long)]
    pub user_namespace: bool,
}

/// What the agent remembers of a pod's sandbox (`sandbox.json` in the pod dir).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxState {
    pub id: String,
    pub pid: i32,
    /// The process's start time in clock ticks (`/proc/<pid>/stat` field 22):
    /// with the pid it tells our process from a later one that reused the pid.
    pub start_ticks: u64,
    pub host_network: bool,
    /// The sandbox is PID 1 of a PID namespace the containers share.
    #[serde(default)]
    pub share_pid: bool,
    /// The pod's user namespace (`hostUsers: false`), held by the sandbox
    /// process, and its mappings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<UserNamespace>,
}

impl SandboxState {
    pub fn is_alive(&self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// Field 22 of `/proc/<pid>/stat`, or `None` if there is no such process.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after ')' are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The sandbox process's main: new namespaces, hostname, loopback up, then wait.
pub fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let _ = nix::unistd::setsid();
    let mut flags = CloneFlags::CLONE_NEWIPC;
    if !args.host_network {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
    }
    let result = (|| -> anyhow::Result<()> {
        // kubelet's score for the pod's infrastructure: killed only after
        // everything else. Lowering a score needs CAP_SYS_RESOURCE, which a
        // nested or confined node may lack: then the sandbox keeps the agent's.
        let _ = std::fs::write("/proc/self/oom_score_adj", "-998");
        if args.user_namespace {
            // First, so the namespaces below belong to it.
            unshare(CloneFlags::CLONE_NEWUSER)?;
            let mut out = std::io::stdout();
            writeln!(out, "userns")?;
            out.flush()?;
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if answer.trim() != "mapped" {
                anyhow::bail!("the agent did not map the user namespace");
            }
            // Root of the pod's user namespace: an unprivileged host ID.
            let root = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
            nix::unistd::setgroups(&[])?;
            nix::unistd::setresgid(root.1, root.1, root.1)?;
            nix::unistd::setresuid(root.0, root.0, root.0)?;
        }
        unshare(flags)?;
        if !args.host_network {
            nix::unistd::sethostname(&args.hostname)?;
            loopback_up()?;
        }
        // In the pod's own IPC and network namespaces, before CNI sets the
        // network up: what the pod's containers will share.
        let sysctls: Vec<(String, String)> = args
            .sysctls
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        apply_sysctls(&sysctls)?;
        Ok(())
    })();
    let mut out = std::io::stdout();
    if let Err(e) = result {
        writeln!(out, "failed {e:#}")?;
        return Ok(());
    }
    if args.share_pid {
        // unshare(CLONE_NEWPID) only moves children: the next child is PID 1
        // of the pod's PID namespace and becomes the sandbox; this process
        // reports its pid and leaves.
        if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
            writeln!(out, "failed unshare pid namespace: {e}")?;
            return Ok(());
        }
        // SAFETY: single-threaded process; the child continues below.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                writeln!(out, "ready {child}")?;
                out.flush()?;
                return Ok(());
            }
            Ok(nix::unistd::ForkResult::Child) => {}
            Err(e) => {
                writeln!(out, "failed fork: {e}")?;
                return Ok(());
            }
        }
    } else {
        writeln!(out, "ready")?;
        out.flush()?;
    }
    // SAFETY: 0/1/2 are replaced by /dev/null; nothing else uses them.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }

    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        signals.add(s);
    }
    signals.thread_block()?;
    loop {
        match signals.wait()? {
            Signal::SIGCHLD => {
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            _ => return Ok(()),
        }
    }
}

/// `ip link set lo up`, with the two ioctls it takes.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain datagram socket and SIOC[GS]IFFLAGS on a zeroed ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Starts a sandbox process for a pod and waits until its namespaces exist.
/// `pre_start` runs in the child before exec (joining the pod's cgroup).
#[allow(clippy::too_many_arguments)]
pub fn start(
    agent_exe: &Path,
    id: &str,
    hostname: &str,
    host_network: bool,
    share_pid: bool,
    sysctls: &[(String, String)],
    user_namespace: Option<&UserNamespace>,
    cgroup_procs: &[PathBuf],
) -> Result<SandboxState, SandboxError> {
    let mut cmd = Command::new(agent_exe);
    cmd.arg("sandbox").arg("--hostname").arg(hostname);
    if user_namespace.is_some() {
        cmd.arg("--user-namespace");
    }
    if host_network {
        cmd.arg("--host-network");
    }
    if share_pid {
        cmd.arg("--share-pid");
    }
    for (name, value) in sysctls {
        cmd.arg("--sysctl").arg(format!("{name}={value}"));
    }
    cmd.stdin(if user_namespace.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let procs: Vec<std::ffi::CString> = cgroup_procs
        .iter()
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok())
        .collect();
    // SAFETY: between fork and exec the child only calls open/write/close,
    // which are async-signal-safe; the paths were allocated before the fork.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(SandboxError::Spawn)?;
    let mut pid = child.id() as i32;
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    stdout.read_line(&mut line).map_err(SandboxError::Spawn)?;
    let stdin = child.stdin.take();
    if let (Some(ns), Some(mut stdin), "userns") = (user_namespace, stdin, line.trim()) {
        // Only a process outside the new user namespace may give it a range.
        let mapped =
            super::userns::write_id_maps(pid, ns).and_then(|_| stdin.write_all(b"mapped\n"));
        if let Err(e) = mapped {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            super::container::reap_in_background(child);
            return Err(SandboxError::Failed(format!(
                "writing the user namespace's ID maps: {e}"
            )));
        }
        line.clear();
        stdout.read_line(&mut line).map_err(SandboxError::Spawn)?;
    }
    // The sandbox lives on its own; a reaper thread collects it when it ends
    // so it never lingers as a zombie of the agent.
    super::container::reap_in_background(child);
    let line = line.trim();
    // `ready <pid>`: the process holding the namespaces is the sandbox's child.
    if let Some(p) = line.strip_prefix("ready ").and_then(|p| p.parse().ok()) {
        pid = p;
    } else if line != "ready" {
        let msg = line.strip_prefix("failed ").unwrap_or(line).to_string();
        return Err(SandboxError::Failed(if msg.is_empty() {
            "exited before it was ready".into()
        } else {
            msg
        }));
    }
    Ok(SandboxState {
        id: id.to_string(),
        pid,
        start_ticks: process_start_ticks(pid).unwrap_or(0),
        host_network,
        share_pid,
        user_namespace: user_namespace.cloned(),
    })
}

/// Stops a sandbox process (SIGKILL: it holds nothing that needs a goodbye).
pub fn stop(state: &SandboxState) {
    if state.is_alive() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), Signal::SIGKILL);
    }
}

/// Writes the pod-wide files its containers bind-mount (`hosts`,
/// `hostname`, `resolv.conf`: their names and contents).
pub fn write_pod_etc(dir: &Path, files: &[(&str, String)]) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir).map_err(|source| SandboxError::PodFile {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| SandboxError::PodFile { path, source })?;
    }
    Ok(())
}

/// Writes each sysctl under `/proc/sys` in the calling process's namespaces.
fn apply_sysctls(sysctls: &[(String, String)]) -> std::io::Result<()> {
    for (name, value) in sysctls {
        // Dots separate parts; a slash is a dot inside one (eth0/100 is eth0.100).
        let rel: String = name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect();
        let path = std::path::Path::new("/proc/sys").join(rel);
        std::fs::write(&path, value)
            .map_err(|e| std::io::Error::new(e.kind(), format!("sysctl {name}={value:?}: {e}")))?;
    }
    Ok(())
}
