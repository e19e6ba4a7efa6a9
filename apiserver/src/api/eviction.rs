//! `pods/{name}/eviction`: a policy/v1 `Eviction` is a graceful delete of
//! the pod with the Eviction's `deleteOptions`, what `kubectl drain` posts,
//! allowed only as far as the pod's PodDisruptionBudget allows
//! (`pkg/registry/core/pod/storage/eviction.go`): each eviction takes one
//! of the budget's `disruptionsAllowed` and records the pod in
//! `status.disruptedPods` until the disruption controller sees it go; with
//! none left the answer is 429 "Cannot evict pod as it would violate the
//! pod's disruption budget.", which `kubectl drain` retries.

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails, Time};
use serde_json::{Value, json};

use super::{Api, ApiResult, Params, json_response, object};
use crate::controllers::disruption_budget::selects;
use crate::controllers::replicaset_decide::is_ready;
use crate::kinds::policy::update_disruption_allowed;
use crate::status::ApiError;
use crate::storage::StorageError;

/// The message of a refused eviction.
pub const VIOLATES_BUDGET: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";
/// `MaxDisruptedPodSize`: evictions a budget may await at once.
const MAX_DISRUPTED_PODS: usize = 2000;
const UPDATE_ATTEMPTS: usize = 8;

/// `canIgnorePDB`: a pod that is finished, not yet running or already
/// going takes nothing from a budget.
fn can_ignore_budget(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
        || pod.metadata.deletion_timestamp.is_some()
}

/// An unready pod may go without touching a healthy budget
/// (`IfHealthyBudget`, the default) or any budget (`AlwaysAllow`).
fn unhealthy_pod_may_go(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if is_ready(pod) {
        return false;
    }
    let policy = pdb
        .spec
        .as_ref()
        .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref());
    if policy == Some("AlwaysAllow") {
        return true;
    }
    let s = pdb.status.clone().unwrap_or_default();
    s.current_healthy >= s.desired_healthy && s.desired_healthy > 0
}

fn too_many_requests(cause: String, retry_after: i32) -> ApiError {
    ApiError {
        details: Some(Box::new(StatusDetails {
            causes: Some(vec![StatusCause {
                reason: Some("DisruptionBudget".into()),
                message: Some(cause),
                field: None,
            }]),
            retry_after_seconds: (retry_after > 0).then_some(retry_after),
            ..Default::default()
        })),
        ..ApiError::new(429, "TooManyRequests", VIOLATES_BUDGET)
    }
}

/// `checkAndDecrement`: the budget's status after this eviction, or why
/// the eviction must wait.
pub fn check_and_decrement(
    pdb: &PodDisruptionBudget,
    pod: &str,
    now: jiff::Timestamp,
) -> ApiResult<PodDisruptionBudgetStatus> {
    let name = pdb.metadata.name.as_deref().unwrap_or_default();
    let mut status = pdb.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < pdb.metadata.generation.unwrap_or(0) {
        return Err(too_many_requests(
            format!("The disruption budget {name} is still being processed by the server."),
            10,
        ));
    }
    let forbidden = |why: &str| {
        ApiError::new(
            403,
            "Forbidden",
            format!("poddisruptionbudgets.policy {name:?} is forbidden: {why}"),
        )
    };
    if status.disruptions_allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    if status.disrupted_pods.as_ref().map_or(0, |d| d.len()) > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if status.disruptions_allowed == 0 {
        return Err(too_many_requests(
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                status.desired_healthy, status.current_healthy
            ),
            0,
        ));
    }
    status.disruptions_allowed -= 1;
    if status.disruptions_allowed == 0 {
        update_disruption_allowed(&mut status, now);
    }
    status
        .disrupted_pods
        .get_or_insert_with(Default::default)
        .insert(pod.to_owned(), Time(now));
    Ok(status)
}

/// The delete options an Eviction carries, checked against the URL's pod.
pub fn delete_options(name: &str, eviction: &Value) -> ApiResult<Value> {
    if !eviction.is_object() {
        return Err(ApiError::bad_request("the body must be an Eviction object"));
    }
    match eviction.get("kind").and_then(Value::as_str) {
        None | Some("" | "Eviction") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({other}) does not match the expected kind (Eviction)"
            )));
        }
    }
    match eviction.get("apiVersion").and_then(Value::as_str) {
        None | Some("" | "policy/v1" | "policy/v1beta1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version (policy/v1)"
            )));
        }
    }
    if let Some(body_name) = object::meta_str(eviction, "name")
        && body_name != name
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    Ok(eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or(Value::Null))
}

