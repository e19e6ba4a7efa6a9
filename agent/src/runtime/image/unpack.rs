//! Unpacks one layer tar (plain or gzip) into its own directory.
//!
//! Each layer is unpacked once, alone, into `layers/<diff_id>/` and later
//! stacked by overlayfs (or merged by copying, see `rootfs`). So whiteouts are
//! stored in overlayfs' own format, which both consumers understand:
//! - `.wh.<name>` becomes a character device 0:0 named `<name>`;
//! - `.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its directory.
//!
//! Layer tars are untrusted: every entry is resolved inside the target
//! directory, and anything that would land outside it is refused rather than
//! silently rewritten: `..` components, absolute paths, entries under a
//! symlink that points out of the layer, hardlinks to paths outside it.
//! Symlinks that stay inside the layer are followed the way the kernel would
//! (the layer directory being the root), so a layer may write through its own
//! `lib -> usr/lib`.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest as _, Sha256};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): not content, skipped.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs interprets these on lower layers; a layer must not smuggle them in.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Linux' own limit on symlinks followed in one lookup.
const MAX_SYMLINK_HOPS: u32 = 40;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the layer stream")]
    Read(#[source] io::Error),
    #[error("layer is zstd-compressed; only gzip and uncompressed layers are supported")]
    Zstd,
    #[error("layer entry {entry:?}: {reason}; refusing to write outside the layer directory")]
    UnsafePath { entry: String, reason: &'static str },
    #[error(
        "layer entry {entry:?} goes through symlink {link:?} -> {target:?}, which points \
         outside the layer directory; refusing to write through it"
    )]
    SymlinkEscape {
        entry: String,
        link: String,
        target: String,
    },
    #[error(
        "layer entry {entry:?} is a hardlink to {target:?}, which is outside the layer \
         directory; refusing to link it"
    )]
    HardlinkEscape { entry: String, target: String },
    #[error(
        "layer entry {entry:?} is a hardlink to {target:?}, which does not exist in this layer"
    )]
    HardlinkTargetMissing { entry: String, target: String },
    #[error("layer entry {entry:?}: {path:?} is not a directory")]
    NotADirectory { entry: String, path: PathBuf },
    #[error("layer entry {entry:?}: too many levels of symbolic links")]
    SymlinkLoop { entry: String },
    #[error("layer entry {entry:?}: {op} {path:?}")]
    Io {
        entry: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What one unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diff_id.
    pub diff_id: String,
    /// Bytes of the uncompressed stream.
    pub uncompressed_size: u64,
    pub entries: u64,
}

/// Unpacks a layer tar, gzip-compressed or not, into `target` (an existing,
/// empty directory) and returns the diff_id computed over the whole
/// uncompressed stream. Stops at the first unsafe entry; the caller owns
/// `target` and removes it on error.
pub fn unpack_layer<R: Read>(reader: R, target: &Path) -> Result<UnpackedLayer, UnpackError> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = fill_at_least(&mut reader, 4).map_err(UnpackError::Read)?;
    let plain: Box<dyn Read + '_> = if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(ZSTD_MAGIC) {
        return Err(UnpackError::Zstd);
    } else {
        Box::new(reader)
    };
    let mut hashing = HashingReader::new(plain);
    let entries = Unpacker::new(target).run(&mut hashing)?;
    // The tar end marker may be followed by padding that is part of the diff_id.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Read)?;
    let (diff_id, uncompressed_size) = hashing.finish();
    Ok(UnpackedLayer {
        diff_id,
        uncompressed_size,
        entries,
    })
}

