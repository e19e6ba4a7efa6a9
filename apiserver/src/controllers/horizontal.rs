//! The horizontal pod autoscaler (kube-controller-manager's
//! `horizontal-pod-autoscaler-controller`): every sync period it reads
//! each HPA's target through the `scale` subresource, the target's pods'
//! usage from the metrics API (`metrics.k8s.io`, pod CPU and memory against
//! their requests), computes the replicas
//! ([`super::replica_calculator`]), stabilizes and rate-limits them
//! ([`super::scale_recommendations`]), scales, and reports status,
//! conditions (AbleToScale, ScalingActive, ScalingLimited) and events
//! (`SuccessfulRescale` "New size: 3; reason: cpu resource utilization
//! (percentage of request) above target").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::informers::{Change, Informers, SharedInformer};
use super::metric_sources::{MetricFailure, unserved_metric};
use super::replica_calculator::{PodMetric, ResourceTarget, Tuning, resource_replicas};
use super::scale_recommendations::{
    DOWNSCALE_STABILIZATION_SECS, History, Normalized, Proposal, normalize,
    normalize_with_behavior, record_scale,
};
use super::work_queue::{self, Queue};
use crate::event_recorder::{EventRecorder, reference};
use crate::selectors::LabelSelector;

/// The component its events are recorded as.
pub const COMPONENT: &str = "horizontal-pod-autoscaler";
const WORKERS: u16 = 5;

