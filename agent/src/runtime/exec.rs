//! `kubelab-agent exec --pid P --bundle B -- CMD...`: runs a command inside a
//! running container, as exec probes (and later `kubectl exec`) need: the
//! container's cgroup, namespaces, root, user, capabilities and environment.
//! A fresh single-threaded process, so it may fork (entering a PID namespace
//! only takes effect for children).

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

pub fn run(args: ExecArgs) -> anyhow::Result<()> {
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
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{}/ns/{name}", args.pid);
        namespaces.push((fs::File::open(&path)?, flag, path));
    }
    join_cgroups(args.pid)?;
    for (file, flag, path) in &namespaces {
        setns(file, *flag).map_err(|e| anyhow::anyhow!("setns {path}: {e}"))?;
    }
    // SAFETY: single-threaded process; the child only sets up and execs.
    match unsafe { fork()? } {
        ForkResult::Child => {
            let err = (|| -> anyhow::Result<std::convert::Infallible> {
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
            // SAFETY: leave the forked child without running destructors.
            unsafe { libc::_exit(126) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        },
    }
}