/// Peeks at up to `n` bytes without consuming them.
fn fill_at_least<R: Read>(reader: &mut BufReader<R>, n: usize) -> io::Result<Vec<u8>> {
    let buf = reader.fill_buf()?;
    Ok(buf[..buf.len().min(n)].to_vec())
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// `("sha256:<hex>", bytes read)`.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.len,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Splits a tar entry's path into its normal components, refusing absolute
/// paths and `..`. `./` and empty components are dropped; an empty result is
/// the layer root itself.
pub fn entry_components(raw: &[u8]) -> Result<Vec<&OsStr>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains a `..` component"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// True for overlayfs' whiteout: a character device with device number 0:0.
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// True when `dir` carries overlayfs' opaque marker.
pub fn is_opaque_dir(dir: &Path) -> io::Result<bool> {
    Ok(lgetxattr(dir, OVERLAY_OPAQUE_XATTR)?.as_deref() == Some(b"y".as_slice()))
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Directories whose mtime is set once all their children exist.
    dir_times: Vec<(PathBuf, i64)>,
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path) -> Self {
        Unpacker {
            root,
            dir_times: Vec::new(),
        }
    }

    fn run<R: Read>(mut self, reader: R) -> Result<u64, UnpackError> {
        let mut archive = tar::Archive::new(reader);
        let mut count = 0;
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            self.entry(&mut entry)?;
            count += 1;
        }
        for (path, mtime) in self.dir_times.iter().rev() {
            // A directory replaced later in the same layer is simply gone.
            let _ = set_mtime(path, *mtime);
        }
        Ok(count)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let components = entry_components(&raw_path).map_err(|reason| UnpackError::UnsafePath {
            entry: name.clone(),
            reason,
        })?;
        let kind = entry.header().entry_type();
        let meta = EntryMeta::read(&name, entry)?;
        let Some((last, parents)) = components.split_last() else {
            // `./`: the layer root. Only its ownership and mode are taken.
            if kind.is_dir() {
                set_owner_mode(&name, self.root, &meta)?;
            }
            return Ok(());
        };
        let parent = self.resolve_dir(&name, parents, true)?;
        let last_bytes = last.as_bytes();

        if last_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&name, &parent, last_bytes);
        }
        let path = parent.join(last);
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&name, &path)?;
                        mkdir(&name, &path)?;
                    }
                    Err(_) => mkdir(&name, &path)?,
                }
                set_owner_mode(&name, &path, &meta)?;
                meta.set_xattrs(&name, &path)?;
                self.dir_times.push((path, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&name, &path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(&name, "creating", &path))?;
                io::copy(entry, &mut file).map_err(UnpackError::Read)?;
                // Order matters: chown clears setuid/setgid bits and file
                // capabilities, so mode and xattrs come after it.
                std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                    .map_err(io_err(&name, "chown", &path))?;
                file.set_permissions(fs::Permissions::from_mode(meta.mode))
                    .map_err(io_err(&name, "chmod", &path))?;
                meta.set_xattrs(&name, &path)?;
                nix::sys::stat::futimens(
                    &file,
                    &TimeSpec::UTIME_OMIT,
                    &TimeSpec::new(meta.mtime, 0),
                )
                .map_err(|e| io_err(&name, "setting mtime of", &path)(e.into()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                remove_existing(&name, &path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(io_err(
                    &name,
                    "creating symlink",
                    &path,
                ))?;
                std::os::unix::fs::lchown(&path, Some(meta.uid), Some(meta.gid))
                    .map_err(io_err(&name, "chown", &path))?;
                meta.set_xattrs(&name, &path)?;
                let _ = set_mtime(&path, meta.mtime);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let source = self.resolve_hardlink_target(&name, &target)?;
                remove_existing(&name, &path)?;
                fs::hard_link(&source, &path).map_err(io_err(&name, "hardlinking", &path))?;
            }
            // Device nodes shipped in a layer are made inert: an empty file
            // with no permissions takes the name (so it still hides what a
            // lower layer had there). A container gets its devices from the
            // runtime's /dev; a disk's node left in the rootfs would be one
            // mknod saved for whoever gets past the device cgroup.
            tar::EntryType::Char | tar::EntryType::Block => {
                tracing::debug!(entry = %name, "device node in an image layer made an empty file");
                remove_existing(&name, &path)?;
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(&name, "creating", &path))?;
                std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                    .map_err(io_err(&name, "chown", &path))?;
                let _ = set_mtime(&path, meta.mtime);
            }
            tar::EntryType::Fifo => {
                remove_existing(&name, &path)?;
                nix::sys::stat::mknod(&path, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| io_err(&name, "mknod", &path)(e.into()))?;
                set_owner_mode(&name, &path, &meta)?;
                let _ = set_mtime(&path, meta.mtime);
            }
            other => {
                tracing::debug!(entry = %name, kind = ?other, "skipping unsupported tar entry type")
            }
        }
        Ok(())
    }

    /// Turns `.wh.<name>` / `.wh..wh..opq` into overlayfs' whiteout format.
    fn whiteout(&mut self, entry: &str, parent: &Path, last: &[u8]) -> Result<(), UnpackError> {
        if last == OPAQUE_WHITEOUT.as_bytes() {
            return lsetxattr(parent, OVERLAY_OPAQUE_XATTR, b"y").map_err(io_err(
                entry,
                "marking opaque (trusted.overlay.opaque)",
                parent,
            ));
        }
        if last.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            return Ok(());
        }
        let hidden = &last[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(UnpackError::UnsafePath {
                entry: entry.to_string(),
                reason: "whiteout names no file",
            });
        }
        let path = parent.join(OsStr::from_bytes(hidden));
        remove_existing(entry, &path)?;
        nix::sys::stat::mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(|e| io_err(entry, "creating whiteout", &path)(e.into()))
    }

    /// Walks `components` from the layer root to a real directory, creating
    /// missing directories when `create`, and following symlinks only while
    /// they stay inside the layer.
    fn resolve_dir(
        &self,
        entry: &str,
        components: &[&OsStr],
        create: bool,
    ) -> Result<PathBuf, UnpackError> {
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = components.iter().map(|c| c.to_os_string()).collect();
        let mut hops = 0;
        // The symlink whose target is being walked, for the error message.
        let mut via_link: Option<(String, String)> = None;
        while let Some(c) = pending.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if resolved.pop().is_none() {
                        let (link, target) = via_link.clone().unwrap_or_default();
                        return Err(UnpackError::SymlinkEscape {
                            entry: entry.to_string(),
                            link,
                            target,
                        });
                    }
                    continue;
                }
                _ => {}
            }
            let mut path = self.root.to_path_buf();
            path.extend(&resolved);
            path.push(&c);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => resolved.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(UnpackError::SymlinkLoop {
                            entry: entry.to_string(),
                        });
                    }
                    let target =
                        fs::read_link(&path).map_err(io_err(entry, "reading symlink", &path))?;
                    let link_rel = path
                        .strip_prefix(self.root)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    let target_str = target.display().to_string();
                    if target.is_absolute() {
                        return Err(UnpackError::SymlinkEscape {
                            entry: entry.to_string(),
                            link: link_rel,
                            target: target_str,
                        });
                    }
                    via_link = Some((link_rel, target_str));
                    for t in target.as_os_str().as_bytes().split(|&b| b == b'/').rev() {
                        pending.push_front(OsStr::from_bytes(t).to_os_string());
                    }
                }
                Ok(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: entry.to_string(),
                        path,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    mkdir(entry, &path)?;
                    resolved.push(c);
                }
                Err(e) => return Err(io_err(entry, "looking up", &path)(e)),
            }
        }
        let mut path = self.root.to_path_buf();
        path.extend(&resolved);
        Ok(path)
    }

    /// A hardlink's target is a path inside this same layer; it must already exist.
    fn resolve_hardlink_target(&self, entry: &str, target: &[u8]) -> Result<PathBuf, UnpackError> {
        let target_str = String::from_utf8_lossy(target).into_owned();
        let escape = || UnpackError::HardlinkEscape {
            entry: entry.to_string(),
            target: target_str.clone(),
        };
        let components = entry_components(target).map_err(|_| escape())?;
        let Some((last, parents)) = components.split_last() else {
            return Err(escape());
        };
        let parent = self
            .resolve_dir(entry, parents, false)
            .map_err(|e| match e {
                UnpackError::SymlinkEscape { .. } => escape(),
                UnpackError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                    UnpackError::HardlinkTargetMissing {
                        entry: entry.to_string(),
                        target: target_str.clone(),
                    }
                }
                e => e,
            })?;
        let path = parent.join(last);
        match fs::symlink_metadata(&path) {
            Ok(m) if !m.is_dir() => Ok(path),
            Ok(_) => Err(UnpackError::NotADirectory {
                entry: entry.to_string(),
                path,
            })
            .map_err(|_| UnpackError::HardlinkEscape {
                entry: entry.to_string(),
                target: target_str.clone(),
            }),
            Err(_) => Err(UnpackError::HardlinkTargetMissing {
                entry: entry.to_string(),
                target: target_str.clone(),
            }),
        }
    }
}

