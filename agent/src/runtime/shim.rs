//! The per-container supervisor (`kubelab-agent shim`), like containerd's shims
//! and CRI-O's conmon.
//!
//! The agent starts one per container run and lets it go: the shim is the
//! container's parent, so it stays to reap it and record its exit, and it owns
//! the container's stdout/stderr and writes the CRI log file, all of which has
//! to go on while the agent restarts. It is a fresh single-threaded process
//! (the agent re-executes its own binary), so forking the container here is safe.
//!
//! Files in the bundle dir, written by the shim, read by the agent:
//! - `state.json`: the container's pid and start time, once it is running;
//! - `exit.json`: how it ended (code, signal, OOM kill, times).

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, read};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::logs::{CriLogWriter, LogStream};

/// Exit code and reason Kubernetes reports when the process never started.
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// What the shim records once the container runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStarted {
    pub pid: i32,
    pub shim_pid: i32,
    pub started_at: jiff::Timestamp,
}

/// What the shim records once the container has ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerExit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// Set when the process could not be started (`StartError`).
    pub start_error: Option<String>,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: jiff::Timestamp,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// The bundle dir holding config.json.
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long)]
    pub log_path: PathBuf,
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub log_max_size: u64,
    #[arg(long, default_value_t = 5)]
    pub log_max_files: usize,
    /// Every cgroup directory the container joins (one per v1 controller).
    #[arg(long = "cgroup-dir")]
    pub cgroup_dirs: Vec<PathBuf>,
    /// The container reads stdin (`stdin: true`): a pipe the attach socket
    /// writes to, or the terminal with `process.terminal`.
    #[arg(long)]
    pub stdin: bool,
    /// `stdinOnce`: the container's stdin closes when the first attached
    /// client's stdin does.
    #[arg(long)]
    pub stdin_once: bool,
    /// Start the container with this OCI runtime binary (`runc`) instead
    /// of the agent's own init, as containerd's runc shim does.
    #[arg(long, value_name = "BINARY")]
    pub runtime: Option<PathBuf>,
    /// The OCI runtime's state dir (`runc --root`).
    #[arg(long, value_name = "DIR", requires = "runtime")]
    pub runtime_root: Option<PathBuf>,
}

pub fn state_path(bundle: &Path) -> PathBuf {
    bundle.join("state.json")
}

pub fn exit_path(bundle: &Path) -> PathBuf {
    bundle.join("exit.json")
}

/// Writes JSON atomically (temp file + rename) so a reader never sees half.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

pub fn read_exit(bundle: &Path) -> Option<ContainerExit> {
    serde_json::from_slice(&fs::read(exit_path(bundle)).ok()?).ok()
}

pub fn read_started(bundle: &Path) -> Option<ContainerStarted> {
    serde_json::from_slice(&fs::read(state_path(bundle)).ok()?).ok()
}

/// The number of OOM kills the kernel has counted in these cgroups.
pub fn oom_kills(cgroup_dirs: &[PathBuf]) -> u64 {
    for dir in cgroup_dirs {
        // v1: memory.oom_control has "oom_kill N"; v2: memory.events has "oom_kill N".
        for file in ["memory.oom_control", "memory.events"] {
            if let Ok(text) = fs::read_to_string(dir.join(file)) {
                if let Some(n) = text.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                }) {
                    return n;
                }
            }
        }
    }
    0
}

