//! Images as the pod layer sees them (the kubelet's `pkg/kubelet/images`
//! and `credentialprovider`): a container's `imagePullPolicy`, the pod's
//! `imagePullSecrets`, pull back-off and the events that tell of it. Below
//! it, the runtime's image side ([`crate::runtime::image`]) is reached only
//! through CRI's `ImageService`, which takes an image and one registry
//! credential and knows no API object.
//!
//! - [`manager`]: pull policy, back-off, events: the kubelet's image manager.
//! - [`credentials`]: `imagePullSecrets` read into a keyring matched to registries.

pub mod credentials;
pub mod manager;

pub use manager::{ImageManager, ImagePullFailure, PullConcurrency, PullOptions};
