//! Pods on this node: the manager (one worker per pod), the worker (a state
//! machine that owns its pod), its decisions (actions: what to start, kill,
//! rewrite), the per-container record it keeps, and what a restarted agent
//! does with what the previous process left (recovery). What the runtime is
//! handed is resolved here, as in the kubelet: sandbox_config and
//! container_config (CRI configs), a container's environment (env, envvars,
//! downward), sysctl admission (sysctls).

pub mod actions;
pub mod container_config;
pub mod downward;
pub mod env;
pub mod envvars;
pub mod manager;
pub mod recovery;
pub mod sandbox_config;
pub mod seccomp;
pub mod slot;
pub mod sysctls;
pub mod termination_message;
pub mod worker;
#[cfg(test)]
mod worker_tests;
