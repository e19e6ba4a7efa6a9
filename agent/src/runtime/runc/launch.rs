//! The shim's side of a runc container: `runc create` with the container's
//! stdio, then `runc start`, as containerd's runc shim and CRI-O's conmon do.
//! The shim is a child subreaper, so the container's process, orphaned when
//! `runc create` exits, becomes the shim's child: the shim reaps it and
//! records its exit exactly as for a container of its own making.

use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Stdio;

use nix::unistd::{Pid, pipe2};
use oci_spec::runtime::Spec;

use super::command::{CreateIo, Runc};
use crate::runtime::shim::Launched;

/// Creates and starts the bundle's container with runc. `Err` carries why
/// its process never ran (runc's message).
pub fn launch(runc: &Runc, bundle: &Path, spec: &Spec, stdin: bool) -> Result<Launched, String> {
    let id = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("bundle {} has no name", bundle.display()))?;
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "becoming a child subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    hide_unmanaged_cgroup_hierarchies()?;
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let pipe = || pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let stdin_pipe = if stdin && !tty { Some(pipe()?) } else { None };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // An abstract socket (runc, in Go, reads a leading `@` so): a bundle
    // path is too long for a socket's name, and nothing is left on disk.
    let console_name = format!("kubelab-runc-console-{id}");
    let console_listener = if tty {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&console_name)
            .map_err(|e| format!("console socket @{console_name}: {e}"))?;
        Some(
            UnixListener::bind_addr(&addr)
                .map_err(|e| format!("console socket @{console_name}: {e}"))?,
        )
    } else {
        None
    };
    let (stdin_r, stdin_w): (Option<OwnedFd>, Option<OwnedFd>) = match stdin_pipe {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    let io = CreateIo {
        stdin: stdin_r.map_or_else(Stdio::null, Stdio::from),
        stdout: Stdio::from(out_w),
        stderr: Stdio::from(err_w),
        console_socket: console_listener
            .as_ref()
            .map(|_| format!("@{console_name}").into()),
    };
    // `io` is moved into the command: only the container holds the write
    // ends once runc has exited.
    let pid = Pid::from_raw(runc.create(&id, bundle, io).map_err(|e| e.to_string())?);
    // runc sent the terminal while creating; it waits in the socket's queue.
    let console = match console_listener {
        Some(listener) => Some(
            listener
                .accept()
                .map(|(stream, _)| stream)
                .map_err(|e| format!("receiving the terminal from runc: {e}"))?,
        ),
        None => None,
    };
    if let Err(e) = runc.start(&id, bundle) {
        let _ = runc.delete(&id, bundle, true);
        return Err(e.to_string());
    }
    Ok(Launched {
        pid,
        stdin: stdin_w,
        console,
        stdout: out_r,
        stderr: err_r,
        started_at: jiff::Timestamp::now(),
    })
}

/// runc makes a container's cgroup in every hierarchy it finds mounted; in
/// a mount namespace of the shim's own, the hierarchies the agent does not
/// manage are gone, so runc's cgroups are the agent's, nothing more.
fn hide_unmanaged_cgroup_hierarchies() -> Result<(), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let unmanaged = crate::cgroups::unmanaged_v1_hierarchies(&mountinfo);
    if unmanaged.is_empty() {
        return Ok(());
    }
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    // Slave, not private: unmounts on the node (a removed rootfs) still
    // reach this namespace, and nothing done here leaks out.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("making / a slave mount: {e}"))?;
    for dir in unmanaged {
        umount2(&dir, MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmounting {} for runc: {e}", dir.display()))?;
    }
    Ok(())
}
