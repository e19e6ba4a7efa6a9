//! The namespace controller (kube-controller-manager's `namespace`
//! controller and its `namespacedResourcesDeleter`): a namespace that was
//! deleted is `Terminating` with the `kubernetes` finalizer in
//! `spec.finalizers`; this controller deletes everything in it (a
//! DeleteCollection of every namespaced resource, in the background, so
//! pods terminate gracefully through their kubelet), reports progress in
//! the namespace's conditions (`NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`, …, upstream's reasons and messages),
//! comes back after half the longest pod grace period, and once nothing is
//! left removes its finalizer through `namespaces/{name}/finalize`, which
//! lets the apiserver remove the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::verbs;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::served_resources::{self, ServedResource};
use crate::api::deletion::FINALIZER_KUBERNETES;

const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
const GROUP_VERSION_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The conditions this controller keeps, in upstream's order, with their
/// reason and message when all is well (status False).
const CONDITIONS: [(&str, &str, &str); 5] = [
    (
        DISCOVERY_FAILURE,
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        GROUP_VERSION_PARSING_FAILURE,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        CONTENT_FAILURE,
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        CONTENT_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        FINALIZERS_REMAINING,
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {namespace}: {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    /// Not a failure: content is still going away (`ResourcesRemainingError`).
    #[error("namespace {namespace}: content remains, checking again in {estimate_seconds}s")]
    ContentRemaining {
        namespace: String,
        estimate_seconds: i64,
    },
}

/// What is left in a namespace after a deletion pass.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ContentTotals {
    /// `<resource>.<group>` (`pods.` for the core group) → objects left.
    pub remaining: BTreeMap<String, usize>,
    /// Finalizer → objects left that carry it.
    pub finalizers: BTreeMap<String, usize>,
    /// Seconds the slowest remaining pod may still take to terminate.
    pub estimate_seconds: i64,
}

impl ContentTotals {
    pub fn is_empty(&self) -> bool {
        self.remaining.values().all(|n| *n == 0)
    }

    /// Counts one resource's remaining objects and their finalizers.
    pub fn add(&mut self, resource: &str, group: &str, objects: &[DynamicObject]) {
        if objects.is_empty() {
            return;
        }
        *self
            .remaining
            .entry(format!("{resource}.{group}"))
            .or_default() += objects.len();
        for o in objects {
            for f in o.finalizers() {
                *self.finalizers.entry(f.clone()).or_default() += 1;
            }
        }
    }
}

fn failing(type_: &str, reason: &str, message: String, now: Timestamp) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
    }
}

/// The failing conditions of one pass (upstream's `namespaceConditionUpdater`):
/// discovery trouble, deletion errors, content and finalizers left.
pub fn failing_conditions(
    discovery_error: Option<&str>,
    delete_errors: &[String],
    totals: &ContentTotals,
    now: Timestamp,
) -> Vec<NamespaceCondition> {
    let mut out = Vec::new();
    if let Some(e) = discovery_error {
        out.push(failing(
            DISCOVERY_FAILURE,
            "DiscoveryFailed",
            e.to_owned(),
            now,
        ));
    }
    if !delete_errors.is_empty() {
        let mut msgs = delete_errors.to_vec();
        msgs.sort();
        out.push(failing(
            CONTENT_FAILURE,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                msgs.len(),
                msgs.join(", ")
            ),
            now,
        ));
    }
    let remaining: Vec<String> = totals
        .remaining
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(gr, n)| format!("{gr} has {n} resource instances"))
        .collect();
    if !remaining.is_empty() {
        out.push(failing(
            CONTENT_REMAINING,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", remaining.join(", ")),
            now,
        ));
    }
    let finalizers: Vec<String> = totals
        .finalizers
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(f, n)| format!("{f} in {n} resource instances"))
        .collect();
    if !finalizers.is_empty() {
        out.push(failing(
            FINALIZERS_REMAINING,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                finalizers.join(", ")
            ),
            now,
        ));
    }
    out
}

