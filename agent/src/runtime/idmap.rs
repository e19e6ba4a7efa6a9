//! Mount attributes through the new mount API (`open_tree`, `mount_setattr`,
//! `move_mount`): idmapped mounts, which let a pod's user namespace see the
//! node's files (owned by 0 on disk) as its own root's, and recursive
//! read-only. Not every filesystem allows an idmapped mount (overlayfs, NFS,
//! procfs do not); such a mount is refused by name, as the kubelet's runtimes
//! report it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const SYS_OPEN_TREE: libc::c_long = 428;
const SYS_MOVE_MOUNT: libc::c_long = 429;
const SYS_MOUNT_SETATTR: libc::c_long = 442;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error(
        "the {fs} filesystem does not support idmapped mounts, which hostUsers: false needs for every mount"
    )]
    Unsupported { fs: String },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: Errno,
    },
}

fn mount_setattr(fd: BorrowedFd, recursive: bool, attr: &MountAttr) -> Result<(), Errno> {
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: a valid fd, an empty C string with AT_EMPTY_PATH, and a
    // mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            SYS_MOUNT_SETATTR,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// Makes the mount at `target` read-only, and with `recursive` every mount
/// below it too (a plain remount leaves submounts writable).
pub fn set_read_only(target: BorrowedFd, recursive: bool) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(target, recursive, &attr)
}

/// A detached copy of the mount tree at `source` (with its submounts if
/// `recursive`), idmapped with the user namespace `userns`, ready for
/// [`move_onto`]. Needs root in the node's user namespace.
pub fn idmapped_tree(
    source: BorrowedFd,
    userns: BorrowedFd,
    recursive: bool,
) -> Result<OwnedFd, IdmapError> {
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a valid fd and an empty C string with AT_EMPTY_PATH; the
    // result is a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(SYS_OPEN_TREE, source.as_raw_fd(), c"".as_ptr(), flags) };
    let tree = Errno::result(fd).map_err(|source| IdmapError::Sys {
        op: "open_tree",
        source,
    })?;
    // SAFETY: open_tree returned a descriptor nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    match mount_setattr(tree.as_fd(), recursive, &attr) {
        Ok(()) => Ok(tree),
        // The filesystem lacks FS_ALLOW_IDMAP (or, recursively, one below).
        Err(Errno::EINVAL) => Err(IdmapError::Unsupported {
            fs: filesystem_name(source),
        }),
        Err(source) => Err(IdmapError::Sys {
            op: "mount_setattr MOUNT_ATTR_IDMAP",
            source,
        }),
    }
}

/// Attaches a detached tree from [`idmapped_tree`] on `target`.
pub fn move_onto(tree: BorrowedFd, target: BorrowedFd) -> Result<(), Errno> {
    // SAFETY: two valid descriptors and empty C strings with the EMPTY_PATH flags.
    let rc = unsafe {
        libc::syscall(
            SYS_MOVE_MOUNT,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

/// The filesystem a descriptor is on, by its usual name where known.
fn filesystem_name(fd: BorrowedFd) -> String {
    use nix::sys::statfs::*;
    let Ok(fs) = fstatfs(fd) else {
        return "source's".into();
    };
    let t = fs.filesystem_type();
    let known = [
        (OVERLAYFS_SUPER_MAGIC, "overlay"),
        (NFS_SUPER_MAGIC, "nfs"),
        (PROC_SUPER_MAGIC, "proc"),
        (SYSFS_MAGIC, "sysfs"),
        (TMPFS_MAGIC, "tmpfs"),
        (EXT4_SUPER_MAGIC, "ext4"),
        (XFS_SUPER_MAGIC, "xfs"),
        (BTRFS_SUPER_MAGIC, "btrfs"),
        (FUSE_SUPER_MAGIC, "fuse"),
        (CGROUP_SUPER_MAGIC, "cgroup"),
        (CGROUP2_SUPER_MAGIC, "cgroup2"),
    ];
    known
        .iter()
        .find(|(magic, _)| *magic == t)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("{:#x}", t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only as root (CI runs the tests so): an idmapped copy of a directory
    /// shows its files, owned by 0 on disk, as owned by the mapped host ID,
    /// and overlayfs is refused by name.
    #[test]
    fn idmapped_trees_map_owners_and_name_refusing_filesystems() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("f"), "x").unwrap();
        // A user namespace held by a child, mapped as a pod's would be.
        let mut child = std::process::Command::new("unshare")
            .args(["--user", "sleep", "60"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ns = crate::runtime::userns::UserNamespace::from_host_id(131072);
        let mapped = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            crate::runtime::userns::write_id_maps(pid, &ns).is_ok()
        });
        assert!(mapped);
        let userns = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
        let open = |p: &std::path::Path| std::fs::File::open(p).unwrap();
        let tree = idmapped_tree(open(&src).as_fd(), userns.as_fd(), false).unwrap();
        move_onto(tree.as_fd(), open(&dst).as_fd()).unwrap();
        let uid = std::fs::metadata(dst.join("f")).map(|m| m.uid());
        let _ = nix::mount::umount2(&dst, nix::mount::MntFlags::MNT_DETACH);
        assert_eq!(uid.unwrap(), 131072);

        let (lower, upper, work, ovl) = (
            dir.path().join("l"),
            dir.path().join("u"),
            dir.path().join("w"),
            dir.path().join("o"),
        );
        for d in [&lower, &upper, &work, &ovl] {
            std::fs::create_dir_all(d).unwrap();
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &ovl,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .unwrap();
        let refused = idmapped_tree(open(&ovl).as_fd(), userns.as_fd(), false).map(drop);
        let _ = nix::mount::umount2(&ovl, nix::mount::MntFlags::MNT_DETACH);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            refused.unwrap_err().to_string(),
            "the overlay filesystem does not support idmapped mounts, which hostUsers: false needs for every mount"
        );
    }
}
