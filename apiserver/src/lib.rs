//! kubelab-apiserver: a small Kubernetes-compatible apiserver.
//!
//! Where things live:
//! - [`storage`]: the revisioned key/value store trait and the embedded (redb) backend.
//! - [`kinds`]: the served resources (`k8s-openapi` types) and their strategies:
//!   defaults, validation, table columns.
//! - [`api`]: REST semantics (create/get/list/watch/update/patch/delete, binding),
//!   discovery and OpenAPI.
//! - [`certificates`]: certificate signing requests and the built-in signers.
//! - [`pki`], [`auth`], [`server`]: certificates, authentication, HTTPS serving;
//!   [`server::run`] is the whole startup.
//! - [`controllers`]: in-process controllers (endpoints, node IPAM, ...),
//!   started by [`server::run`] after bootstrap.
//! - [`client`]: an in-process `kube::Client` for the control plane;
//!   [`leader_election`]: one active scheduler/controller manager per cluster.
//! - [`node_client`]: the agents' kubelet API (pod logs, metrics).
//! - [`cidr`]: IPv4 ranges of the service and pod networks.
//! - [`selectors`], [`status`]: label/field selectors; `Status` errors.
//! - [`patch_metadata`]: each field's patch strategy, merge key, list and
//!   map type, from Kubernetes' OpenAPI document.
//! - [`authorizer`], [`rbac`]: `--authorization-mode` (Node, RBAC), the
//!   bootstrap policy, escalation prevention, NodeRestriction, impersonation.
//! - [`event_recorder`]: the Events the scheduler and controllers record.
//! - [`pod_security`]: Pod Security admission (namespace labels, the
//!   baseline and restricted checks).

pub mod api;
pub mod auth;
pub mod authorizer;
pub mod bootstrap_token;
pub mod certificates;
pub mod cidr;
pub mod client;
pub mod controllers;
pub mod cron_schedule;
pub mod dns;
pub mod event_recorder;
pub mod kinds;
pub mod leader_election;
pub mod node_client;
pub mod patch_metadata;
pub mod pki;
pub mod pod_security;
pub mod rbac;
pub mod scheduler;
pub mod selectors;
pub mod server;
pub mod serviceaccount;
pub mod status;
pub mod storage;
