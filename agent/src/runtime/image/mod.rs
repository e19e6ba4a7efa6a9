//! The image store: OCI images imported into `<root-dir>/images`, unpacked
//! once per layer, and turned into per-container root filesystems.
//!
//! - [`reference`]: `busybox` → `docker.io/library/busybox:latest`.
//! - [`store`]: the content-addressed store and its index ([`ImageStore`]).
//! - [`import`]: OCI archives and layout directories into the store, verified.
//! - [`unpack`]: one layer tar into one directory, refusing path escapes.
//! - [`rootfs`]: overlayfs (or a copy) of an image's layers per container.
//! - [`platform`]: which manifest of a multi-platform image this node runs.
//! - [`pull`]: images from registries (OCI distribution), verified and deduplicated.
//! - [`gc`]: which unused images go when the disk fills (pure), and
//!   [`gc_manager`], the kubelet's image garbage collector that acts on it.
//! - [`service`]: CRI's `ImageService` in front of the store and the
//!   registries, all the image manager ([`crate::images`]) and collector
//!   reach; [`fake`] pretends.
//! - [`cli`]: `kubelab-agent image import|pull|ls`.

pub mod cli;
pub mod fake;
pub mod gc;
pub mod gc_manager;
pub mod import;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod rootfs;
pub mod service;
pub mod store;
pub mod unpack;

pub use cli::{ImageCommand, run_image_command};
pub use gc::ImageGcPolicy;
pub use gc_manager::ImageGcManager;
pub use import::ImportError;
pub use pull::{PullError, RegistryOptions};
pub use reference::{Reference, ReferenceError};
pub use rootfs::{
    Rootfs, RootfsError, RootfsMode, prepare_rootfs, prepare_rootfs_with, remove_rootfs,
};
pub use service::{AuthConfig, ImageFsInfo, ImageService, ImageStatus, StoreImageService};
pub use store::{Image, ImageStore, ImageSummary, StoreError};
pub use unpack::UnpackError;

/// Everything the image store can fail with; each variant carries its module's context.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {reference:?} not found in the image store (pull it or import it with `kubelab-agent image`)"
    )]
    NotFound { reference: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}