impl Api {
    pub(super) async fn evict(
        &self,
        ns: &str,
        name: &str,
        eviction: &Value,
        params: &Params,
    ) -> ApiResult<Response> {
        let opts = delete_options(name, eviction)?;
        // The query's and the delete options' dryRun, as the dispatcher
        // read them (which also serves a dry run from a store that does not write).
        let dry_run = super::is_dry_run(params);
        let pods = self.kind("", "v1", "pods");
        let pod: Pod = serde_json::from_value(self.get(pods.as_ref(), Some(ns), name).await?)
            .map_err(ApiError::internal)?;
        if !can_ignore_budget(&pod) {
            self.take_from_budget(ns, &pod, dry_run).await?;
        }
        self.delete(pods.as_ref(), Some(ns), name, &opts, params)
            .await?;
        tracing::info!(pod = %format!("{ns}/{name}"), "evicted");
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

impl Api {
    /// Finds the pod's one budget and takes a disruption from it, retrying
    /// a write that raced another eviction or the disruption controller.
    async fn take_from_budget(&self, ns: &str, pod: &Pod, dry_run: bool) -> ApiResult<()> {
        let kind = self.kind("policy", "v1", "poddisruptionbudgets");
        let info = kind.info();
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        for _ in 0..UPDATE_ATTEMPTS {
            let (kvs, _) = self.store.list(&info.key_prefix(Some(ns))).await?;
            let mut budgets: Vec<(PodDisruptionBudget, u64, Value)> = kvs
                .iter()
                .filter_map(|kv| {
                    let v = object::decode(kv);
                    let pdb: PodDisruptionBudget = serde_json::from_value(v.clone()).ok()?;
                    selects(&pdb, pod).then_some((pdb, kv.mod_revision, v))
                })
                .collect();
            let (pdb, revision, old) = match budgets.len() {
                0 => return Ok(()),
                1 => budgets.remove(0),
                _ => {
                    return Err(ApiError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ));
                }
            };
            if unhealthy_pod_may_go(&pdb, pod) {
                return Ok(());
            }
            let status = check_and_decrement(&pdb, pod_name, jiff::Timestamp::now())?;
            if dry_run {
                return Ok(());
            }
            let mut new = old.clone();
            new["status"] = serde_json::to_value(status).map_err(ApiError::internal)?;
            match self
                .store_update(kind.as_ref(), &old, &mut new, revision)
                .await
            {
                Ok(()) => return Ok(()),
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => {
                    return Err(ApiError::from_storage(
                        info.subject(),
                        pdb.metadata.name.as_deref().unwrap_or_default(),
                        e,
                    ));
                }
            }
        }
        Err(too_many_requests(
            "the disruption budget kept changing; try again".into(),
            1,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eviction_carries_its_delete_options_for_its_own_pod_only() {
        let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 5}});
        assert_eq!(
            delete_options("web", &ev).unwrap(),
            json!({"gracePeriodSeconds": 5})
        );
        assert_eq!(
            delete_options("other", &ev).unwrap_err().message,
            "name in URL does not match name in Eviction object"
        );
        let wrong = json!({"apiVersion": "v1", "kind": "Pod"});
        assert_eq!(delete_options("web", &wrong).unwrap_err().code, 400);
        assert_eq!(
            delete_options(
                "web",
                &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web"}})
            )
            .unwrap(),
            Value::Null
        );
    }

    fn budget(allowed: i32, current: i32, desired: i32) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(Default::default()),
            status: Some(PodDisruptionBudgetStatus {
                disruptions_allowed: allowed,
                current_healthy: current,
                desired_healthy: desired,
                expected_pods: 3,
                observed_generation: Some(1),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn an_eviction_takes_one_disruption_and_records_the_pod() {
        let now = jiff::Timestamp::now();
        let s = check_and_decrement(&budget(1, 3, 2), "web-1", now).unwrap();
        assert_eq!(s.disruptions_allowed, 0);
        assert!(s.disrupted_pods.unwrap().contains_key("web-1"));
        let c = &s.conditions.unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientPods")
        );
    }

    #[test]
    fn no_disruption_left_is_429_with_the_disruption_budget_cause() {
        let e = check_and_decrement(&budget(0, 2, 2), "web-2", jiff::Timestamp::now()).unwrap_err();
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        assert_eq!(e.message, VIOLATES_BUDGET);
        let cause = &e.details.unwrap().causes.unwrap()[0];
        assert_eq!(cause.reason.as_deref(), Some("DisruptionBudget"));
        assert_eq!(
            cause.message.as_deref(),
            Some("The disruption budget web needs 2 healthy pods and has 2 currently")
        );
        // A budget the controller has not seen since its change waits too.
        let mut stale = budget(1, 3, 2);
        stale.metadata.generation = Some(2);
        let e = check_and_decrement(&stale, "web-2", jiff::Timestamp::now()).unwrap_err();
        assert_eq!(e.code, 429);
    }

    #[test]
    fn an_unready_pod_leaves_a_healthy_budget_alone() {
        let pod = Pod {
            status: Some(Default::default()),
            ..Default::default()
        };
        assert!(unhealthy_pod_may_go(&budget(0, 2, 2), &pod));
        assert!(!unhealthy_pod_may_go(&budget(0, 1, 2), &pod));
        let mut always = budget(0, 0, 2);
        always.spec.as_mut().unwrap().unhealthy_pod_eviction_policy = Some("AlwaysAllow".into());
        assert!(unhealthy_pod_may_go(&always, &pod));
    }
}
