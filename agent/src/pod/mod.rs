//! Pods on this node: the manager (one worker per pod), the worker (a state
//! machine that owns its pod), its decisions (actions: what to start, kill,
//! rewrite), what a sandbox's and a container's runtime configs are resolved
//! to (sandbox_config, container_config), the per-container record it keeps, and what a restarted agent
//! does with what the previous process left (recovery).

pub mod actions;
pub mod container_config;
pub mod leftovers;
pub mod manager;
pub mod recovery;
pub mod sandbox_config;
pub mod slot;
pub mod termination_message;
pub mod worker;
#[cfg(test)]
mod worker_tests;
