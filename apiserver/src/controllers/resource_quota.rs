//! The resource quota controller (`resourcequota-controller`): keeps each
//! ResourceQuota's `status.hard` (its spec) and `status.used` (what the
//! namespace holds of each limited resource, counted as the admission
//! counts it), so `kubectl describe quota` shows use against limits and
//! deleted or finished pods give their share back. Pods come from the
//! shared informer and requeue their namespace's quotas; other kinds are
//! listed at each sync, and every quota is looked at again each 30 s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kubelab_rules::resource_quota::{self, Usage};
use tokio::sync::broadcast::error::RecvError;

use super::informers::{Change, Informers, SharedInformer};
use super::work_queue::{self, Queue};

pub const CONCURRENT_SYNCS: u16 = 5;
const COMPONENT: &str = "resourcequota-controller";
/// kube-controller-manager's `--resource-quota-sync-period` is 5 min; the
/// lab looks sooner, since kinds other than pods are not watched.
const RESYNC: Duration = Duration::from_secs(30);

struct Context {
    client: kube::Client,
    quotas: SharedInformer<ResourceQuota>,
    pods: SharedInformer<Pod>,
}

pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let ctx = Arc::new(Context {
        client: informers.client(),
        quotas: informers.get::<ResourceQuota>(),
        pods: informers.get::<Pod>(),
    });
    work_queue::serve(
        COMPONENT,
        ctx.quotas.store.clone(),
        ctx.clone(),
        CONCURRENT_SYNCS,
        |queue| watch_changes(ctx.clone(), queue),
        async {
            tokio::join!(ctx.quotas.synced(), ctx.pods.synced());
        },
        |q, ctx| sync(q, ctx),
    )
    .await;
    Ok(())
}

async fn watch_changes(ctx: Arc<Context>, queue: Queue<ResourceQuota>) {
    let mut quotas = ctx.quotas.subscribe();
    let mut pods = ctx.pods.subscribe();
    ctx.quotas.synced().await;
    queue.add_all(&ctx.quotas.store);
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = quotas.recv() => match c {
                Ok(Change::Applied(q)) => queue.add_object(&q),
                Ok(Change::Deleted(_)) => {}
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.quotas.store),
                Err(RecvError::Closed) => return,
            },
            c = pods.recv() => match c {
                Ok(Change::Applied(p) | Change::Deleted(p)) => {
                    let ns = p.namespace();
                    for q in ctx.quotas.store.state() {
                        if q.namespace() == ns {
                            queue.add_object(&q);
                        }
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.quotas.store),
                Err(RecvError::Closed) => return,
            },
            _ = resync.tick() => queue.add_all(&ctx.quotas.store),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaSyncError {
    #[error("resource quota {quota}: {source}")]
    Api { quota: String, source: kube::Error },
    #[error("resource quota {quota}: {message}")]
    Amount { quota: String, message: String },
}

/// The kind a quota'd resource name counts, as (group, plural).
fn counted_kind(name: &str) -> Option<(String, String)> {
    if let Some(rest) = name.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_owned(), plural.to_owned()),
            None => (String::new(), rest.to_owned()),
        });
    }
    let core = |p: &str| Some((String::new(), p.to_owned()));
    match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.") || n.starts_with("limits.") => {
            if n == "requests.storage" {
                core("persistentvolumeclaims")
            } else {
                core("pods")
            }
        }
        "services.nodeports" | "services.loadbalancers" => core("services"),
        "services"
        | "secrets"
        | "configmaps"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "resourcequotas" => core(name),
        _ => None,
    }
}

/// The served version of a group, for listing by plural.
fn version_of(group: &str) -> &'static str {
    match group {
        "autoscaling" => "v2",
        _ => "v1",
    }
}

async fn sync(
    quota: Arc<ResourceQuota>,
    ctx: Arc<Context>,
) -> work_queue::SyncResult<QuotaSyncError> {
    let name = quota.name_any();
    let ns = quota.namespace().unwrap_or_default();
    let hard = resource_quota::hard(&quota).map_err(|e| QuotaSyncError::Amount {
        quota: format!("{ns}/{name}"),
        message: e.to_string(),
    })?;
    let mut kinds: Vec<(String, String)> = hard.keys().filter_map(|k| counted_kind(k)).collect();
    kinds.sort();
    kinds.dedup();
    let mut used = Usage::new();
    for (group, plural) in kinds {
        if group.is_empty() && plural == "pods" {
            for pod in ctx.pods.store.state() {
                if pod.namespace().as_deref() != Some(ns.as_str())
                    || !resource_quota::pod_counts(&pod)
                    || !resource_quota::scopes_match(&quota, Some(&pod))
                {
                    continue;
                }
                if let Ok(u) = resource_quota::pod_usage(&pod) {
                    resource_quota::add(&mut used, &u);
                }
            }
            continue;
        }
        if !resource_quota::scopes_match(&quota, None) {
            continue;
        }
        let ar = ApiResource {
            group: group.clone(),
            version: version_of(&group).to_owned(),
            api_version: if group.is_empty() {
                version_of(&group).to_owned()
            } else {
                format!("{group}/{}", version_of(&group))
            },
            kind: String::new(),
            plural: plural.clone(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        // A kind this server does not serve counts nothing.
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for obj in list.items {
            let Ok(v) = serde_json::to_value(&obj) else {
                continue;
            };
            if let Ok(u) = resource_quota::usage(&group, &plural, &v) {
                resource_quota::add(&mut used, &u);
            }
        }
    }
    let status = ResourceQuotaStatus {
        hard: quota.spec.as_ref().and_then(|s| s.hard.clone()),
        used: Some(resource_quota::used_status(&hard, &used)),
    };
    let current = quota.status.clone().unwrap_or_default();
    let same = |a: &Option<BTreeMap<String, _>>, b: &Option<BTreeMap<String, _>>| {
        a.clone().unwrap_or_default() == b.clone().unwrap_or_default()
    };
    if !(same(&current.hard, &status.hard) && same(&current.used, &status.used)) {
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| QuotaSyncError::Api {
                quota: format!("{ns}/{name}"),
                source,
            })?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_map_to_the_kinds_they_count() {
        let k = |n: &str| counted_kind(n).map(|(g, p)| format!("{g}/{p}"));
        assert_eq!(k("requests.cpu").as_deref(), Some("/pods"));
        assert_eq!(k("memory").as_deref(), Some("/pods"));
        assert_eq!(
            k("requests.storage").as_deref(),
            Some("/persistentvolumeclaims")
        );
        assert_eq!(
            k("count/deployments.apps").as_deref(),
            Some("apps/deployments")
        );
        assert_eq!(k("count/configmaps").as_deref(), Some("/configmaps"));
        assert_eq!(k("services.nodeports").as_deref(), Some("/services"));
        assert_eq!(k("nvidia.com/gpu"), None);
    }
}
