//! Paths from a pod spec or an image, resolved inside their root and never
//! through a link out of it.
//!
//! Every lookup is an `openat2(2)` relative to a descriptor of the root:
//! `RESOLVE_IN_ROOT` for a container's rootfs (an absolute symlink in an
//! image means "from the container's `/`"), `RESOLVE_BENEATH` for a volume's
//! `subPath` (a link that leaves the volume is an error, as the kubelet has
//! it), and `RESOLVE_NO_MAGICLINKS` always, so `/proc/self/root` style links
//! lead nowhere. What is found is kept as an `O_PATH` descriptor and mounted
//! through `/proc/self/fd/N`, as runc does, so swapping a path component for
//! a symlink after the check redirects nothing.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("{path}: leads out of {root}")]
    Escapes { path: String, root: String },
    #[error("{path}: too many levels of symbolic links (more than 40) under {root}")]
    TooManyLinks { path: String, root: String },
    #[error("{path}: is a symlink; a mount target must not be one")]
    Symlink { path: String },
    #[error("{path}: not a directory")]
    NotDirectory { path: String },
    #[error("{path}: a dangling symlink, or it was removed while being created")]
    Vanished { path: String },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: String,
        #[source]
        source: Errno,
    },
}

/// How a path may be resolved against its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The root acts as `/` (a container's rootfs): links stay inside.
    InRoot,
    /// The path must stay beneath the root (a volume's subPath): a link
    /// that leaves it is refused.
    Beneath,
}

impl Scope {
    fn resolve(self) -> ResolveFlag {
        let scope = match self {
            Scope::InRoot => ResolveFlag::RESOLVE_IN_ROOT,
            Scope::Beneath => ResolveFlag::RESOLVE_BENEATH,
        };
        scope | ResolveFlag::RESOLVE_NO_MAGICLINKS
    }
}

/// What a mount target must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// A directory that paths are resolved under, held open.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    scope: Scope,
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// `/proc/self/fd/N`: the path through which the kernel reaches exactly the
/// inode `fd` refers to.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `path` (on the node) as an `O_PATH` descriptor, following links:
/// for paths the node owns, such as a hostPath or the agent's own files.
pub fn open_node_path(path: &Path) -> Result<OwnedFd, InRootError> {
    nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
        InRootError::Sys {
            op: "open",
            path: display(path),
            source,
        }
    })
}

