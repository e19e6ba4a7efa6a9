//! kube-scheduler: places pending pods on nodes, as a client of the API.
//!
//! - [`node_info`], [`cache`]: what the scheduler knows of nodes and placed
//!   (or assumed) pods, fed by watches.
//! - [`queue`]: the priority queue with back-off and the unschedulable pool
//!   that cluster events drain.
//! - [`plugins`]: filters and scores, pure functions over a snapshot;
//!   [`framework`] runs them for one pod; [`preemption`] picks victims.
//! - [`config`]: KubeSchedulerConfiguration and its profiles.
//! - [`scheduler`]: the loop — watches, queue, binding, events, status.

pub mod cache;
pub mod config;
pub mod events;
pub mod framework;
pub mod node_info;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod runner;
pub mod workload_selectors;

pub use config::{KubeSchedulerConfiguration, SchedulerSettings};
pub use runner::run;