/// The shim's main. Its stdout is a pipe to the agent: one line,
/// `started <pid>` or `failed <message>`, then it is closed.
pub fn run(args: ShimArgs) -> anyhow::Result<()> {
    // The agent may die and its pipes with it: none of that may kill the shim.
    // SAFETY: plain signal dispositions, set before any other thread exists.
    unsafe {
        signal(Signal::SIGPIPE, SigHandler::SigIgn)?;
        signal(Signal::SIGHUP, SigHandler::SigIgn)?;
    }
    let _ = nix::unistd::setsid();
    let spec = Spec::load(args.bundle.join("config.json"))?;
    let pid_ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|nss| {
            nss.iter()
                .find(|ns| ns.typ() == LinuxNamespaceType::Pid)
                .cloned()
        });
    let new_pid_ns = pid_ns.as_ref().is_some_and(|ns| ns.path().is_none());
    // The pod's shared PID namespace (`shareProcessNamespace`), held by the sandbox.
    let shared_pid_ns = pid_ns.and_then(|ns| ns.path().clone());

    let runc = args.runtime.as_ref().map(|binary| super::runc::Runc {
        binary: binary.clone(),
        root: args.runtime_root.clone().unwrap_or_default(),
    });
    let launched = match &runc {
        Some(runc) => super::runc::launch::launch(runc, &args.bundle, &spec, args.stdin),
        None => launch_with_init(&args, &spec, new_pid_ns, shared_pid_ns.as_deref())?,
    };
    let mut report = std::io::stdout();
    let Launched {
        pid: child,
        stdin: stdin_w,
        console,
        stdout: out_r,
        stderr: err_r,
        started_at,
    } = match launched {
        Ok(launched) => launched,
        Err(setup_error) => {
            let exit = ContainerExit {
                exit_code: START_ERROR_EXIT_CODE,
                signal: None,
                oom_killed: false,
                start_error: Some(setup_error.clone()),
                started_at: None,
                finished_at: jiff::Timestamp::now(),
            };
            write_json_atomic(&exit_path(&args.bundle), &exit)?;
            let _ = writeln!(report, "failed {}", setup_error.replace('\n', " "));
            return Ok(());
        }
    };

    let started = ContainerStarted {
        pid: child.as_raw(),
        shim_pid: std::process::id() as i32,
        started_at,
    };
    write_json_atomic(&state_path(&args.bundle), &started)?;
    let _ = writeln!(report, "started {}", child.as_raw());
    let _ = report.flush();
    detach_stdio(&args.bundle);

    // With a terminal, it carries stdin and all output; the pipes closed
    // when the container replaced them.
    let terminal = match console {
        Some(socket) => {
            socket.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            Some(super::exec::receive_console(&socket)?)
        }
        None => None,
    };
    let mut attach = super::attach_server::AttachServer::start(
        &args.bundle,
        stdin_w,
        terminal.as_ref(),
        args.stdin,
        args.stdin_once,
    );
    let sources = match terminal {
        Some(master) => vec![(master, LogStream::Stdout)],
        None => vec![(out_r, LogStream::Stdout), (err_r, LogStream::Stderr)],
    };
    let mut log = CriLogWriter::create(&args.log_path, args.log_max_size, args.log_max_files)?;
    // In a shared PID namespace the container's processes outlive its main
    // process (they are the sandbox's now) and may hold its stdout: when the
    // main process exits, the rest of its cgroup goes too, as runc does for
    // containers without a PID namespace of their own.
    let main_exit = shared_pid_ns
        .as_ref()
        .and_then(|_| pidfd_open(child.as_raw()));
    pump_logs(
        &mut log,
        sources,
        main_exit,
        &args.cgroup_dirs,
        attach.as_mut(),
    );
    // Attached clients see the end of the output.
    if let Some(a) = &mut attach {
        a.finish();
    }
    let status = wait_for(child);
    let finished_at = jiff::Timestamp::now();
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    let exit = ContainerExit {
        exit_code,
        signal,
        oom_killed: oom_kills(&args.cgroup_dirs) > 0,
        start_error: None,
        started_at: Some(started_at),
        finished_at,
    };
    write_json_atomic(&exit_path(&args.bundle), &exit)?;
    if let Some(runc) = &runc {
        // runc's record of the container goes with it; the bundle stays
        // for the agent, as with the built-in runtime.
        let id = args
            .bundle
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        if let Err(e) = runc.delete(&id, &args.bundle, false) {
            eprintln!("runc delete {id}: {e}");
        }
    }
    Ok(())
}

/// A container process the shim has started (it is the shim's child), with
/// the shim's ends of its stdio.
pub struct Launched {
    pub pid: Pid,
    /// The write end of the container's stdin pipe (`stdin: true`, no terminal).
    pub stdin: Option<OwnedFd>,
    /// Where the terminal's master end arrives (`tty: true`).
    pub console: Option<std::os::unix::net::UnixStream>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub started_at: jiff::Timestamp,
}

