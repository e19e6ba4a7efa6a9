//! The container's own cgroup at `/sys/fs/cgroup`, as container runtimes
//! give it (the OCI `cgroup` mount type), so a process can read its limits
//! from inside: `cat /sys/fs/cgroup/memory.max`.
//!
//! On cgroup v2 the container has a cgroup namespace of its own, rooted at
//! its cgroup, and the view is simply cgroup2 mounted there. On v1 (and the
//! hybrid layout) there is no such root per hierarchy, so the view is a
//! tmpfs holding one bind mount per hierarchy of the container's own
//! directory, named as on the node (`memory`, `cpu,cpuacct`, with `cpu` and
//! `cpuacct` links), as runc builds it.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use super::in_root::{self, Kind, Root};

/// Where the node's cgroup hierarchies are mounted.
const NODE_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The node runs the unified (v2-only) hierarchy.
pub fn node_is_unified() -> bool {
    Path::new(NODE_CGROUP_ROOT)
        .join("cgroup.controllers")
        .exists()
}

/// The v1 hierarchy a container cgroup directory belongs to: the first
/// component under `/sys/fs/cgroup` (`memory`, `cpu,cpuacct`, `pids`).
pub fn hierarchy_of(dir: &Path) -> Option<&str> {
    let rest = dir.strip_prefix(NODE_CGROUP_ROOT).ok()?;
    let first = rest.components().next()?;
    first.as_os_str().to_str().filter(|n| !n.is_empty())
}

/// Links runc makes for a hierarchy of joined controllers, so both names of
/// `cpu,cpuacct` lead to it: (link name, target).
pub fn joined_controller_links(hierarchy: &str) -> Vec<(&str, &str)> {
    if !hierarchy.contains(',') {
        return Vec::new();
    }
    hierarchy
        .split(',')
        .filter(|c| !c.starts_with("name="))
        .map(|c| (c, hierarchy))
        .collect()
}

/// Mounts the view at `dest` inside `root`. `cgroup_dirs` are the node
/// directories the container's process has joined.
pub fn mount_view(
    root: &Root,
    dest: &Path,
    flags: MsFlags,
    readonly: bool,
    cgroup_dirs: &[PathBuf],
) -> Result<(), String> {
    let target = root
        .mount_target(dest, Kind::Dir)
        .map_err(|e| format!("cgroup view at {}: {e}", dest.display()))?;
    let ro = if readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if node_is_unified() {
        // In the container's cgroup namespace, cgroup2's root is its own cgroup.
        return mount(
            Some("cgroup"),
            &in_root::fd_path(target.as_fd()),
            Some("cgroup2"),
            flags | ro,
            None::<&str>,
        )
        .map_err(|e| format!("mount cgroup2 at {}: {e}", dest.display()));
    }
    mount(
        Some("tmpfs"),
        &in_root::fd_path(target.as_fd()),
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .map_err(|e| format!("mount tmpfs at {}: {e}", dest.display()))?;
    let view = root
        .mount_target(dest, Kind::Dir)
        .map_err(|e| format!("cgroup view at {}: {e}", dest.display()))?;
    let view_path = in_root::fd_path(view.as_fd());
    for dir in cgroup_dirs {
        let Some(hierarchy) = hierarchy_of(dir) else {
            continue;
        };
        let at = view_path.join(hierarchy);
        std::fs::create_dir(&at).map_err(|e| format!("mkdir {hierarchy} in cgroup view: {e}"))?;
        mount(
            Some(dir.as_path()),
            &at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {} at {hierarchy}: {e}", dir.display()))?;
        if readonly {
            mount(
                None::<&str>,
                &at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                None::<&str>,
            )
            .map_err(|e| format!("remount {hierarchy} read-only: {e}"))?;
        }
        for (link, to) in joined_controller_links(hierarchy) {
            std::os::unix::fs::symlink(to, view_path.join(link))
                .map_err(|e| format!("link {link} in cgroup view: {e}"))?;
        }
    }
    if readonly {
        mount(
            None::<&str>,
            &view_path,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            Some("mode=755"),
        )
        .map_err(|e| format!("remount cgroup view read-only: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_dir_names_its_hierarchy() {
        assert_eq!(
            hierarchy_of(Path::new("/sys/fs/cgroup/memory/kubelab/pod1/web")),
            Some("memory")
        );
        assert_eq!(
            hierarchy_of(Path::new("/sys/fs/cgroup/cpu,cpuacct/kubelab/pod1/web")),
            Some("cpu,cpuacct")
        );
        assert_eq!(hierarchy_of(Path::new("/elsewhere/memory/x")), None);
        assert_eq!(hierarchy_of(Path::new("/sys/fs/cgroup")), None);
    }

    #[test]
    fn joined_controllers_get_a_link_for_each_name() {
        assert_eq!(
            joined_controller_links("cpu,cpuacct"),
            vec![("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")]
        );
        assert!(joined_controller_links("memory").is_empty());
    }
}