/// kube-controller-manager's `--horizontal-pod-autoscaler-*` flags.
#[derive(Debug, Clone, Copy)]
pub struct HpaOptions {
    /// `--horizontal-pod-autoscaler-sync-period`.
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`.
    pub downscale_stabilization: Duration,
    /// `--horizontal-pod-autoscaler-tolerance` and the CPU readiness periods.
    pub tuning: Tuning,
}

impl Default for HpaOptions {
    fn default() -> Self {
        Self {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(DOWNSCALE_STABILIZATION_SECS as u64),
            tuning: Tuning::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HpaError {
    #[error("updating status of horizontalpodautoscaler {hpa}: {source}")]
    Status { hpa: String, source: kube::Error },
    #[error("{0}")]
    Scale(String),
}

struct Context {
    client: kube::Client,
    pods: SharedInformer<Pod>,
    autoscalers: SharedInformer<HorizontalPodAutoscaler>,
    recorder: EventRecorder,
    history: Mutex<HashMap<String, History>>,
    opts: HpaOptions,
}

pub async fn run(informers: Informers, opts: HpaOptions) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        pods: informers.get(),
        autoscalers: informers.get(),
        history: Mutex::default(),
        opts,
    });
    let (queue, keys) = work_queue::queue::<HorizontalPodAutoscaler>();
    let changes = watch(ctx.clone(), queue);
    ctx.pods.synced().await;
    ctx.autoscalers.synced().await;
    let workers = work_queue::run(
        "horizontal-pod-autoscaler-controller",
        ctx.autoscalers.store.clone(),
        keys,
        ctx.clone(),
        WORKERS,
        |hpa, ctx| sync(hpa, ctx),
    );
    tokio::select! {
        _ = changes => {}
        _ = workers => {}
    }
    Ok(())
}

async fn watch(ctx: Arc<Context>, queue: Queue<HorizontalPodAutoscaler>) {
    let mut changes = ctx.autoscalers.subscribe();
    ctx.autoscalers.synced().await;
    queue.add_all(&ctx.autoscalers.store);
    loop {
        match changes.recv().await {
            Ok(Change::Applied(h)) => queue.add_object(&h),
            Ok(Change::Deleted(h)) => {
                let key = format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any());
                ctx.history.lock().expect("history").remove(&key);
            }
            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.autoscalers.store),
            Err(RecvError::Closed) => return,
        }
    }
}

/// `setConditionInList`: the transition time moves only with the status.
fn set_condition(
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) {
    let value = if status { "True" } else { "False" };
    let i = match conditions.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conditions.push(HorizontalPodAutoscalerCondition {
                type_: type_.into(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let c = &mut conditions[i];
    if c.status != value {
        c.last_transition_time = Some(Time(now));
    }
    c.status = value.into();
    c.reason = Some(reason.into());
    c.message = Some(message);
}

/// `resource.NewMilliQuantity(v, DecimalSI).String()`.
fn milli_quantity(milli: i64) -> Quantity {
    if milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

/// Percent-encodes a query value.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The pods' usage of `resource` from `metrics.k8s.io`, summed over
/// containers (or of the one named), by pod name.
async fn pod_metrics(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<BTreeMap<String, PodMetric>, String> {
    let uri = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}",
        query_escape(selector)
    );
    let request = axum::http::Request::get(uri)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let list: Value = client
        .request(request)
        .await
        .map_err(|e| format!("unable to fetch metrics from resource metrics API: {e}"))?;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let mut total = 0;
        let mut found = false;
        let mut named_container = container.is_none();
        for c in item["containers"].as_array().into_iter().flatten() {
            if let Some(wanted) = container {
                if c["name"].as_str() != Some(wanted) {
                    continue;
                }
                named_container = true;
            }
            if let Some(q) = c["usage"][resource].as_str() {
                total += kubelab_rules::quantity::milli_value(&Quantity(q.into()))
                    .map_err(|e| e.to_string())?;
                found = true;
            }
        }
        if !named_container {
            return Err(format!(
                "container {} not present in metrics for pod {ns}/{name}",
                container.unwrap_or_default()
            ));
        }
        if !found {
            continue;
        }
        let timestamp = item["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let window_secs = item["window"]
            .as_str()
            .and_then(|w| kubelab_rules::duration::parse_go_duration(w).ok())
            .map_or(0, |d| d.as_secs() as i64);
        out.insert(
            name.to_owned(),
            PodMetric {
                milli_value: total,
                timestamp,
                window_secs,
            },
        );
    }
    if out.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
        ));
    }
    Ok(out)
}

/// A metric's proposal: replicas, what to report, and its name for events.
type MetricProposal = (i32, MetricStatus, String);

/// `computeStatusForResourceMetricGeneric`, for a `Resource` metric or a
/// `ContainerResource` one (`container`).
#[allow(clippy::too_many_arguments)]
async fn resource_metric(
    ctx: &Context,
    ns: &str,
    name: &str,
    container: Option<&str>,
    target: &MetricTarget,
    current: i32,
    selector: &str,
    now: jiff::Timestamp,
) -> Result<MetricProposal, MetricFailure> {
    let (reason, kind, what) = match container {
        None => ("FailedGetResourceMetric", "resource", "Resource"),
        Some(_) => (
            "FailedGetContainerResourceMetric",
            "container",
            "ContainerResource",
        ),
    };
    let fail = |error: String| MetricFailure {
        reason,
        outer: format!("failed to get {name} {kind} metric value: {error}"),
        error,
    };
    let (target, failed_to_get) = match (target.average_value.as_ref(), target.average_utilization)
    {
        (Some(v), _) => (
            ResourceTarget::AverageValue(
                kubelab_rules::quantity::milli_value(v).map_err(|e| fail(e.to_string()))?,
            ),
            "usage",
        ),
        (None, Some(u)) => (ResourceTarget::Utilization(u), "utilization"),
        (None, None) => {
            return Err(fail(
                "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into(),
            ));
        }
    };
    let sel = LabelSelector::parse(selector).map_err(|e| fail(e.to_string()))?;
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .store
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && sel.matches(p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
        })
        .collect();
    let samples = pod_metrics(&ctx.client, ns, selector, name, container)
        .await
        .map_err(|e| fail(format!("failed to get {name} {failed_to_get}: {e}")))?;
    let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let r = resource_replicas(
        current,
        target,
        name,
        container,
        &refs,
        &samples,
        &ctx.opts.tuning,
        now,
    )
    .map_err(|e| fail(format!("failed to get {name} {failed_to_get}: {e}")))?;
    let value = MetricValueStatus {
        average_utilization: r.utilization,
        average_value: Some(milli_quantity(r.raw_average_milli)),
        value: None,
    };
    let status = match container {
        None => MetricStatus {
            type_: what.into(),
            resource: Some(ResourceMetricStatus {
                name: name.into(),
                current: value,
            }),
            ..Default::default()
        },
        Some(c) => MetricStatus {
            type_: what.into(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: name.into(),
                container: c.into(),
                current: value,
            }),
            ..Default::default()
        },
    };
    let metric_name = match (target, container) {
        (ResourceTarget::AverageValue(_), _) => format!("{name} resource"),
        (ResourceTarget::Utilization(_), None) => {
            format!("{name} resource utilization (percentage of request)")
        }
        (ResourceTarget::Utilization(_), Some(_)) => {
            format!("{name} container resource utilization (percentage of request)")
        }
    };
    Ok((r.replicas, status, metric_name))
}

/// `computeReplicasForMetric`.
async fn compute_metric(
    ctx: &Context,
    ns: &str,
    spec: &MetricSpec,
    current: i32,
    selector: &str,
    now: jiff::Timestamp,
) -> Result<MetricProposal, MetricFailure> {
    match (
        spec.type_.as_str(),
        &spec.resource,
        &spec.container_resource,
    ) {
        ("Resource", Some(r), _) => {
            resource_metric(ctx, ns, &r.name, None, &r.target, current, selector, now).await
        }
        ("ContainerResource", _, Some(r)) => {
            resource_metric(
                ctx,
                ns,
                &r.name,
                Some(&r.container),
                &r.target,
                current,
                selector,
                now,
            )
            .await
        }
        _ => Err(unserved_metric(spec, ns)),
    }
}

/// `reconcileAutoscaler`.
async fn sync(
    hpa: Arc<HorizontalPodAutoscaler>,
    ctx: Arc<Context>,
) -> work_queue::SyncResult<HpaError> {
    let resync = Some(ctx.opts.sync_period);
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let now = jiff::Timestamp::now();
    let ns = hpa.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", hpa.name_any());
    let about = reference("autoscaling/v2", "HorizontalPodAutoscaler", &hpa.metadata);
    let spec = hpa.spec.clone().unwrap_or_default();
    let mut status = hpa.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let (group, version) = match target.api_version.as_deref().unwrap_or("").split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (
            String::new(),
            target.api_version.clone().unwrap_or_default(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
    let scales: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    let mut scale = match scales.get_scale(&target.name).await {
        Ok(s) => s,
        Err(e) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            ctx.recorder.warning(about, "FailedGetScale", e.to_string());
            set_condition(
                &mut conditions,
                "AbleToScale",
                false,
                "FailedGetScale",
                message,
                now,
            );
            status.conditions = Some(conditions);
            write_status(&ctx, &hpa, status).await?;
            return Ok(resync);
        }
    };
    set_condition(
        &mut conditions,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
        now,
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let observed = scale.status.as_ref().map_or(0, |s| s.replicas);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let min = spec.min_replicas.unwrap_or(1);
    let mut desired = 0;
    let mut reason = String::new();
    let mut metric_statuses = status.current_metrics.clone();
    let rescale;
    if current == 0 && min != 0 {
        set_condition(
            &mut conditions,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
            now,
        );
        rescale = false;
    } else if current > spec.max_replicas {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = spec.max_replicas;
        rescale = true;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
        rescale = true;
    } else {
        let mut proposal = 0;
        let mut proposal_name = String::new();
        let mut statuses = Vec::new();
        let mut invalid: Vec<MetricFailure> = Vec::new();
        for m in spec.metrics.iter().flatten() {
            match compute_metric(&ctx, &ns, m, current, &selector, now).await {
                Ok((replicas, st, name)) => {
                    if replicas > proposal {
                        proposal = replicas;
                        proposal_name = name;
                    }
                    statuses.push(st);
                }
                Err(failure) => {
                    ctx.recorder
                        .warning(about.clone(), failure.reason, failure.error.clone());
                    statuses.push(MetricStatus::default());
                    invalid.push(failure);
                }
            }
        }
        let total = spec.metrics.as_ref().map_or(0, Vec::len);
        // Invalid metrics block scaling when they are all there is, or when
        // the valid ones would scale down (an invalid one might say up).
        if let Some(first) = invalid.first()
            && (invalid.len() >= total || proposal < current)
        {
            set_condition(
                &mut conditions,
                "ScalingActive",
                false,
                first.reason,
                format!(
                    "the HPA was unable to compute the replica count: {}",
                    first.error
                ),
                now,
            );
            ctx.recorder.warning(
                about.clone(),
                "FailedComputeMetricsReplicas",
                format!(
                    "invalid metrics ({} invalid out of {total}), first error is: {}",
                    invalid.len(),
                    first.outer
                ),
            );
            status.current_replicas = Some(observed);
            status.current_metrics = Some(statuses);
            status.conditions = Some(conditions);
            write_status(&ctx, &hpa, status).await?;
            return Ok(resync);
        }
        set_condition(
            &mut conditions,
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {proposal_name}"
            ),
            now,
        );
        metric_statuses = Some(statuses);
        desired = proposal;
        if desired > current {
            reason = format!("{proposal_name} above target");
        } else if desired < current {
            reason = "All metrics below target".into();
        }
        let p = Proposal {
            current,
            desired,
            min,
            max: spec.max_replicas,
            now: now.as_second(),
        };
        let window = ctx.opts.downscale_stabilization.as_secs() as i64;
        let normalized: Normalized = {
            let mut history = ctx.history.lock().expect("history");
            let h = history.entry(key.clone()).or_default();
            match &spec.behavior {
                None => normalize(&p, h, window),
                Some(b) => normalize_with_behavior(
                    &p,
                    h,
                    b.scale_up.as_ref(),
                    b.scale_down.as_ref(),
                    window,
                ),
            }
        };
        let (able_reason, able_message) = normalized.able_to_scale;
        set_condition(
            &mut conditions,
            "AbleToScale",
            true,
            able_reason,
            able_message.into(),
            now,
        );
        let (limited, (limit_reason, limit_message)) = normalized.scaling_limited;
        set_condition(
            &mut conditions,
            "ScalingLimited",
            limited,
            limit_reason,
            limit_message.into(),
            now,
        );
        desired = normalized.replicas;
        rescale = desired != current;
    }
    if rescale {
        if let Some(s) = scale.spec.as_mut() {
            s.replicas = Some(desired);
        }
        match scales
            .replace_scale(&target.name, &PostParams::default(), &scale)
            .await
        {
            Ok(_) => {
                set_condition(
                    &mut conditions,
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                    now,
                );
                ctx.recorder.normal(
                    about,
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {reason}"),
                );
                let longest = spec
                    .behavior
                    .iter()
                    .flat_map(|b| [b.scale_up.as_ref(), b.scale_down.as_ref()])
                    .flatten()
                    .flat_map(|r| r.policies.iter().flatten())
                    .map(|p| i64::from(p.period_seconds))
                    .max()
                    .unwrap_or(15);
                let mut history = ctx.history.lock().expect("history");
                record_scale(
                    history.entry(key).or_default(),
                    current,
                    desired,
                    now.as_second(),
                    longest,
                );
                status.last_scale_time = Some(Time(now));
            }
            Err(e) => {
                ctx.recorder.warning(
                    about,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {e}"),
                );
                set_condition(
                    &mut conditions,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                    now,
                );
                status.conditions = Some(conditions);
                status.current_replicas = Some(observed);
                write_status(&ctx, &hpa, status).await?;
                return Err(HpaError::Scale(e.to_string()));
            }
        }
    } else {
        desired = current;
    }
    status.current_replicas = Some(observed);
    status.desired_replicas = desired;
    status.current_metrics = metric_statuses;
    status.observed_generation = hpa.metadata.generation;
    status.conditions = Some(conditions);
    write_status(&ctx, &hpa, status).await?;
    Ok(resync)
}

async fn write_status(
    ctx: &Context,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
) -> Result<(), HpaError> {
    if hpa.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut updated = hpa.clone();
    updated.status = Some(status);
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &hpa.namespace().unwrap_or_default());
    api.replace_status(&hpa.name_any(), &PostParams::default(), &updated)
        .await
        .map_err(|source| HpaError::Status {
            hpa: format!("{}/{}", hpa.namespace().unwrap_or_default(), hpa.name_any()),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let t0 = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = jiff::Timestamp::from_second(1_700_000_100).unwrap();
        let mut c = Vec::new();
        set_condition(
            &mut c,
            "AbleToScale",
            true,
            "SucceededGetScale",
            "a".into(),
            t0,
        );
        set_condition(
            &mut c,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "b".into(),
            t1,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Some(Time(t0)));
        assert_eq!(c[0].reason.as_deref(), Some("ReadyForNewScale"));
        set_condition(
            &mut c,
            "AbleToScale",
            false,
            "FailedGetScale",
            "c".into(),
            t1,
        );
        assert_eq!(c[0].last_transition_time, Some(Time(t1)));
        assert_eq!(milli_quantity(276), Quantity("276m".into()));
        assert_eq!(milli_quantity(2000), Quantity("2".into()));
    }
}
