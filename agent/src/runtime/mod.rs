//! The container runtime: images, OCI spec, sandbox, shim and container init.

pub mod image;