/// Brings the status's five conditions to `failing` (the rest to their
/// "all is well" form); `true` if anything changed. A transition time moves
/// only when a condition's status does.
pub fn update_conditions(
    status: &mut NamespaceStatus,
    failing: &[NamespaceCondition],
    now: Timestamp,
) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for (type_, ok_reason, ok_message) in CONDITIONS {
        let wanted = failing
            .iter()
            .find(|c| c.type_ == type_)
            .cloned()
            .unwrap_or_else(|| NamespaceCondition {
                type_: type_.into(),
                status: "False".into(),
                reason: Some(ok_reason.into()),
                message: Some(ok_message.into()),
                last_transition_time: Some(Time(now)),
            });
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(wanted);
                changed = true;
            }
            Some(c)
                if c.status != wanted.status
                    || c.reason != wanted.reason
                    || c.message != wanted.message =>
            {
                if c.status != wanted.status {
                    c.last_transition_time = Some(Time(now));
                }
                c.status = wanted.status;
                c.reason = wanted.reason;
                c.message = wanted.message;
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

/// `estimateGracefulTerminationForPods`: the longest grace period a
/// remaining, not yet finished pod may still use.
pub fn pods_graceful_estimate(pods: &[Pod]) -> i64 {
    pods.iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .map(|p| {
            p.metadata.deletion_grace_period_seconds.unwrap_or_else(|| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
            })
        })
        .max()
        .unwrap_or(0)
        .max(0)
}

/// When to look again at a namespace with content left: half the estimate
/// plus a second, as the controller requeues.
pub fn requeue_after(estimate_seconds: i64) -> Duration {
    Duration::from_secs((estimate_seconds.max(0) / 2 + 1) as u64)
}

/// `spec.finalizers` once this controller is done.
pub fn without_kubernetes_finalizer(finalizers: &[String]) -> Vec<String> {
    finalizers
        .iter()
        .filter(|f| *f != FINALIZER_KUBERNETES)
        .cloned()
        .collect()
}

struct Context {
    client: Client,
}

/// Runs the controller until the process ends (or leadership is lost and
/// the caller drops it).
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Context { client });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(kube::runtime::controller::Error::ReconcilerFailed(
                    NamespaceError::ContentRemaining { .. },
                    _,
                )) => {}
                Err(e) => tracing::warn!("namespace controller: {e}"),
            }
        })
        .await;
}

fn error_policy(_ns: Arc<Namespace>, error: &NamespaceError, _ctx: Arc<Context>) -> Action {
    match error {
        NamespaceError::ContentRemaining {
            estimate_seconds, ..
        } => Action::requeue(requeue_after(*estimate_seconds)),
        NamespaceError::Api { .. } => Action::requeue(Duration::from_secs(1)),
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, NamespaceError> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api_err = |source| NamespaceError::Api {
        namespace: name.clone(),
        source,
    };
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    // The cache may lag: act on the namespace as it is now.
    let Some(current) = namespaces.get_opt(&name).await.map_err(api_err)? else {
        return Ok(Action::await_change());
    };
    if current.metadata.deletion_timestamp.is_none() || finalized(&current) {
        return Ok(Action::await_change());
    }
    let (discovery_error, resources) = match served_resources::discover(&ctx.client).await {
        Ok(r) => (None, r),
        Err(e) => (
            Some(format!("Discovery failed for some groups: {e}")),
            Vec::new(),
        ),
    };
    let (totals, delete_errors) = delete_all_content(&ctx.client, &name, &resources).await;
    let failing = failing_conditions(
        discovery_error.as_deref(),
        &delete_errors,
        &totals,
        Timestamp::now(),
    );
    update_status(&namespaces, &name, &failing)
        .await
        .map_err(api_err)?;
    if discovery_error.is_some() || !delete_errors.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if !totals.is_empty() {
        return Err(NamespaceError::ContentRemaining {
            namespace: name,
            estimate_seconds: totals.estimate_seconds,
        });
    }
    finalize(&namespaces, &name).await.map_err(api_err)?;
    tracing::info!(namespace = %name, "namespace content removed; finalized");
    Ok(Action::await_change())
}

fn finalized(ns: &Namespace) -> bool {
    !ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER_KUBERNETES))
}

/// One DeleteCollection (background) per namespaced resource, then what is
/// left of each; deletion errors are collected, not fatal.
async fn delete_all_content(
    client: &Client,
    ns: &str,
    resources: &[ServedResource],
) -> (ContentTotals, Vec<String>) {
    let mut totals = ContentTotals::default();
    let mut errors = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.namespaced && r.supports(verbs::LIST) && r.supports(verbs::DELETE_COLLECTION))
    {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r.resource);
        if let Err(e) = api
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
        {
            errors.push(format!("{} in namespace {ns}: {e}", r.group_resource()));
            continue;
        }
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                if r.resource.group.is_empty() && r.resource.plural == "pods" {
                    let pods: Vec<Pod> = list
                        .items
                        .iter()
                        .filter_map(|o| o.clone().try_parse::<Pod>().ok())
                        .collect();
                    totals.estimate_seconds =
                        totals.estimate_seconds.max(pods_graceful_estimate(&pods));
                }
                totals.add(&r.resource.plural, &r.resource.group, &list.items);
            }
            Err(e) => errors.push(format!("{} in namespace {ns}: {e}", r.group_resource())),
        }
    }
    (totals, errors)
}

