//! A container's writable root filesystem, made from an image's shared layers.
//!
//! ```text
//! <container_dir>/rootfs          the mount point (or, without overlayfs, a full copy)
//! <container_dir>/overlay/upper   the container's writes
//! <container_dir>/overlay/work    overlayfs' scratch space (same filesystem as upper)
//! ```
//!
//! With overlayfs the layers stay shared and read-only, and starting a
//! container costs one mount(2). Where overlayfs is missing or refuses (a
//! root dir on overlayfs itself, say), the layers are merged by copying,
//! applying the same whiteouts `unpack` stored in overlayfs' format.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::ImageError;
use super::store::Image;
use super::unpack::{is_opaque_dir, is_whiteout, lgetxattr, llistxattr, lsetxattr};

const ROOTFS: &str = "rootfs";
const OVERLAY: &str = "overlay";
/// mount(2) copies its data argument into one page.
const MOUNT_DATA_MAX: usize = 4095;
const MAX_UNMOUNTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {path:?}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rootfs {path:?} already exists; remove it first (remove_rootfs)")]
    Exists { path: PathBuf },
    #[error("mounting overlayfs on {target:?} ({layers} layers)")]
    Mount {
        target: PathBuf,
        layers: usize,
        #[source]
        source: Errno,
    },
    #[error("overlayfs cannot be used for {target:?}: {reason}")]
    OverlayUnusable { target: PathBuf, reason: String },
    #[error("unmounting {path:?}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path:?} is still mounted after {MAX_UNMOUNTS} unmounts; not deleting through it")]
    StillMounted { path: PathBuf },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How a rootfs is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// overlayfs when the kernel and filesystem allow it, else a copy.
    #[default]
    Auto,
    /// overlayfs or an error.
    Overlay,
    /// Always a full copy of the merged layers.
    Copy,
}

/// A prepared container rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub path: PathBuf,
    /// True when `path` is an overlayfs mount, false when it is a copy.
    pub overlay: bool,
}

/// Prepares `<container_dir>/rootfs` for `image`: overlayfs where possible, else a copy.
pub fn prepare_rootfs(image: &Image, container_dir: &Path) -> Result<Rootfs, ImageError> {
    prepare_rootfs_with(image, container_dir, RootfsMode::Auto)
}

pub fn prepare_rootfs_with(
    image: &Image,
    container_dir: &Path,
    mode: RootfsMode,
) -> Result<Rootfs, ImageError> {
    let rootfs = container_dir.join(ROOTFS);
    fs::create_dir_all(container_dir).map_err(io_err("creating", container_dir))?;
    if fs::symlink_metadata(&rootfs).is_ok() {
        return Err(RootfsError::Exists { path: rootfs }.into());
    }
    let overlay_result = match mode {
        RootfsMode::Copy => None,
        RootfsMode::Auto | RootfsMode::Overlay => {
            Some(mount_overlay(&image.layer_dirs, container_dir))
        }
    };
    match (overlay_result, mode) {
        (Some(Ok(())), _) => {
            tracing::debug!(rootfs = ?rootfs, image = %image.reference, "overlay rootfs mounted");
            return Ok(Rootfs {
                path: rootfs,
                overlay: true,
            });
        }
        (Some(Err(e)), RootfsMode::Overlay) => {
            let _ = remove_rootfs(container_dir);
            return Err(e.into());
        }
        (Some(Err(e)), _) => {
            tracing::warn!(
                rootfs = ?rootfs,
                error = %error_chain(&e),
                "overlayfs unavailable, copying the image layers instead"
            );
            remove_rootfs(container_dir)?;
        }
        (None, _) => {}
    }
    let copied = copy_layers(&image.layer_dirs, &rootfs);
    if let Err(e) = copied {
        let _ = remove_rootfs(container_dir);
        return Err(e.into());
    }
    Ok(Rootfs {
        path: rootfs,
        overlay: false,
    })
}