/// Ownership, mode, mtime and xattrs of an entry: the header's, overridden by
/// PAX records (`uid`, `gid`, `mtime`, `SCHILY.xattr.*`) where present.
struct EntryMeta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryMeta {
    fn read<R: Read>(entry_name: &str, entry: &mut tar::Entry<'_, R>) -> Result<Self, UnpackError> {
        let h = entry.header();
        let mut meta = EntryMeta {
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: h.mtime().unwrap_or(0) as i64,
            xattrs: Vec::new(),
        };
        let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? else {
            return Ok(meta);
        };
        for ext in exts {
            let ext = ext.map_err(UnpackError::Read)?;
            let Ok(key) = ext.key() else { continue };
            let value = || std::str::from_utf8(ext.value_bytes()).ok();
            match key {
                "uid" => meta.uid = value().and_then(|v| v.parse().ok()).unwrap_or(meta.uid),
                "gid" => meta.gid = value().and_then(|v| v.parse().ok()).unwrap_or(meta.gid),
                "mtime" => {
                    let secs = value().and_then(|v| v.split('.').next()?.parse().ok());
                    meta.mtime = secs.unwrap_or(meta.mtime);
                }
                _ => {
                    let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) else {
                        continue;
                    };
                    if name.starts_with(OVERLAY_XATTR_PREFIX) {
                        tracing::warn!(entry = %entry_name, xattr = name, "ignoring overlayfs xattr in layer");
                        continue;
                    }
                    meta.xattrs
                        .push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(meta)
    }

    /// Applies `SCHILY.xattr.*` records (file capabilities, for one).
    fn set_xattrs(&self, entry: &str, path: &Path) -> Result<(), UnpackError> {
        for (name, value) in &self.xattrs {
            lsetxattr(path, name, value).map_err(io_err(entry, "setting xattr on", path))?;
        }
        Ok(())
    }
}

fn set_owner_mode(entry: &str, path: &Path, meta: &EntryMeta) -> Result<(), UnpackError> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
        .map_err(io_err(entry, "chown", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
        .map_err(io_err(entry, "chmod", path))
}

fn set_mtime(path: &Path, mtime: i64) -> nix::Result<()> {
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(mtime, 0),
        UtimensatFlags::NoFollowSymlink,
    )
}

fn io_err<'a>(
    entry: &'a str,
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        entry: entry.to_string(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir(entry: &str, path: &Path) -> Result<(), UnpackError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(io_err(entry, "creating directory", path))
}

/// Removes whatever is at `path` (never following a symlink), if anything.
fn remove_existing(entry: &str, path: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(_) => remove_any(entry, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(entry, "looking up", path)(e)),
    }
}

fn remove_any(entry: &str, path: &Path) -> Result<(), UnpackError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(entry, "looking up", path))?;
    let res = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    res.map_err(io_err(entry, "removing", path))
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

