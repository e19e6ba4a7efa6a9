//! `fsGroup`: the kubelet's `SetVolumeOwnership`. Every file and dir of a
//! volume gets the pod's fsGroup as its group, group read/write (read for
//! volumes the kubelet mounts read-only: configMap, secret, downwardAPI,
//! projected), and dirs get group search and the setgid bit, so what a
//! container creates there later belongs to the group too.
//!
//! A container may have written the volume (an emptyDir) and may still be
//! changing it: the walk goes from dir fd to dir fd without following any
//! symlink, and changes each entry through the fd it opened, so a name
//! swapped for a link to a node path changes nothing on the node.
//!
//! `fsGroupChangePolicy` is not read: as on Kubernetes, it has no effect on
//! ephemeral volumes (emptyDir, configMap, secret, downwardAPI, projected),
//! the only kinds this node mounts.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat};
use nix::unistd::{Gid, fchownat};

/// kubelet's `rwMask` / `roMask` / `execMask`.
const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;

#[derive(Debug, thiserror::Error)]
#[error("setting the ownership of {path} to fsGroup {fs_group}: {op}: {source}")]
pub struct OwnershipError {
    pub path: String,
    pub fs_group: u32,
    pub op: &'static str,
    #[source]
    pub source: nix::Error,
}

/// The mode an entry gets: `mode` plus the group bits (and, for a dir,
/// setgid and group search). Pure: what kubelet's `changeFilePermission` does.
pub fn owned_mode(mode: u32, is_dir: bool, read_only: bool) -> u32 {
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if is_dir {
        mask |= libc::S_ISGID | EXEC_MASK;
    }
    (mode & 0o7777) | mask
}

/// The pod's `securityContext.fsGroup`.
pub fn fs_group(pod: &k8s_openapi::api::core::v1::Pod) -> Option<u32> {
    let group = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(group).ok()
}

/// Whether `dir` itself is not yet owned as [`set_volume_ownership`] leaves
/// it (kubelet's `requiresPermissionChange`): a volume set up before, also
/// by an agent that was killed since, is not walked again.
pub fn needs_ownership(dir: &Path, fs_group: u32, read_only: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            m.gid() != fs_group || owned_mode(m.mode(), true, read_only) != m.mode() & 0o7777
        }
        _ => true,
    }
}

/// Gives `dir` and everything below it to `fs_group` (see the module doc).
pub fn set_volume_ownership(
    dir: &Path,
    fs_group: u32,
    read_only: bool,
) -> Result<(), OwnershipError> {
    let fail = |path: &Path, op| {
        let path = path.display().to_string();
        move |source| OwnershipError {
            path,
            fs_group,
            op,
            source,
        }
    };
    let root = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail(dir, "open"))?;
    let walk = Walk {
        fs_group,
        read_only,
    };
    walk.entry(&root).map_err(fail(dir, "change"))?;
    walk.below(root, dir)
        .map_err(|(path, op, source)| OwnershipError {
            path,
            fs_group,
            op,
            source,
        })
}

struct Walk {
    fs_group: u32,
    read_only: bool,
}

type WalkError = (String, &'static str, nix::Error);

impl Walk {
    /// chown (group only) and chmod of the entry `fd` refers to itself.
    fn entry(&self, fd: &OwnedFd) -> nix::Result<FileStat> {
        fchownat(
            fd.as_fd(),
            "",
            None,
            Some(Gid::from_raw(self.fs_group)),
            AtFlags::AT_EMPTY_PATH,
        )?;
        let st = fstat(fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            return Ok(st);
        }
        let mode = owned_mode(st.st_mode, kind == libc::S_IFDIR, self.read_only);
        if mode != st.st_mode & 0o7777 {
            // An O_PATH fd cannot be fchmod'ed; its /proc/self/fd link
            // names exactly the inode that was opened.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
        }
        Ok(st)
    }

    fn below(&self, dir_fd: OwnedFd, path: &Path) -> Result<(), WalkError> {
        let fail = |p: &Path, op| {
            let p = p.display().to_string();
            move |e| (p, op, e)
        };
        let mut dir = Dir::from_fd(dir_fd).map_err(fail(path, "read dir"))?;
        let names: Vec<_> = dir
            .iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.to_bytes() != b"." && n.to_bytes() != b"..")
            .collect();
        for name in names {
            let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            let fd = match openat(
                dir.as_fd(),
                name.as_c_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Removed meanwhile by a container: nothing to own.
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(fail(&child, "open")(e)),
            };
            let st = self.entry(&fd).map_err(fail(&child, "change"))?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let sub = openat(
                    dir.as_fd(),
                    name.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail(&child, "open"))?;
                // Still the dir that was changed, not something put there since.
                let now = fstat(&sub).map_err(fail(&child, "stat"))?;
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) {
                    self.below(sub, &child)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_the_kubelet_sets_them() {
        assert_eq!(owned_mode(0o644, false, false), 0o664);
        assert_eq!(owned_mode(0o400, false, true), 0o440);
        assert_eq!(owned_mode(0o777, true, false), 0o2777);
        assert_eq!(owned_mode(0o755, true, true), 0o2755);
        assert_eq!(owned_mode(0o700, true, true), 0o2750);
    }

    /// What a container left in a volume: files, a subdir, and links to a
    /// node file and a node dir, which must keep their group and mode.
    #[test]
    fn a_volume_is_owned_and_its_links_lead_nowhere() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
        let tmp = tempfile::tempdir().unwrap();
        let (vol, node) = (tmp.path().join("vol"), tmp.path().join("node"));
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::create_dir_all(node.join("dir")).unwrap();
        std::fs::write(node.join("file"), "node").unwrap();
        std::fs::write(vol.join("sub/f"), "x").unwrap();
        let set =
            |p: &Path, mode| std::fs::set_permissions(p, PermissionsExt::from_mode(mode)).unwrap();
        set(&vol.join("sub/f"), 0o600);
        set(&vol.join("sub"), 0o700);
        set(&node.join("file"), 0o600);
        set(&node.join("dir"), 0o700);
        symlink(node.join("file"), vol.join("to-file")).unwrap();
        symlink(node.join("dir"), vol.join("sub/to-dir")).unwrap();

        assert!(needs_ownership(&vol, 4321, false));
        set_volume_ownership(&vol, 4321, false).unwrap();
        assert!(!needs_ownership(&vol, 4321, false));
        let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        for (path, mode) in [("sub", 0o2770), ("sub/f", 0o660)] {
            let m = meta(&vol.join(path));
            assert_eq!((m.gid(), m.mode() & 0o7777), (4321, mode), "{path}");
        }
        assert_eq!(meta(&vol.join("to-file")).gid(), 4321);
        for (path, mode) in [("file", 0o600), ("dir", 0o700)] {
            let m = meta(&node.join(path));
            assert_eq!((m.gid(), m.mode() & 0o7777), (0, mode), "node {path}");
        }
    }
}
