//! The image side of CRI (`ImageService`: `PullImage`, `ImageStatus`,
//! `ListImages`, `RemoveImage`, `ImageFsInfo`). The kubelet's image manager
//! and image garbage collector reach images only through it, so a node's
//! store and registry client ([`StoreImageService`]) and a service that only
//! pretends ([`super::fake::FakeImageService`], hollow nodes and unit tests)
//! are interchangeable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::ImageError;
use super::pull::{PullError, RegistryOptions, RegistryPuller};
use super::store::{ImageStore, ImageSummary, StoreError};

/// CRI's `Image` as `ImageStatus` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStatus {
    /// `sha256:<hex>` of the config: the image ID.
    pub id: String,
    /// The normalized reference it was found by.
    pub reference: String,
    /// Bytes of manifest, config and compressed layers.
    pub size: u64,
    /// CRI's `pinned`: kept whatever its pull policy says and never
    /// garbage collected by policy. Here: put in the store by `image import`
    /// (the operator's choice), not pulled from its registry.
    pub pinned: bool,
}

/// CRI's `AuthConfig`: the one registry credential a pull is made with;
/// the pod layer picks it from the pod's pull secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// CRI's `FilesystemUsage` of the image filesystem, with the capacity the
/// kubelet otherwise learns from cAdvisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFsInfo {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

pub trait ImageService: Send + Sync + 'static {
    /// `PullImage`, anonymously or with `auth`; the image now in the store.
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a AuthConfig>,
    ) -> BoxFuture<'a, Result<ImageSummary, PullError>>;

    /// `ImageStatus`: the image `image` (a reference or an image ID) names,
    /// `None` when it is not there; an error for a reference that does not
    /// parse or a store that cannot be read.
    fn image_status(&self, image: &str) -> Result<Option<ImageStatus>, ImageError>;

    /// `ListImages`.
    fn list_images(&self) -> Result<Vec<ImageSummary>, ImageError>;

    /// `RemoveImage` by image ID: every reference to it, and the content no
    /// other image shares.
    fn remove_image(&self, id: &str) -> Result<(), ImageError>;

    /// `ImageFsInfo`.
    fn image_fs_info(&self) -> Result<ImageFsInfo, ImageError>;

    /// Beyond CRI: what an image holds on disk, as (blob or layer key,
    /// bytes). Images share layers; the collector counts a shared one once,
    /// and only when every image holding it goes.
    fn image_content(&self, id: &str) -> Result<Vec<(String, u64)>, ImageError>;
}

/// The node's own images: the store under `--root-dir` and its registry client.
pub struct StoreImageService {
    puller: RegistryPuller,
    /// Bytes of unpacked layer dirs: they never change once in place.
    layer_sizes: Mutex<HashMap<PathBuf, u64>>,
}

impl StoreImageService {
    pub fn new(store: ImageStore, registries: RegistryOptions) -> Self {
        StoreImageService {
            puller: RegistryPuller::new(store, registries),
            layer_sizes: Mutex::default(),
        }
    }

    fn store(&self) -> &ImageStore {
        self.puller.store()
    }

    fn size_of(&self, path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                let mut sizes = self.layer_sizes.lock().unwrap_or_else(|e| e.into_inner());
                *sizes
                    .entry(path.to_path_buf())
                    .or_insert_with(|| disk_usage(path))
            }
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
}

impl ImageService for StoreImageService {
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a AuthConfig>,
    ) -> BoxFuture<'a, Result<ImageSummary, PullError>> {
        Box::pin(async move { Ok(self.puller.pull(image, auth).await?.summary) })
    }

    fn image_status(&self, image: &str) -> Result<Option<ImageStatus>, ImageError> {
        match self.store().resolve(image) {
            Ok(found) => Ok(Some(ImageStatus {
                size: self
                    .store()
                    .list()?
                    .into_iter()
                    .find(|s| s.id == found.id)
                    .map_or(0, |s| s.size),
                id: found.id,
                reference: found.reference,
                pinned: !found.pulled,
            })),
            Err(ImageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list_images(&self) -> Result<Vec<ImageSummary>, ImageError> {
        self.store().list()
    }

    fn remove_image(&self, id: &str) -> Result<(), ImageError> {
        let result = self.store().remove_image(id);
        self.layer_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p, _| p.exists());
        result
    }

    fn image_fs_info(&self) -> Result<ImageFsInfo, ImageError> {
        let root = self.store().root();
        let (capacity_bytes, available_bytes) =
            filesystem_usage(root).map_err(|e| StoreError::Io {
                op: "reading the image filesystem of",
                path: root.to_path_buf(),
                source: e.into(),
            })?;
        Ok(ImageFsInfo {
            capacity_bytes,
            available_bytes,
        })
    }

    fn image_content(&self, id: &str) -> Result<Vec<(String, u64)>, ImageError> {
        Ok(self
            .store()
            .image_content(id)?
            .into_iter()
            .map(|p| (p.display().to_string(), self.size_of(&p)))
            .collect())
    }
}

/// (capacity, available) bytes of the filesystem holding `path`.
pub fn filesystem_usage(path: &Path) -> nix::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path)?;
    let frsize = st.fragment_size() as u64;
    Ok((
        st.blocks() as u64 * frsize,
        st.blocks_available() as u64 * frsize,
    ))
}

/// Bytes a directory tree takes on disk (allocated blocks, as `du`), not
/// following links; hard links counted once.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut seen_inodes = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() && meta.nlink() > 1 && !seen_inodes.insert(meta.ino()) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}