pub(crate) fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `Ok(None)` when the attribute is absent.
pub(crate) fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let absent = |err: io::Error| match err.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
        _ => Err(err),
    };
    // SAFETY: a null buffer with size 0 asks for the value's size.
    let size = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return absent(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: buffer pointer and length describe `buf`; strings are NUL-terminated.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return absent(io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

/// Lists `path`'s xattr names (no symlink following).
pub(crate) fn llistxattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path)?;
    // SAFETY: a null buffer with size 0 asks for the needed size.
    let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(err)
        };
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: buffer pointer and length describe `buf`.
    let rc = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data_or_link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(1_000_000);
            // Raw bytes: the builder refuses unsafe names, which is what these tests feed.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_link_name_literal(data_or_link.as_bytes()).unwrap();
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
                _ => {
                    h.set_size(data_or_link.len() as u64);
                    h.set_cksum();
                    b.append(&h, data_or_link.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    #[test]
    fn device_nodes_in_a_layer_are_inert() {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, major, minor) in [
            ("disk", tar::EntryType::Block, 8, 0),
            ("mem", tar::EntryType::Char, 1, 1),
            ("pipe", tar::EntryType::Fifo, 0, 0),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o666);
            h.set_uid(0);
            h.set_gid(6);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_size(0);
            b.append_data(&mut h, path, io::empty()).unwrap();
        }
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&data[..], dir.path()).unwrap();
        for name in ["disk", "mem"] {
            let meta = fs::symlink_metadata(dir.path().join(name)).unwrap();
            assert!(meta.file_type().is_file(), "{name}: {:?}", meta.file_type());
            assert_eq!((meta.len(), meta.mode() & 0o7777, meta.rdev()), (0, 0, 0));
        }
        let pipe = fs::symlink_metadata(dir.path().join("pipe")).unwrap();
        assert_eq!(pipe.mode() & libc::S_IFMT, libc::S_IFIFO);
    }

    #[test]
    fn entry_components_refuse_parent_and_absolute() {
        assert_eq!(entry_components(b"./a//b/./c").unwrap(), ["a", "b", "c"]);
        assert!(entry_components(b"./").unwrap().is_empty());
        assert_eq!(
            entry_components(b"../x"),
            Err("path contains a `..` component")
        );
        assert_eq!(
            entry_components(b"a/../../x"),
            Err("path contains a `..` component")
        );
        assert_eq!(entry_components(b"/etc/passwd"), Err("absolute path"));
    }

    fn unpack(
        entries: &[(&str, tar::EntryType, &str)],
    ) -> (tempfile::TempDir, Result<UnpackedLayer, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("layer");
        fs::create_dir(&target).unwrap();
        let res = unpack_layer(&layer(entries)[..], &target);
        (dir, res)
    }

    #[test]
    fn plain_layer_and_diff_id() {
        let data = layer(&[
            ("a/", D, ""),
            ("a/f", F, "hello"),
            ("a/l", S, "f"),
            ("a/h", H, "a/f"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let got = unpack_layer(&data[..], dir.path()).unwrap();
        assert_eq!(
            got.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
        assert_eq!(got.uncompressed_size, data.len() as u64);
        assert_eq!(fs::read_to_string(dir.path().join("a/f")).unwrap(), "hello");
        assert_eq!(
            fs::read_link(dir.path().join("a/l")).unwrap(),
            Path::new("f")
        );
        assert_eq!(
            fs::metadata(dir.path().join("a/h")).unwrap().ino(),
            fs::metadata(dir.path().join("a/f")).unwrap().ino()
        );
        assert_eq!(
            fs::symlink_metadata(dir.path().join("a/f"))
                .unwrap()
                .mtime(),
            1_000_000
        );
        assert_eq!(
            fs::symlink_metadata(dir.path().join("a")).unwrap().mtime(),
            1_000_000
        );
    }

    #[test]
    fn gzip_layer_diff_id_is_of_the_uncompressed_stream() {
        let data = layer(&[("f", F, "x")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &data).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let got = unpack_layer(&gz[..], dir.path()).unwrap();
        assert_eq!(
            got.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
    }

    #[test]
    fn refuses_parent_dir_entries() {
        let (dir, res) = unpack(&[("../escape", F, "x")]);
        let err = res.unwrap_err();
        assert!(
            matches!(&err, UnpackError::UnsafePath { entry, .. } if entry == "../escape"),
            "{err}"
        );
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn refuses_absolute_entries() {
        let (_dir, res) = unpack(&[("/abs", F, "x")]);
        assert!(
            matches!(res.unwrap_err(), UnpackError::UnsafePath { entry, .. } if entry == "/abs")
        );
    }

    #[test]
    fn refuses_writing_through_escaping_symlinks() {
        let (dir, res) = unpack(&[("evil", S, "../.."), ("evil/pwned", F, "x")]);
        let err = res.unwrap_err();
        assert!(
            matches!(&err, UnpackError::SymlinkEscape { entry, link, .. } if entry == "evil/pwned" && link == "evil"),
            "{err}"
        );
        assert!(!dir.path().join("pwned").exists());

        let (dir, res) = unpack(&[("evil", S, dir_str(&dir)), ("evil/pwned", F, "x")]);
        assert!(matches!(
            res.unwrap_err(),
            UnpackError::SymlinkEscape { .. }
        ));
        assert!(!dir.path().join("pwned").exists());
    }

    fn dir_str(d: &tempfile::TempDir) -> &'static str {
        Box::leak(d.path().display().to_string().into_boxed_str())
    }

    #[test]
    fn follows_symlinks_that_stay_inside() {
        let (dir, res) = unpack(&[
            ("usr/lib/", D, ""),
            ("lib", S, "usr/lib"),
            ("lib/x", F, "1"),
            ("a/b/", D, ""),
            ("a/b/up", S, "../../usr"),
            ("a/b/up/y", F, "2"),
        ]);
        res.unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("layer/usr/lib/x")).unwrap(),
            "1"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("layer/usr/y")).unwrap(),
            "2"
        );
    }

    #[test]
    fn refuses_hardlinks_outside() {
        for target in ["../secret", "/etc/passwd", "evil/passwd"] {
            let (_dir, res) = unpack(&[("evil", S, "/etc"), ("hl", H, target)]);
            let err = res.unwrap_err();
            assert!(
                matches!(&err, UnpackError::HardlinkEscape { entry, target: t } if entry == "hl" && t == target),
                "{target}: {err}"
            );
        }
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let (dir, res) = unpack(&[
            ("d/.wh..wh..opq", F, ""),
            ("e/.wh.gone", F, ""),
            ("e/.wh..wh.plnk", F, ""),
        ]);
        res.unwrap();
        let root = dir.path().join("layer");
        assert!(is_opaque_dir(&root.join("d")).unwrap());
        assert!(!root.join("d/.wh..wh..opq").exists());
        assert!(is_whiteout(
            &fs::symlink_metadata(root.join("e/gone")).unwrap()
        ));
        assert_eq!(fs::read_dir(root.join("e")).unwrap().count(), 1);
    }

    #[test]
    fn smuggled_overlay_xattrs_are_dropped() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.opaque", b"y".as_slice())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(D);
        h.set_path("d").unwrap();
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&data[..], dir.path()).unwrap();
        assert!(!is_opaque_dir(&dir.path().join("d")).unwrap());
    }

    #[test]
    fn ownership_setuid_and_file_capabilities_survive_in_the_right_order() {
        // cap_net_raw+ep, VFS_CAP_REVISION_2.
        let cap: &[u8] = &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", cap),
            ("uid", b"3000000".as_slice()),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(F);
        h.set_path("bin/ping").unwrap();
        h.set_mode(0o4755);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_size(4);
        h.set_cksum();
        b.append(&h, b"ping".as_slice()).unwrap();
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&data[..], dir.path()).unwrap();
        let path = dir.path().join("bin/ping");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (3_000_000, 1000));
        assert_eq!(meta.mode() & 0o7777, 0o4755);
        assert_eq!(
            lgetxattr(&path, "security.capability").unwrap().as_deref(),
            Some(cap)
        );
    }
}
