//! Role-based access control as kube-apiserver does it: the request
//! attributes ([`attributes`]), rule matching ([`rules`]), the index of
//! roles and bindings ([`index`]) kept current by watches ([`watch`]), the
//! bootstrap policy ([`bootstrap`]), the Node authorizer ([`node`]),
//! escalation prevention and NodeRestriction ([`admission`]) and
//! impersonation ([`impersonation`]). The modes and the request filter are
//! in [`crate::authorizer`].

pub mod admission;
pub mod attributes;
pub mod bootstrap;
pub mod impersonation;
pub mod index;
pub mod node;
pub mod rules;
pub mod watch;
