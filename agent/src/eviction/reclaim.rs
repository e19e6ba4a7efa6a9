//! What the node can reclaim itself before it evicts pods (kubelet's
//! `buildSignalToNodeReclaimFuncs`): for disk signals, unused images.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::config::Signal;

/// Whether pressure on `signal` is relieved by deleting unused images. With
/// the images on their own filesystem, only `imagefs` pressure is; with one
/// filesystem for both, every disk signal is.
pub fn deletes_images(signal: Signal, separate_imagefs: bool) -> bool {
    match signal {
        Signal::ImageFsAvailable | Signal::ImageFsInodesFree => true,
        Signal::NodeFsAvailable | Signal::NodeFsInodesFree => !separate_imagefs,
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable | Signal::PidAvailable => {
            false
        }
    }
}

/// Whether the image store (`imagefs`) is on another filesystem than the
/// root dir (`nodefs`).
pub fn separate_filesystems(root_dir: &Path, images_dir: &Path) -> bool {
    match (std::fs::metadata(root_dir), std::fs::metadata(images_dir)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deleted_for_disk_signals_of_the_filesystem_holding_them() {
        for signal in [Signal::NodeFsAvailable, Signal::NodeFsInodesFree] {
            assert!(deletes_images(signal, false), "{signal:?}, one filesystem");
            assert!(
                !deletes_images(signal, true),
                "{signal:?}, separate imagefs"
            );
        }
        for signal in [Signal::ImageFsAvailable, Signal::ImageFsInodesFree] {
            assert!(deletes_images(signal, false));
            assert!(deletes_images(signal, true));
        }
        for signal in [
            Signal::MemoryAvailable,
            Signal::AllocatableMemoryAvailable,
            Signal::PidAvailable,
        ] {
            assert!(!deletes_images(signal, false));
        }
    }
}
