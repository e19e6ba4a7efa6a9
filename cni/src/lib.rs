//! kubelab-cni: CNI 1.0 plugins and the pieces a CNI client needs.
//!
//! - [`types`]: the spec's wire types (network config, result, error) and codes.
//! - [`ip`]: addresses with a prefix length, and the arithmetic IPAM needs.
//! - [`skel`]: a plugin's `main`: environment and stdin in, result or error out.
//! - [`invoke`]: running a plugin binary found in `CNI_PATH` (delegated IPAM, and
//!   the agent's CNI client).
//! - [`ipam`]: `kubelab-host-local`, compatible with the reference `host-local`
//!   (same config, same on-disk store, same lock), so both can share a data dir.
//! - [`bridge`]: `kubelab-bridge`, the reference `bridge` plugin's behaviour,
//!   done with rtnetlink.

pub mod bridge;
pub mod invoke;
pub mod ip;
pub mod ipam;
pub mod skel;
pub mod types;