impl Root {
    /// Opens `path` as a root of the given scope. The root itself is the
    /// caller's (the agent made it), so links in it are followed.
    pub fn open(path: &Path, scope: Scope) -> Result<Root, InRootError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| InRootError::Sys {
            op: "open",
            path: display(path),
            source,
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
            scope,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn error(&self, op: &'static str, path: &Path, e: Errno) -> InRootError {
        let (path, root) = (display(path), display(&self.path));
        match e {
            Errno::EXDEV => InRootError::Escapes { path, root },
            Errno::ELOOP => InRootError::TooManyLinks { path, root },
            source => InRootError::Sys { op, path, source },
        }
    }

    /// Opens `path` inside the root with `flags` (`O_CLOEXEC` added).
    pub fn open_at(&self, path: &Path, flags: OFlag) -> Result<OwnedFd, InRootError> {
        let rel = relative(path);
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(self.scope.resolve());
        openat2(&self.fd, rel.as_path(), how).map_err(|e| self.error("open", path, e))
    }

    /// `O_PATH` descriptor of `path` inside the root, following links inside it.
    pub fn resolve(&self, path: &Path) -> Result<OwnedFd, InRootError> {
        self.open_at(path, OFlag::O_PATH)
    }

    /// Creates every missing directory of `path` inside the root and returns
    /// the last one, held open. Nothing is ever created outside the root.
    pub fn mkdir_all(&self, path: &Path, mode: u32) -> Result<OwnedFd, InRootError> {
        let parts = components(path)?;
        let mut current = self.open_at(Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let mut prefix = PathBuf::new();
        for part in parts {
            prefix.push(&part);
            let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
            current = match self.open_at(&prefix, dir_flags) {
                Ok(fd) => fd,
                Err(InRootError::Sys {
                    source: Errno::ENOENT,
                    ..
                }) => {
                    match mkdirat(&current, part.as_path(), Mode::from_bits_truncate(mode)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.error("mkdir", &prefix, e)),
                    }
                    match self.open_at(&prefix, dir_flags) {
                        Err(InRootError::Sys {
                            source: Errno::ENOENT,
                            ..
                        }) => {
                            return Err(InRootError::Vanished {
                                path: display(&prefix),
                            });
                        }
                        other => other?,
                    }
                }
                Err(InRootError::Sys {
                    source: Errno::ENOTDIR,
                    ..
                }) => {
                    return Err(InRootError::NotDirectory {
                        path: display(&prefix),
                    });
                }
                Err(e) => return Err(e),
            };
        }
        Ok(current)
    }

    /// The target of a mount at `path` inside the root, created as `kind` if
    /// missing (its parents too), held open. The last component must not be
    /// a symlink: a link there could point a mount anywhere, so it is refused
    /// rather than followed.
    pub fn mount_target(&self, path: &Path, kind: Kind) -> Result<OwnedFd, InRootError> {
        let parts = components(path)?;
        let Some((last, parents)) = parts.split_last() else {
            return self.open_at(Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY);
        };
        let parent_path: PathBuf = parents.iter().collect();
        let parent = self.mkdir_all(&parent_path, 0o755)?;
        let open_last = || {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            openat2(&parent, last.as_path(), how)
        };
        let fd = match open_last() {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                let made = match kind {
                    Kind::Dir => mkdirat(&parent, last.as_path(), Mode::from_bits_truncate(0o755)),
                    Kind::File => nix::fcntl::openat(
                        &parent,
                        last.as_path(),
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map(drop),
                };
                match made {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(self.error("create", path, e)),
                }
                open_last().map_err(|e| self.error("open", path, e))?
            }
            Err(e) => return Err(self.error("open", path, e)),
        };
        let stat = fstat(&fd).map_err(|e| self.error("stat", path, e))?;
        let typ = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        if typ == SFlag::S_IFLNK {
            return Err(InRootError::Symlink {
                path: display(path),
            });
        }
        if kind == Kind::Dir && typ != SFlag::S_IFDIR {
            return Err(InRootError::NotDirectory {
                path: display(path),
            });
        }
        Ok(fd)
    }
}

/// The path relative to its root: leading `/` dropped (`RESOLVE_IN_ROOT` and
/// `RESOLVE_BENEATH` treat it from the root either way, but `.` reads better
/// in errors than an empty path).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Normal components of `path`; `..` is refused (the kernel would keep it
/// inside the root, but a mount path with `..` is a mistake or an attack).
fn components(path: &Path) -> Result<Vec<PathBuf>, InRootError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(PathBuf::from(n)),
            Component::ParentDir => {
                return Err(InRootError::Escapes {
                    path: display(path),
                    root: "its root (\"..\")".into(),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The file type of what `fd` refers to.
pub fn kind_of(fd: BorrowedFd<'_>) -> Result<Kind, Errno> {
    let stat = fstat(fd)?;
    Ok(
        if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
            Kind::Dir
        } else {
            Kind::File
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_resolve_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real")).unwrap();
        symlink(outside.path(), r.join("abs")).unwrap();
        symlink("../../../../real", r.join("up")).unwrap();
        let root = Root::open(r, Scope::InRoot).unwrap();

        // An absolute link is taken from the container's `/`: nothing is made
        // in the node directory it names.
        root.mkdir_all(Path::new("/abs/made"), 0o755).unwrap_err();
        root.mount_target(Path::new("/up/x"), Kind::Dir).unwrap();
        assert!(r.join("real/x").is_dir());
        assert!(
            std::fs::read_dir(outside.path()).unwrap().next().is_none(),
            "nothing created outside the root"
        );
    }

    #[test]
    fn a_symlink_target_is_refused_and_a_deep_chain_is_an_error() {
        let root_dir = tempfile::tempdir().unwrap();
        let r = root_dir.path();
        symlink("/etc/passwd", r.join("hosts")).unwrap();
        let root = Root::open(r, Scope::InRoot).unwrap();
        assert!(matches!(
            root.mount_target(Path::new("/hosts"), Kind::File),
            Err(InRootError::Symlink { .. })
        ));
        // l0 -> l1 -> ... -> l41 -> /dir
        for i in 0..41 {
            symlink(format!("/l{}", i + 1), r.join(format!("l{i}"))).unwrap();
        }
        symlink("/dir", r.join("l41")).unwrap();
        let err = root
            .mount_target(Path::new("/l0/x"), Kind::Dir)
            .unwrap_err();
        assert!(matches!(err, InRootError::TooManyLinks { .. }), "{err}");
        assert!(!r.join("dir").exists());
    }

    #[test]
    fn beneath_refuses_a_link_out_of_the_volume() {
        let vol = tempfile::tempdir().unwrap();
        symlink("/", vol.path().join("escape")).unwrap();
        symlink("..", vol.path().join("up")).unwrap();
        std::fs::create_dir(vol.path().join("ok")).unwrap();
        let root = Root::open(vol.path(), Scope::Beneath).unwrap();
        for p in ["escape", "escape/etc", "up/x"] {
            let err = root.resolve(Path::new(p)).unwrap_err();
            assert!(matches!(err, InRootError::Escapes { .. }), "{p}: {err}");
        }
        root.resolve(Path::new("ok")).unwrap();
    }
}
