//! The container runtime: images, OCI spec, sandbox, shim and container init.
//!
//! - [`spec`]: pod + image config → OCI runtime spec (pure).
//! - [`init`]: the container's init stage: makes a spec real (mounts, pivot_root, caps, exec).
//! - [`shim`]: the per-container supervisor that outlives the agent.
//! - [`sandbox`]: the process holding a pod's network, IPC and UTS namespaces.
//! - [`container`]: the agent's side of one container run.
//! - [`image`]: the image store.

pub mod container;
pub mod exec;
pub mod image;
pub mod init;
pub mod sandbox;
pub mod shim;
pub mod spec;
pub mod volumes;
