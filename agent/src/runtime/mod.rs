//! The container runtime: images, OCI spec, sandbox, shim and container init.
//!
//! It knows no API object: the pod layer ([`crate::pod`], [`crate::volume`])
//! resolves pods into CRI-shaped configs first.
//!
//! - [`service`]: the runtime as the pod worker drives it (CRI's `RuntimeService`).
//! - [`cri`]: what it is asked for, in CRI's shape (sandbox and container configs, mounts).
//! - [`builtin`]: the agent's own runtime behind it; [`fake`]: one that pretends.
//! - [`spec`]: container config + image config → OCI runtime spec (pure).
//! - [`init`]: the container's init stage: makes a spec real (mounts, pivot_root, caps, exec).
//! - [`shim`]: the per-container supervisor that outlives the agent.
//! - [`attach`]: the shim's attach socket (a container's stdin, output, terminal size).
//! - [`attach_server`]: the shim's side of that socket.
//! - [`sandbox`]: the process holding a pod's network, IPC and UTS namespaces.
//! - [`container`]: the agent's side of one container run.
//! - [`image`]: the image store.
//! - [`runc`]: a second backend: containers created by `runc`.
//! - [`handlers`]: runtime handlers (RuntimeClass `handler`) → backends.
//! - [`userns`], [`idmap`]: pod user namespaces (`hostUsers: false`) and idmapped mounts.

pub mod attach;
pub mod attach_server;
pub mod builtin;
pub mod cgroup_view;
pub mod container;
pub mod cri;
pub mod exec;
pub mod fake;
pub mod handlers;
pub mod idmap;
pub mod image;
pub mod in_root;
pub mod init;
pub mod node_policy;
pub mod runc;
pub mod sandbox;
pub mod seccomp;
pub mod service;
pub mod shim;
pub mod spec;
pub mod userns;