/// Unmounts (if mounted) and deletes `<container_dir>/rootfs` and the overlay
/// upper/work dirs. Idempotent. Leaves the rest of `container_dir` alone.
pub fn remove_rootfs(container_dir: &Path) -> Result<(), ImageError> {
    let rootfs = container_dir.join(ROOTFS);
    unmount_all_under(&rootfs)?;
    for dir in [rootfs, container_dir.join(OVERLAY)] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RootfsError::Io {
                    op: "removing",
                    path: dir,
                    source: e,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// overlayfs options for `layers` (bottom first). overlayfs lists lowerdirs top first.
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, String> {
    let mut all: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
    all.push(upper);
    all.push(work);
    for p in &all {
        let s = p.to_string_lossy();
        // `,` separates options and `:` lowerdirs; the kernel's escaping of them
        // varies by version, so such paths are not used at all.
        if s.contains([',', ':', '\\']) || p.to_str().is_none() {
            return Err(format!(
                "path {p:?} contains `,`, `:` or `\\` or is not UTF-8"
            ));
        }
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if data.len() > MOUNT_DATA_MAX {
        return Err(format!(
            "{} layers make {} bytes of mount options; the kernel takes at most {MOUNT_DATA_MAX}",
            layers.len(),
            data.len()
        ));
    }
    Ok(data)
}

fn mount_overlay(layers: &[PathBuf], container_dir: &Path) -> Result<(), RootfsError> {
    let rootfs = container_dir.join(ROOTFS);
    let overlay = container_dir.join(OVERLAY);
    let upper = overlay.join("upper");
    let work = overlay.join("work");
    let mut lowers = layers.to_vec();
    if lowers.is_empty() {
        // overlayfs needs a lowerdir; an image without layers gets an empty one.
        let empty = overlay.join("empty");
        mkdir_all(&empty)?;
        lowers.push(empty);
    }
    let data =
        overlay_options(&lowers, &upper, &work).map_err(|reason| RootfsError::OverlayUnusable {
            target: rootfs.clone(),
            reason,
        })?;
    for dir in [&rootfs, &upper, &work] {
        mkdir_all(dir)?;
    }
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| RootfsError::Mount {
        target: rootfs.clone(),
        layers: layers.len(),
        source,
    })
}

fn mkdir_all(dir: &Path) -> Result<(), RootfsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_err("creating", dir))
}

/// Unmounts everything at or below `path`, deepest first, so that deleting
/// `path` afterwards cannot reach into a bind mount (a volume, /proc).
fn unmount_all_under(path: &Path) -> Result<(), RootfsError> {
    for _ in 0..MAX_UNMOUNTS {
        let mounts =
            mounts_under(path).map_err(io_err("reading", Path::new("/proc/self/mountinfo")))?;
        let Some(deepest) = mounts.into_iter().max_by_key(|m| m.components().count()) else {
            return Ok(());
        };
        match nix::mount::umount2(&deepest, MntFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EBUSY) => {
                nix::mount::umount2(&deepest, MntFlags::MNT_DETACH).map_err(|source| {
                    RootfsError::Unmount {
                        path: deepest.clone(),
                        source,
                    }
                })?
            }
            // Raced with someone else's unmount.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(source) => {
                return Err(RootfsError::Unmount {
                    path: deepest,
                    source,
                });
            }
        }
    }
    if mounts_under(path)
        .map_err(io_err("reading", Path::new("/proc/self/mountinfo")))?
        .is_empty()
    {
        Ok(())
    } else {
        Err(RootfsError::StillMounted {
            path: path.to_path_buf(),
        })
    }
}

/// Mount points at or below `path` in this mount namespace.
fn mounts_under(path: &Path) -> io::Result<Vec<PathBuf>> {
    let path = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo_mount_points(&mountinfo)
        .into_iter()
        .filter(|m| m.starts_with(&path))
        .collect())
}

/// The mount point column (5th) of each mountinfo line, octal escapes decoded.
pub(crate) fn parse_mountinfo_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Merges `layers` (bottom first) into a fresh directory `rootfs`, with
/// overlayfs' semantics: a whiteout deletes, an opaque directory replaces.
fn copy_layers(layers: &[PathBuf], rootfs: &Path) -> Result<(), RootfsError> {
    mkdir_all(rootfs)?;
    for layer in layers {
        let mut hardlinks = HashMap::new();
        merge_dir(layer, rootfs, &mut hardlinks)?;
    }
    Ok(())
}

