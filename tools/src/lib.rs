//! kubelab: the user tools that watch a node from outside, through the
//! agent's read-only HTTP API, so the node agent carries only what a node runs.
//! - [`client`]: the read-only API (`/pods`, `/stats/summary`, `/events`).
//! - [`top`]: a live view of a node's containers against their limits.
//! - [`experiment`]: a pod under given limits, sampled, reported with plots.

pub mod client;
pub mod experiment;
pub mod top;
