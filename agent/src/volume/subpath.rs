//! A volume's `subPath`, prepared the kubelet's way: looked up beneath the
//! volume (a symlink that leads out of it is refused: CVE-2017-1002101, where
//! an init container made the subPath a link to `/`), held open, and
//! bind-mounted through `/proc/self/fd/N` onto
//! `<pod dir>/volume-subpaths/<volume>/<container>/<index>`. The container's
//! mount then uses that mount point, which nothing in a pod can swap.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::runtime::in_root::{self, InRootError, Kind, Root, Scope};

#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    /// The kubelet's wording for a subPath that leaves its volume.
    #[error("subpath {sub_path:?} not within volume path {volume:?}")]
    Escapes { sub_path: String, volume: String },
    #[error("subPath {sub_path:?} of volume {volume_name:?}: {source}")]
    Path {
        sub_path: String,
        volume_name: String,
        #[source]
        source: InRootError,
    },
    #[error("preparing subPath {sub_path:?} at {target}: {source}")]
    Mount {
        sub_path: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the prepared subPath of `volumeMounts[index]` is mounted.
pub fn target_path(pod_dir: &Path, volume: &str, container: &str, index: usize) -> PathBuf {
    pod_dir
        .join("volume-subpaths")
        .join(volume)
        .join(container)
        .join(index.to_string())
}

/// Resolves `sub_path` beneath `volume_dir` (creating it as a directory if
/// missing, as the kubelet does) and bind-mounts it at `target`.
pub fn prepare(
    volume_dir: &Path,
    volume_name: &str,
    sub_path: &str,
    target: &Path,
) -> Result<(), SubPathError> {
    let path_err = |source: InRootError| match source {
        InRootError::Escapes { .. } => SubPathError::Escapes {
            sub_path: sub_path.to_string(),
            volume: volume_dir.display().to_string(),
        },
        source => SubPathError::Path {
            sub_path: sub_path.to_string(),
            volume_name: volume_name.to_string(),
            source,
        },
    };
    let mount_err = |source: std::io::Error| SubPathError::Mount {
        sub_path: sub_path.to_string(),
        target: target.to_path_buf(),
        source,
    };
    let volume = Root::open(volume_dir, Scope::Beneath).map_err(path_err)?;
    let rel = Path::new(sub_path);
    let source = match volume.resolve(rel) {
        Ok(fd) => fd,
        Err(InRootError::Sys {
            source: nix::errno::Errno::ENOENT,
            ..
        }) => {
            let mode = std::fs::metadata(volume_dir)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o755);
            volume.mkdir_all(rel, mode).map_err(path_err)?
        }
        Err(e) => return Err(path_err(e)),
    };
    let kind = in_root::kind_of(source.as_fd()).map_err(|e| mount_err(std::io::Error::from(e)))?;

    // A restarted container gets the subPath looked up afresh.
    super::plugins::unmount_below(target);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(mount_err)?;
    }
    match kind {
        Kind::Dir => match std::fs::create_dir(target) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(mount_err(e)),
            _ => {}
        },
        Kind::File => {
            if !target.exists() {
                std::fs::write(target, b"").map_err(mount_err)?;
            }
        }
    }
    mount(
        Some(&in_root::fd_path(source.as_fd())),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mount_err(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_subpath_linked_out_of_its_volume_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        symlink("/", vol.join("escape")).unwrap();
        symlink("../../..", vol.join("up")).unwrap();
        for sub in ["escape", "up", "up/created"] {
            let target = target_path(dir.path(), "vol", "c", 0);
            let err = prepare(&vol, "vol", sub, &target).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("subpath {sub:?} not within volume path")),
                "{err}"
            );
        }
        assert!(!dir.path().join("created").exists());
    }
}