/// Writes the conditions through `namespaces/{name}/status`, again on a
/// conflict.
async fn update_status(
    namespaces: &Api<Namespace>,
    name: &str,
    failing: &[NamespaceCondition],
) -> Result<(), kube::Error> {
    for _ in 0..5 {
        let Some(mut ns) = namespaces.get_opt(name).await? else {
            return Ok(());
        };
        let status = ns.status.get_or_insert_with(Default::default);
        if !update_conditions(status, failing, Timestamp::now()) {
            return Ok(());
        }
        match namespaces
            .replace_status(name, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes `kubernetes` from `spec.finalizers` (`namespaces/{name}/finalize`).
async fn finalize(namespaces: &Api<Namespace>, name: &str) -> Result<(), kube::Error> {
    for _ in 0..5 {
        let Some(mut ns) = namespaces.get_opt(name).await? else {
            return Ok(());
        };
        let spec = ns.spec.get_or_insert_with(Default::default);
        let current = spec.finalizers.clone().unwrap_or_default();
        spec.finalizers = Some(without_kubernetes_finalizer(&current));
        match namespaces
            .replace_subresource("finalize", name, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn object(finalizers: &[&str]) -> DynamicObject {
        let mut o = DynamicObject {
            types: None,
            metadata: ObjectMeta::default(),
            data: serde_json::Value::Null,
        };
        o.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        o
    }

    #[test]
    fn remaining_content_reads_as_upstreams_conditions() {
        let mut totals = ContentTotals::default();
        totals.add("pods", "", &[object(&[]), object(&["example.com/hold"])]);
        totals.add("replicasets", "apps", &[object(&["example.com/hold"])]);
        totals.add("configmaps", "", &[]);
        let c = failing_conditions(None, &[], &totals, now());
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].type_, "NamespaceContentRemaining");
        assert_eq!(c[0].reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            c[0].message.as_deref(),
            Some(
                "Some resources are remaining: pods. has 2 resource instances, replicasets.apps has 1 resource instances"
            )
        );
        assert_eq!(c[1].type_, "NamespaceFinalizersRemaining");
        assert_eq!(
            c[1].message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances"
            )
        );

        let mut status = NamespaceStatus {
            phase: Some("Terminating".into()),
            conditions: None,
        };
        assert!(update_conditions(&mut status, &c, now()));
        let conds = status.conditions.clone().unwrap();
        let types: Vec<&str> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "NamespaceDeletionDiscoveryFailure",
                "NamespaceDeletionGroupVersionParsingFailure",
                "NamespaceDeletionContentFailure",
                "NamespaceContentRemaining",
                "NamespaceFinalizersRemaining"
            ]
        );
        assert_eq!(conds[2].status, "False");
        assert_eq!(
            conds[2].message.as_deref(),
            Some("All content successfully deleted, may be waiting on finalization")
        );
        assert!(!update_conditions(&mut status, &c, now()), "no change");

        // Everything gone: the conditions flip to their "ok" form.
        let later = Timestamp::from_second(1_700_000_100).unwrap();
        assert!(update_conditions(&mut status, &[], later));
        let remaining = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .unwrap();
        assert_eq!(remaining.status, "False");
        assert_eq!(remaining.reason.as_deref(), Some("ContentRemoved"));
        assert_eq!(remaining.last_transition_time, Some(Time(later)));
    }

    #[test]
    fn deletion_errors_are_reported_sorted() {
        let c = failing_conditions(
            None,
            &["b failed".into(), "a failed".into()],
            &ContentTotals::default(),
            now(),
        );
        assert_eq!(c[0].reason.as_deref(), Some("ContentDeletionFailed"));
        assert_eq!(
            c[0].message.as_deref(),
            Some("Failed to delete all resource types, 2 remaining: a failed, b failed")
        );
    }

    fn pod(grace: Option<i64>, deletion_grace: Option<i64>, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                deletion_grace_period_seconds: deletion_grace,
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: grace,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_slowest_terminating_pod_sets_when_to_look_again() {
        let pods = [
            pod(Some(30), Some(4), "Running"),
            pod(Some(10), None, "Running"),
            pod(Some(600), None, "Succeeded"),
        ];
        assert_eq!(pods_graceful_estimate(&pods), 10);
        assert_eq!(requeue_after(10), Duration::from_secs(6));
        assert_eq!(requeue_after(0), Duration::from_secs(1));
        assert_eq!(
            without_kubernetes_finalizer(&["kubernetes".into(), "example.com/x".into()]),
            ["example.com/x"]
        );
    }
}
