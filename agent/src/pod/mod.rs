//! Pods on this node: the manager (one worker per pod), the worker (a state
//! machine that owns its pod) and the per-container record it keeps.

pub mod manager;
pub mod slot;
pub mod termination_message;
pub mod worker;
