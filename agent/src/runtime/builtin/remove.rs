//! What the built-in runtime removes: one run (processes, rootfs, cgroup,
//! bundle), and a pod's dir once nothing in it is alive or mounted.

use std::path::Path;
use std::time::Duration;

use super::leftovers;
use crate::cgroups::CgroupPath;
use crate::context::AgentContext;
use crate::runtime::image;

/// Removes what one run left: processes in its cgroup, its rootfs mount, its
/// cgroup and its bundle dir. Idempotent.
pub(crate) fn remove_run(ctx: &AgentContext, bundle: &Path, cgroup: &CgroupPath) {
    let _ = ctx.cgroups.kill_all(cgroup);
    if let Err(e) = image::remove_rootfs(bundle) {
        tracing::warn!(
            "removing rootfs of {}: {}",
            bundle.display(),
            crate::error_chain(&e)
        );
    }
    if let Err(e) = ctx.cgroups.remove(cgroup) {
        tracing::warn!("removing cgroup {cgroup}: {e}");
    }
    let _ = std::fs::remove_dir_all(bundle);
}

/// Removes a pod dir: shims of runs under it are killed, any rootfs and
/// volume still mounted under it is unmounted first (so that nothing beneath a
/// mount point is deleted through it). A dir that still describes a live
/// process or a mount after that is kept, so a later agent finds it again;
/// returns whether the dir is gone.
pub(crate) fn remove_pod_dir_if_unused(dir: &Path) -> bool {
    let shims = leftovers::shims_under(dir);
    for (pid, _) in &shims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for _ in 0..100 {
        if leftovers::shims_under(dir).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("containers")) {
        for e in entries.flatten() {
            let _ = image::remove_rootfs(&e.path());
        }
    }
    // Memory-backed emptyDirs and anything else still mounted under the pod.
    crate::volume::plugins::unmount_below(dir);
    let in_use = leftovers::still_in_use(dir);
    if !in_use.is_empty() {
        tracing::warn!(dir = %dir.display(), ?in_use, "keeping a pod dir that still describes live processes or mounts");
        return false;
    }
    let _ = std::fs::remove_dir_all(dir);
    true
}
