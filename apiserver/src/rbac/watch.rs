//! Keeps the authorizer's index current: reflectors over the four RBAC
//! kinds (the index is rebuilt after every change, RBAC objects being
//! few), the aggregation of ClusterRoles with an `aggregationRule` (as
//! kube-controller-manager's clusterrole-aggregation controller does), and
//! for the Node authorizer a watch of the pods and what they use.

use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::index::{PolicyIndex, aggregated_rules};
use crate::api::Api;
use crate::authorizer::{Authorizer, Mode};
use crate::kinds::rbac::GROUP;

#[derive(Clone)]
struct Stores {
    roles: Store<Role>,
    cluster_roles: Store<ClusterRole>,
    role_bindings: Store<RoleBinding>,
    cluster_role_bindings: Store<ClusterRoleBinding>,
}

impl Stores {
    fn index(&self) -> PolicyIndex {
        let roles = self.roles.state();
        let cluster_roles = self.cluster_roles.state();
        let role_bindings = self.role_bindings.state();
        let cluster_role_bindings = self.cluster_role_bindings.state();
        PolicyIndex::build(
            &roles.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &cluster_roles.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &role_bindings.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &cluster_role_bindings
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>(),
        )
    }
}

/// Whether a watch event changes what the store holds (the events of an
/// initial list count once, at its end).
fn changes<K>(e: &watcher::Event<K>) -> bool {
    !matches!(e, watcher::Event::Init | watcher::Event::InitApply(_))
}

/// Writes the rules aggregated ClusterRoles should hold.
async fn aggregate(api: &Api, cluster_roles: &Store<ClusterRole>) {
    let all = cluster_roles.state();
    let refs: Vec<&ClusterRole> = all.iter().map(AsRef::as_ref).collect();
    for role in &refs {
        let Some(rules) = aggregated_rules(role, &refs) else {
            continue;
        };
        if role.rules.clone().unwrap_or_default() == rules {
            continue;
        }
        let kind = api.kind(GROUP, "v1", "clusterroles");
        let name = role.metadata.name.clone().unwrap_or_default();
        let mut updated = (*role).clone();
        updated.rules = Some(rules);
        let mut v: Value = serde_json::to_value(&updated).expect("ClusterRole serializes");
        v["apiVersion"] = format!("{GROUP}/v1").into();
        v["kind"] = "ClusterRole".into();
        match api.update_object(kind.as_ref(), v, false).await {
            Ok(_) => tracing::info!(clusterrole = %name, "aggregated rules updated"),
            // A conflict means a newer version is on its way here.
            Err(e) => tracing::debug!(clusterrole = %name, "aggregation: {}", e.message),
        }
    }
}

/// Starts the reflectors and returns once the index holds every RBAC
/// object (and the pods, with the Node mode), so no request is decided
/// on an empty index.
pub async fn start(api: Arc<Api>, authorizer: Arc<Authorizer>) {
    let client = crate::client::in_process(api.clone(), "system:apiserver");
    let cfg = watcher::Config::default;
    let (roles, w1) = reflector::store::<Role>();
    let (cluster_roles, w2) = reflector::store::<ClusterRole>();
    let (role_bindings, w3) = reflector::store::<RoleBinding>();
    let (cluster_role_bindings, w4) = reflector::store::<ClusterRoleBinding>();
    let stores = Stores {
        roles,
        cluster_roles,
        role_bindings,
        cluster_role_bindings,
    };
    let events = futures::stream::select_all([
        watcher(kube::Api::<Role>::all(client.clone()), cfg())
            .default_backoff()
            .reflect(w1)
            .map_ok(|e| (changes(&e), false))
            .boxed(),
        watcher(kube::Api::<ClusterRole>::all(client.clone()), cfg())
            .default_backoff()
            .reflect(w2)
            .map_ok(|e| (changes(&e), true))
            .boxed(),
        watcher(kube::Api::<RoleBinding>::all(client.clone()), cfg())
            .default_backoff()
            .reflect(w3)
            .map_ok(|e| (changes(&e), false))
            .boxed(),
        watcher(kube::Api::<ClusterRoleBinding>::all(client.clone()), cfg())
            .default_backoff()
            .reflect(w4)
            .map_ok(|e| (changes(&e), false))
            .boxed(),
    ]);
    {
        let (stores, authorizer, api) = (stores.clone(), authorizer.clone(), api.clone());
        tokio::spawn(async move {
            let mut events = events;
            while let Some(e) = events.next().await {
                match e {
                    Ok((true, cluster_roles_changed)) => {
                        authorizer.set_policy(stores.index());
                        if cluster_roles_changed {
                            aggregate(&api, &stores.cluster_roles).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("RBAC watch: {e}"),
                }
            }
        });
    }
    if authorizer.modes().contains(&Mode::Node) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pods = watcher(kube::Api::<Pod>::all(client), cfg()).default_backoff();
        let authorizer = authorizer.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut pods = std::pin::pin!(pods);
            while let Some(e) = pods.next().await {
                match e {
                    Ok(watcher::Event::Init) => authorizer.graph().clear(),
                    Ok(watcher::Event::InitApply(p) | watcher::Event::Apply(p)) => {
                        authorizer.graph().apply(&p)
                    }
                    Ok(watcher::Event::Delete(p)) => authorizer.graph().delete(&p),
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(e) => tracing::warn!("node authorizer pod watch: {e}"),
                }
            }
        });
        let _ = rx.await;
    }
    for ready in [
        stores.roles.wait_until_ready().boxed(),
        stores.cluster_roles.wait_until_ready().boxed(),
        stores.role_bindings.wait_until_ready().boxed(),
        stores.cluster_role_bindings.wait_until_ready().boxed(),
    ] {
        let _ = ready.await;
    }
    authorizer.set_policy(stores.index());
    aggregate(&api, &stores.cluster_roles).await;
}
