//! Finding and removing what the runtime left on the node for a pod: shim and
//! sandbox processes, rootfs and volume mounts, cgroups, network attachments.
//! What [`crate::pod::recovery`] decides over, found and carried out, and the
//! sweep of pods the agent can no longer read or whose dir is gone.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cgroups::CgroupPath;
use crate::context::AgentContext;
use crate::runtime::service::{Found, FoundRun, FoundSandbox, RecordedPod};
use crate::runtime::{image, shim};

/// How long a shim that is starting a container gets to write down how that
/// went (`state.json` or `exit.json`) before it counts as never started.
const SHIM_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shim processes (`kubelab-agent shim --bundle B`) whose bundle is under
/// `dir`: (pid, bundle).
pub fn shims_under(dir: &Path) -> Vec<(i32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        // Any binary's shim: the one that started it may have been replaced since.
        if args.len() < 4 || args[1] != b"shim" {
            continue;
        }
        let bundle = args
            .iter()
            .position(|a| *a == b"--bundle")
            .and_then(|i| args.get(i + 1))
            .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(b)));
        if let Some(bundle) = bundle.filter(|b| b.starts_with(dir)) {
            found.push((pid, bundle));
        }
    }
    found
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    image::rootfs::parse_mountinfo_mount_points(&mountinfo)
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// What of `dir` still lives: shims whose bundle is under it, and mounts.
/// A pod dir is removed only when this is empty.
pub fn still_in_use(dir: &Path) -> Vec<String> {
    shims_under(dir)
        .into_iter()
        .map(|(pid, bundle)| format!("shim {pid} of {}", bundle.display()))
        .chain(
            mounts_under(dir)
                .into_iter()
                .map(|m| format!("mount {}", m.display())),
        )
        .collect()
}

fn kill(pid: i32) {
    // ESRCH: it is gone already.
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Observes what the previous agent process left of a pod: the recorded
/// sandbox and runs, the intents, and every id with a bundle dir or a cgroup.
/// Shims still starting an intended container are given a moment to finish.
pub fn observe(ctx: &AgentContext, recorded: &RecordedPod) -> Found {
    let containers_dir = recorded.pod_dir.join("containers");
    let mut runs = Vec::new();
    for (slot, run) in &recorded.runs {
        let bundle = containers_dir.join(&run.container_id);
        runs.push(FoundRun {
            slot: slot.clone(),
            container_id: run.container_id.clone(),
            recorded: true,
            started: Some(run.started.clone()),
            exited: shim::read_exit(&bundle).is_some(),
        });
    }
    let intended = recorded.intended.clone();
    if !intended.is_empty() {
        let deadline = Instant::now() + SHIM_SETTLE_TIMEOUT;
        loop {
            let shims = shims_under(&containers_dir);
            let unsettled = intended.iter().any(|(_, id)| {
                let bundle = containers_dir.join(id);
                shims.iter().any(|(_, b)| *b == bundle)
                    && shim::read_started(&bundle).is_none()
                    && shim::read_exit(&bundle).is_none()
            });
            if !unsettled || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (slot, id) in intended {
            let bundle = containers_dir.join(&id);
            runs.push(FoundRun {
                slot,
                container_id: id,
                recorded: false,
                started: shim::read_started(&bundle),
                exited: shim::read_exit(&bundle).is_some(),
            });
        }
    }
    let mut on_node: BTreeSet<String> = std::fs::read_dir(&containers_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_node.extend(ctx.cgroups.children(&recorded.pod_cgroup));
    Found {
        sandbox: recorded.sandbox.as_ref().map(|s| FoundSandbox {
            id: s.id.clone(),
            alive: s.is_alive(),
        }),
        sandbox_intent: recorded.sandbox_intent.clone(),
        runs,
        on_node,
    }
}

/// Removes everything that carries sandbox or container id `id` of a pod:
/// its shim, the processes in its cgroup, its network attachment (CNI DEL),
/// its rootfs mount, cgroup and bundle dir. Idempotent.
pub fn remove_id(ctx: &AgentContext, pod_dir: &Path, pod_cgroup: &CgroupPath, id: &str) {
    let bundle = pod_dir.join("containers").join(id);
    // The shim first, so it starts nothing more; then what runs in the cgroup.
    for (pid, b) in shims_under(&pod_dir.join("containers")) {
        if b == bundle {
            kill(pid);
        }
    }
    let cgroup = ctx.cgroups.container_path(pod_cgroup, id);
    if let Err(e) = ctx.cgroups.kill_all(&cgroup) {
        tracing::warn!(container = id, "killing what is left in {cgroup}: {e}");
    }
    if let Err(e) = ctx.network.release_container(id) {
        tracing::warn!(
            container = id,
            "releasing its network: {}",
            crate::error_chain(&e)
        );
    }
    if let Err(e) = image::remove_rootfs(&bundle) {
        tracing::warn!(
            container = id,
            "removing its rootfs: {}",
            crate::error_chain(&e)
        );
    }
    if let Err(e) = ctx.cgroups.remove(&cgroup) {
        tracing::warn!(container = id, "removing cgroup {cgroup}: {e}");
    }
    let _ = std::fs::remove_dir_all(&bundle);
}

/// A pod dir the agent cannot read (no `pod.json` or `worker.json`): whatever
/// may carry its uid goes (shims under it, `pod<uid>` cgroups, network
/// attachments, mounts), then the dir, unless something there still lives.
pub fn sweep_unreadable_pod(ctx: &AgentContext, dir: &Path, uid: &str) {
    for (pid, _) in shims_under(dir) {
        kill(pid);
    }
    remove_pod_cgroups(ctx, |u| u == uid);
    if let Err(e) = ctx.network.teardown_pod(uid, None) {
        tracing::warn!(
            pod_uid = uid,
            "releasing its network: {}",
            crate::error_chain(&e)
        );
    }
    crate::runtime::builtin::remove::remove_pod_dir_if_unused(dir);
}

/// Pod cgroups and network attachments of pods that have no dir any more
/// (`has_pod` false): what an agent killed while removing a pod left.
pub fn sweep_pods_without_dir(ctx: &AgentContext, has_pod: impl Fn(&str) -> bool) {
    remove_pod_cgroups(ctx, |u| !has_pod(u));
    ctx.network.remove_unfinished_cache_files();
    ctx.network.release_orphans(&has_pod);
}

fn remove_pod_cgroups(ctx: &AgentContext, which: impl Fn(&str) -> bool) {
    let cgroups = match ctx.cgroups.list_pod_cgroups() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("listing pod cgroups: {e}");
            return;
        }
    };
    for (path, uid) in cgroups.into_iter().filter(|(_, u)| which(u)) {
        tracing::info!(pod_uid = %uid, "removing the cgroup {path} of a pod the agent no longer has");
        if let Err(e) = ctx.cgroups.kill_all(&path) {
            tracing::warn!("killing what is left in {path}: {e}");
        }
        if let Err(e) = ctx.cgroups.remove(&path) {
            tracing::warn!("removing {path}: {e}");
        }
    }
}