/// The built-in way: fork, and let the child make the spec real
/// ([`super::init::exec_container`]) and exec. `Err` carries why the
/// process never ran.
fn launch_with_init(
    args: &ShimArgs,
    spec: &Spec,
    new_pid_ns: bool,
    shared_pid_ns: Option<&Path>,
) -> anyhow::Result<Result<Launched, String>> {
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let stdin_pipe = if args.stdin && !tty {
        Some(pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
    } else {
        None
    };
    // The container makes its terminal in its own devpts and sends the
    // master end back over this socket pair.
    let console = if tty {
        Some(std::os::unix::net::UnixStream::pair()?)
    } else {
        None
    };
    let (out_r, out_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Closed by a successful exec (CLOEXEC), or carries the setup error.
    let (status_r, status_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    if new_pid_ns {
        // Our next child becomes PID 1 of a new PID namespace.
        unshare(CloneFlags::CLONE_NEWPID)?;
    }
    if let Some(path) = shared_pid_ns {
        // Our next child joins the pod's PID namespace (its PID 1 is the sandbox).
        let ns = fs::File::open(path)?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWPID)?;
    }

    // SAFETY: the shim is single-threaded; the child only sets up and execs.
    let child = match unsafe { fork()? } {
        ForkResult::Child => {
            drop((out_r, err_r, status_r));
            let (stdin, console) = (
                stdin_pipe.map(|(r, _w)| r),
                console.map(|(_ours, theirs)| OwnedFd::from(theirs)),
            );
            let stdio = super::init::Stdio {
                stdin,
                stdout: out_w,
                stderr: err_w,
                console,
            };
            let err = match super::init::exec_container(spec, &args.cgroup_dirs, stdio) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let _ = nix::unistd::write(&status_w, err.to_string().as_bytes());
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((out_w, err_w, status_w));
    let started_at = jiff::Timestamp::now();
    let setup_error = read_to_string(&status_r);
    if !setup_error.is_empty() {
        let _ = waitpid(child, None);
        return Ok(Err(setup_error));
    }
    Ok(Ok(Launched {
        pid: child,
        stdin: stdin_pipe.map(|(_r, w)| w),
        console: console.map(|(ours, _theirs)| ours),
        stdout: out_r,
        stderr: err_r,
        started_at,
    }))
}

/// From here on the agent's pipe is closed; the shim's own messages go to a
/// file in the bundle.
fn detach_stdio(bundle: &Path) {
    if let Ok(f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.join("shim.log"))
    {
        // SAFETY: f is open; 1 and 2 are replaced atomically by dup2.
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}

fn read_to_string(fd: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pidfd of a child, readable once it has exited.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// SIGKILLs every process left in the container's cgroups.
fn kill_cgroup(cgroup_dirs: &[PathBuf]) {
    for dir in cgroup_dirs {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Copies the container's output (stdout and stderr, or its terminal) into
/// the log, and to the attached clients, until every source closes (when PID 1 of the
/// container's namespace exits, every process in it dies). With
/// `main_exit` (a shared PID namespace), the container's leftover processes
/// are killed once its main process has exited.
fn pump_logs(
    log: &mut CriLogWriter,
    sources: Vec<(OwnedFd, LogStream)>,
    mut main_exit: Option<OwnedFd>,
    cgroup_dirs: &[PathBuf],
    mut attach: Option<&mut super::attach_server::AttachServer>,
) {
    let mut open: Vec<(Option<OwnedFd>, LogStream)> =
        sources.into_iter().map(|(fd, s)| (Some(fd), s)).collect();
    let mut buf = vec![0u8; 64 * 1024];
    while open.iter().any(|(fd, _)| fd.is_some()) {
        if let Some(pidfd) = &main_exit {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
                kill_cgroup(cgroup_dirs);
                main_exit = None;
            }
        }
        let ready: Vec<usize> = {
            let watched: Vec<usize> = (0..open.len()).filter(|&i| open[i].0.is_some()).collect();
            let mut pollfds: Vec<PollFd> = watched
                .iter()
                .map(|&i| PollFd::new(open[i].0.as_ref().expect("open").as_fd(), PollFlags::POLLIN))
                .collect();
            let mut tokens = Vec::new();
            if let Some(a) = &attach {
                for (fd, flags, token) in a.interest() {
                    pollfds.push(PollFd::new(fd, flags));
                    tokens.push(token);
                }
            }
            if let Some(pidfd) = &main_exit {
                pollfds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut pollfds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(_) => break,
            }
            let attach_ready: Vec<_> = tokens
                .iter()
                .zip(pollfds[watched.len()..].iter())
                .filter_map(|(t, p)| p.revents().filter(|r| !r.is_empty()).map(|r| (*t, r)))
                .collect();
            let main_exited = main_exit.is_some()
                && pollfds
                    .last()
                    .and_then(|p| p.revents())
                    .is_some_and(|r| !r.is_empty());
            let ready: Vec<usize> = watched
                .iter()
                .zip(pollfds.iter())
                .filter(|(_, p)| !p.revents().unwrap_or(PollFlags::empty()).is_empty())
                .map(|(&i, _)| i)
                .collect();
            drop(pollfds);
            if let Some(a) = attach.as_deref_mut() {
                for (token, revents) in attach_ready {
                    a.ready(token, revents);
                }
                a.sweep();
                if a.terminal_hung_up() {
                    // The terminal is the one source: its last master end goes.
                    for (fd, _) in open.iter_mut() {
                        *fd = None;
                    }
                    continue;
                }
            }
            if main_exited {
                // The pipes may still have data: read on the next round.
                kill_cgroup(cgroup_dirs);
                main_exit = None;
                continue;
            }
            ready
        };
        for idx in ready {
            let stream = open[idx].1;
            let fd = open[idx].0.as_ref().expect("polled fds are open");
            match read(fd, &mut buf) {
                Ok(0) => open[idx].0 = None,
                Ok(n) => {
                    let _ = log.write(stream, &buf[..n]);
                    if let Some(a) = attach.as_deref_mut() {
                        a.broadcast(stream, &buf[..n]);
                    }
                }
                Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => {}
                // EIO: a terminal whose last slave end has closed.
                Err(_) => open[idx].0 = None,
            }
        }
    }
}

fn wait_for(child: Pid) -> WaitStatus {
    loop {
        match waitpid(child, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return status,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return WaitStatus::Exited(child, 255),
        }
    }
}