/// Copies `src`'s children onto `dst`. `dst` and every directory above it are
/// real directories created by this merge, never symlinks, so nothing here
/// follows a link out of the rootfs.
fn merge_dir(
    src: &Path,
    dst: &Path,
    hardlinks: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), RootfsError> {
    for entry in fs::read_dir(src).map_err(io_err("reading", src))? {
        let entry = entry.map_err(io_err("reading", src))?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&s).map_err(io_err("reading", &s))?;
        if is_whiteout(&meta) {
            remove_path(&d)?;
            continue;
        }
        if meta.is_dir() {
            match fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() => {
                    if is_opaque_dir(&s).map_err(io_err("reading xattrs of", &s))? {
                        remove_path(&d)?;
                        mkdir_all(&d)?;
                    }
                }
                Ok(_) => {
                    remove_path(&d)?;
                    mkdir_all(&d)?;
                }
                Err(_) => mkdir_all(&d)?,
            }
            merge_dir(&s, &d, hardlinks)?;
            copy_metadata(&s, &d, &meta)?;
            continue;
        }
        remove_path(&d)?;
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = hardlinks.get(&key)
        {
            fs::hard_link(first, &d).map_err(io_err("hardlinking", &d))?;
            continue;
        }
        let ft = meta.file_type();
        if ft.is_file() {
            let mut input = fs::File::open(&s).map_err(io_err("reading", &s))?;
            let mut output = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&d)
                .map_err(io_err("creating", &d))?;
            io::copy(&mut input, &mut output).map_err(io_err("copying to", &d))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&s).map_err(io_err("reading", &s))?;
            std::os::unix::fs::symlink(target, &d).map_err(io_err("creating symlink", &d))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            nix::sys::stat::mknod(&d, kind, Mode::from_bits_truncate(0o600), meta.rdev())
                .map_err(|e| io_err("mknod", &d)(e.into()))?;
        } else {
            // Sockets are not content.
            continue;
        }
        copy_metadata(&s, &d, &meta)?;
        if meta.nlink() > 1 {
            hardlinks.insert(key, d);
        }
    }
    Ok(())
}

/// Owner, mode, xattrs and mtime of `src` onto `dst` (never following `dst`).
fn copy_metadata(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), RootfsError> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_err("chown", dst))?;
    let is_link = meta.file_type().is_symlink();
    if !is_link {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", dst))?;
    }
    for name in llistxattr(src).map_err(io_err("listing xattrs of", src))? {
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(value) = lgetxattr(src, &name).map_err(io_err("reading xattrs of", src))? {
            lsetxattr(dst, &name, &value).map_err(io_err("setting xattrs on", dst))?;
        }
    }
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    );
    Ok(())
}

fn remove_path(path: &Path) -> Result<(), RootfsError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    res.map_err(io_err("removing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdirs_are_listed_top_first() {
        let layers = vec![PathBuf::from("/s/l/bottom"), PathBuf::from("/s/l/top")];
        let data = overlay_options(&layers, Path::new("/c/u"), Path::new("/c/w")).unwrap();
        assert_eq!(
            data,
            "lowerdir=/s/l/top:/s/l/bottom,upperdir=/c/u,workdir=/c/w"
        );
    }

    #[test]
    fn unusable_overlay_paths_are_reported() {
        let err = overlay_options(&[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w"))
            .unwrap_err();
        assert!(err.contains("/a:b"), "{err}");
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/kubelet/images/layers/{i:064}")))
            .collect();
        assert!(
            overlay_options(&many, Path::new("/u"), Path::new("/w"))
                .unwrap_err()
                .contains("100 layers")
        );
    }

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let info = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(
            parse_mountinfo_mount_points(info),
            vec![PathBuf::from("/mnt/with space"), PathBuf::from("/proc")]
        );
    }
}
