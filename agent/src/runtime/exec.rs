//! `kubelab-agent exec --pid P --bundle B [--tty] -- CMD...`: runs a command
//! inside a running container, as exec probes and `kubectl exec` need: the
//! container's cgroup, namespaces, root, user, capabilities and environment.
//! A fresh single-threaded process, so it may fork (entering a PID namespace
//! only takes effect for children). It exits with the command's exit code
//! (128 + signal when killed); when the command cannot be started it says why
//! on stderr and exits 127 (not found) or 126, as shells and runc do.

use std::ffi::CString;
use std::fs;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use oci_spec::runtime::Spec;

#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The container's init pid (as the node sees it).
    #[arg(long)]
    pub pid: i32,
    /// The container's bundle dir (its config.json gives user, caps, env, cwd).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Run the command on a terminal, as runc's `--console-socket`: stdin is
    /// a unix socket; a pty is made in the container's own devpts, its
    /// master end is sent back over that socket (SCM_RIGHTS), and the
    /// command gets the slave end as stdio and controlling tty.
    #[arg(long)]
    pub tty: bool,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Joins the container's cgroups: the same dirs its init process is in.
fn join_cgroups(pid: i32) -> anyhow::Result<()> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let dir = if ctrls.is_empty() {
            if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                continue; // the hybrid layout's empty v2 tree
            }
            PathBuf::from("/sys/fs/cgroup")
        } else if ctrls
            .split(',')
            .any(|c| matches!(c, "cpu" | "cpuacct" | "memory" | "pids" | "devices"))
        {
            PathBuf::from("/sys/fs/cgroup").join(ctrls)
        } else {
            continue;
        };
        let procs = dir.join(path.trim_start_matches('/')).join("cgroup.procs");
        fs::write(&procs, "0").map_err(|e| anyhow::anyhow!("join {}: {e}", procs.display()))?;
    }
    Ok(())
}

/// Exit code for a command that could not be started.
pub const CANNOT_EXECUTE: i32 = 126;
/// Exit code for a command that was not found.
pub const NOT_FOUND: i32 = 127;

pub fn run(args: ExecArgs) -> anyhow::Result<()> {
    if let Err(e) = enter_and_exec(args) {
        eprintln!("kubelab-agent exec: {e:#}");
        std::process::exit(CANNOT_EXECUTE);
    }
    Ok(())
}

fn enter_and_exec(args: ExecArgs) -> anyhow::Result<()> {
    let spec = Spec::load(args.bundle.join("config.json"))?;
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| anyhow::anyhow!("config.json has no process"))?;
    // Open every namespace before entering any: /proc changes meaning after.
    let mut namespaces = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{}/ns/{name}", args.pid);
        namespaces.push((fs::File::open(&path)?, flag, path));
    }
    join_cgroups(args.pid)?;
    for (file, flag, path) in &namespaces {
        setns(file, *flag).map_err(|e| anyhow::anyhow!("setns {path}: {e}"))?;
    }
    // In the container's mount namespace now: its /dev/ptmx, its devpts.
    let console = if args.tty {
        Some(open_console_and_send_master(0)?)
    } else {
        None
    };
    // SAFETY: single-threaded process; the child only sets up and execs.
    match unsafe { fork()? } {
        ForkResult::Child => {
            let err = (|| -> anyhow::Result<std::convert::Infallible> {
                if let Some(slave) = &console {
                    for fd in 0..3 {
                        // SAFETY: dup2 onto stdio in the single-threaded child.
                        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(slave), fd) } < 0 {
                            anyhow::bail!("dup2 the terminal: {}", std::io::Error::last_os_error());
                        }
                    }
                    become_terminal_session()?;
                }
                let env = process.env().clone().unwrap_or_default();
                let path_var = env
                    .iter()
                    .find_map(|kv| kv.strip_prefix("PATH="))
                    .unwrap_or(super::spec::DEFAULT_PATH)
                    .to_string();
                let exe = super::init::find_executable(&args.command[0], &path_var)?;
                let _ = nix::unistd::chdir(process.cwd());
                super::init::drop_privileges(&process)?;
                if process.no_new_privileges().unwrap_or(false) {
                    nix::sys::prctl::set_no_new_privs()?;
                }
                let c = |s: &str| CString::new(s).map_err(anyhow::Error::from);
                let argv = args
                    .command
                    .iter()
                    .map(|a| c(a))
                    .collect::<Result<Vec<_>, _>>()?;
                let envp = env.iter().map(|e| c(e)).collect::<Result<Vec<_>, _>>()?;
                Ok(nix::unistd::execve(
                    &c(&exe.to_string_lossy())?,
                    &argv,
                    &envp,
                )?)
            })()
            .unwrap_err();
            eprintln!("{err:#}");
            let code = match err.downcast_ref::<super::init::InitError>() {
                Some(super::init::InitError::NotFound(_)) => NOT_FOUND,
                _ => CANNOT_EXECUTE,
            };
            // SAFETY: leave the forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => loop {
            // (`console` stays open here until exit: harmless, the command's
            // end of the terminal is what matters.)
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        },
    }
}

/// Makes a pty in the current mount namespace's devpts and sends its master
/// end over the unix socket `socket`; returns the slave end.
pub(crate) fn open_console_and_send_master(
    socket: std::os::fd::RawFd,
) -> anyhow::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| anyhow::anyhow!("opening /dev/ptmx in the container: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| anyhow::anyhow!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| anyhow::anyhow!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| anyhow::anyhow!("ptsname: {e}"))?;
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| anyhow::anyhow!("opening {name}: {e}"))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        socket,
        &[std::io::IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| anyhow::anyhow!("sending the terminal to the agent: {e}"))?;
    Ok(slave.into())
}

/// Receives the pty master `kubelab-agent exec --tty` sends over `socket`.
pub fn receive_console(
    socket: &std::os::unix::net::UnixStream,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "no terminal received",
    ))
}

/// A new session whose controlling terminal is stdin (the pty's slave end),
/// so the shell gets job control and `^C` reaches it.
fn become_terminal_session() -> anyhow::Result<()> {
    nix::unistd::setsid().map_err(|e| anyhow::anyhow!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int argument; fd 0 is open.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        anyhow::bail!(
            "making stdin the controlling terminal: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
