//! How many replicas a resource metric asks for, as the HPA's
//! `ReplicaCalculator.GetResourceReplicas` decides: the pods' usage
//! against their requests, a 10% tolerance around the target, pods still
//! starting or without metrics counted so they never make the autoscaler
//! overshoot. Pure: pods and their usage in, a count out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use kubelab_rules::quantity;

/// `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD_SECS: i64 = 5 * 60;
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY_SECS: i64 = 30;

/// One pod's usage of the resource (millicores, or milli-bytes for
/// memory), and the sample's time and window.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetric {
    pub milli_value: i64,
    pub timestamp: jiff::Timestamp,
    pub window_secs: i64,
}

/// The calculation's settings.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub tolerance: f64,
    pub cpu_initialization_period_secs: i64,
    pub initial_readiness_delay_secs: i64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            tolerance: TOLERANCE,
            cpu_initialization_period_secs: CPU_INITIALIZATION_PERIOD_SECS,
            initial_readiness_delay_secs: INITIAL_READINESS_DELAY_SECS,
        }
    }
}

/// The answer: the replica count, the utilization (percent of requests,
/// for a `Utilization` target) and the average raw usage per pod (milli
/// units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    pub replicas: i32,
    pub utilization: Option<i32>,
    pub raw_average_milli: i64,
}

/// How `groupPods` sorts a pod.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Group {
    Ready,
    Unready,
    Missing,
    Ignored,
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// `groupPods`: deleting and failed pods are ignored, pending ones are
/// unready, pods without a sample are missing; for CPU, a pod still in
/// its initialization period counts only when ready and sampled since it
/// became ready, and a pod never ready since its start is unready.
fn group(
    pod: &Pod,
    metric: Option<&PodMetric>,
    cpu: bool,
    tuning: &Tuning,
    now: jiff::Timestamp,
) -> Group {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || phase == Some("Failed") {
        return Group::Ignored;
    }
    if phase == Some("Pending") {
        return Group::Unready;
    }
    let Some(metric) = metric else {
        return Group::Missing;
    };
    if !cpu {
        return Group::Ready;
    }
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_second());
    let (Some(condition), Some(start)) = (ready_condition(pod), start) else {
        return Group::Unready;
    };
    let transition = condition
        .last_transition_time
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    let not_ready = condition.status == "False";
    let unready = if start + tuning.cpu_initialization_period_secs > now.as_second() {
        not_ready || metric.timestamp.as_second() < transition + metric.window_secs
    } else {
        not_ready && start + tuning.initial_readiness_delay_secs > transition
    };
    if unready {
        Group::Unready
    } else {
        Group::Ready
    }
}

/// `calculatePodRequests`: the pod's request of the resource, in milli
/// units, of one container or of all.
fn pod_request(pod: &Pod, resource: &str, container: Option<&str>) -> Result<i64, String> {
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let mut total = 0;
    for c in &spec.containers {
        if container.is_some_and(|name| name != c.name) {
            continue;
        }
        let request = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .ok_or_else(|| {
                format!(
                    "missing request for {resource} in container {} of Pod {}",
                    c.name,
                    pod.metadata.name.as_deref().unwrap_or_default()
                )
            })?;
        total += quantity::milli_value(request).map_err(|e| e.to_string())?;
    }
    Ok(total)
}

/// `GetResourceUtilizationRatio`: (usage ratio, utilization, raw average).
fn utilization_ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut counted) = (0i64, 0i64, 0i64);
    for (pod, usage) in metrics {
        if let Some(r) = requests.get(pod) {
            used += usage;
            requested += r;
            counted += 1;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        used / counted,
    ))
}

/// `GetMetricUsageRatio`: (usage ratio, average usage).
fn usage_ratio(metrics: &BTreeMap<String, i64>, target_milli: i64) -> (f64, i64) {
    let average = metrics.values().sum::<i64>() / (metrics.len().max(1) as i64);
    (average as f64 / target_milli as f64, average)
}

/// What a `Resource` or `ContainerResource` metric aims at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResourceTarget {
    /// `averageUtilization`: percent of the pods' requests.
    Utilization(i32),
    /// `averageValue`: usage per pod, in milli units.
    AverageValue(i64),
}

/// The pods' ratio of usage to target, and the (utilization, average)
/// to report.
fn ratio(
    target: ResourceTarget,
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
) -> Result<(f64, Option<i32>, i64), String> {
    match target {
        ResourceTarget::Utilization(t) => {
            let (r, u, raw) = utilization_ratio(metrics, requests, t)?;
            Ok((r, Some(u), raw))
        }
        ResourceTarget::AverageValue(t) => {
            let (r, raw) = usage_ratio(metrics, t);
            Ok((r, None, raw))
        }
    }
}

/// `GetResourceReplicas` (a `Utilization` target) and
/// `GetRawResourceReplicas` (an `AverageValue` target, by
/// `calcPlainMetricReplicas`) of `resource`, in all the pods' containers
/// or in the one named (`ContainerResource`).
#[allow(clippy::too_many_arguments)]
pub fn resource_replicas(
    current_replicas: i32,
    target: ResourceTarget,
    resource: &str,
    container: Option<&str>,
    pods: &[&Pod],
    samples: &BTreeMap<String, PodMetric>,
    tuning: &Tuning,
    now: jiff::Timestamp,
) -> Result<Recommendation, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let cpu = resource == "cpu";
    let mut metrics: BTreeMap<String, i64> = BTreeMap::new();
    let mut unready = BTreeSet::new();
    let mut missing = BTreeSet::new();
    let mut ready_count = 0i32;
    let mut requests = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let sample = samples.get(&name);
        match group(pod, sample, cpu, tuning, now) {
            Group::Ignored => continue,
            Group::Unready => {
                unready.insert(name.clone());
            }
            Group::Missing => {
                missing.insert(name.clone());
            }
            Group::Ready => {
                ready_count += 1;
                if let Some(s) = sample {
                    metrics.insert(name.clone(), s.milli_value);
                }
            }
        }
        if let ResourceTarget::Utilization(_) = target {
            requests.insert(name, pod_request(pod, resource, container)?);
        }
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let (ratio0, utilization, raw) = ratio(target, &metrics, &requests)?;
    let answer = |replicas| Recommendation {
        replicas,
        utilization,
        raw_average_milli: raw,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio0 > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio0).abs() <= tuning.tolerance {
            return Ok(answer(current_replicas));
        }
        return Ok(answer((ratio0 * f64::from(ready_count)).ceil() as i32));
    }
    // Assume the worst for the autoscaler's direction: missing pods use
    // their whole target (or request) when scaling down and nothing when
    // scaling up, and unready pods nothing when scaling up.
    for name in &missing {
        let value = match target {
            _ if ratio0 >= 1.0 => 0,
            ResourceTarget::Utilization(t) => {
                requests.get(name).copied().unwrap_or(0) * i64::from(t.max(100)) / 100
            }
            ResourceTarget::AverageValue(t) => t,
        };
        metrics.insert(name.clone(), value);
    }
    if scale_up_with_unready {
        for name in &unready {
            metrics.insert(name.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio(target, &metrics, &requests)?;
    if (1.0 - new_ratio).abs() <= tuning.tolerance
        || (ratio0 < 1.0 && new_ratio > 1.0)
        || (ratio0 > 1.0 && new_ratio < 1.0)
    {
        return Ok(answer(current_replicas));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current_replicas)
        || (new_ratio > 1.0 && replicas < current_replicas)
    {
        return Ok(answer(current_replicas));
    }
    Ok(answer(replicas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, PodCondition, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    /// A pod requesting `request` of CPU, started and ready long ago
    /// unless `phase` says otherwise.
    fn pod(name: &str, request: &str, phase: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "php".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "cpu".to_string(),
                            Quantity(request.into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                start_time: Some(Time(at(0))),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(at(10))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn samples(values: &[(&str, i64)]) -> BTreeMap<String, PodMetric> {
        values
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    PodMetric {
                        milli_value: *v,
                        timestamp: at(900),
                        window_secs: 1,
                    },
                )
            })
            .collect()
    }

    fn calc(
        current: i32,
        target: ResourceTarget,
        container: Option<&str>,
        pods: &[&Pod],
        usage: &[(&str, i64)],
    ) -> Result<Recommendation, String> {
        resource_replicas(
            current,
            target,
            "cpu",
            container,
            pods,
            &samples(usage),
            &Tuning::default(),
            at(1000),
        )
    }

    fn replicas(current: i32, pods: &[Pod], usage: &[(&str, i64)]) -> Recommendation {
        let refs: Vec<&Pod> = pods.iter().collect();
        resource_replicas(
            current,
            ResourceTarget::Utilization(50),
            "cpu",
            None,
            &refs,
            &samples(usage),
            &Tuning::default(),
            at(1000),
        )
        .unwrap()
    }

    #[test]
    fn one_pod_at_138_percent_of_a_50_percent_target_asks_for_three() {
        // 003 4-10: php-apache requests 200m and burns 276m.
        let pods = [pod("a", "200m", "Running", true)];
        let r = replicas(1, &pods, &[("a", 276)]);
        assert_eq!(r.utilization, Some(138));
        assert_eq!(r.replicas, 3);
        assert_eq!(r.raw_average_milli, 276);
    }

    #[test]
    fn within_the_tolerance_nothing_changes() {
        let pods = [
            pod("a", "100m", "Running", true),
            pod("b", "100m", "Running", true),
        ];
        // 54% against 50%: a ratio of 1.08 is within 10%.
        assert_eq!(replicas(2, &pods, &[("a", 54), ("b", 54)]).replicas, 2);
        // 56%: 1.12 scales to ceil(2 × 1.12) = 3.
        assert_eq!(replicas(2, &pods, &[("a", 56), ("b", 56)]).replicas, 3);
        // Idle: down to ceil(2 × 0.1) = 1.
        assert_eq!(replicas(2, &pods, &[("a", 5), ("b", 5)]).replicas, 1);
    }

    #[test]
    fn missing_metrics_hold_back_the_direction_they_could_reverse() {
        let pods = [
            pod("a", "100m", "Running", true),
            pod("b", "100m", "Running", true),
        ];
        // Scaling up: the missing pod counts as idle, 100% → 50% average.
        assert_eq!(replicas(2, &pods, &[("a", 100)]).replicas, 2);
        // A high one still scales up: 200% and 0% average to 100%.
        assert_eq!(replicas(2, &pods, &[("a", 200)]).replicas, 4);
        // Scaling down: the missing pod counts as fully used, so the
        // average stays above the target and nothing shrinks.
        assert_eq!(replicas(2, &pods, &[("a", 10)]).replicas, 2);
    }

    #[test]
    fn unready_and_pending_pods_count_as_idle_when_scaling_up() {
        let pods = [
            pod("a", "100m", "Running", true),
            pod("b", "100m", "Pending", false),
        ];
        // 150% on the ready pod, the pending one at 0: 75%, 3 replicas.
        let r = replicas(2, &pods, &[("a", 150)]);
        assert_eq!((r.utilization, r.replicas), (Some(150), 3));
        // Deleting pods are left out entirely.
        let mut gone = pod("c", "100m", "Running", true);
        gone.metadata.deletion_timestamp = Some(Time(at(999)));
        let pods = [pod("a", "100m", "Running", true), gone];
        assert_eq!(replicas(1, &pods, &[("a", 100), ("c", 100)]).replicas, 2);
    }

    #[test]
    fn no_request_or_no_metrics_is_an_error() {
        let mut p = pod("a", "100m", "Running", true);
        p.spec.as_mut().unwrap().containers[0].resources = None;
        let err = resource_replicas(
            1,
            ResourceTarget::Utilization(50),
            "cpu",
            None,
            &[&p],
            &samples(&[("a", 10)]),
            &Tuning::default(),
            at(1000),
        )
        .unwrap_err();
        assert_eq!(err, "missing request for cpu in container php of Pod a");
        let p = pod("a", "100m", "Running", true);
        let err = resource_replicas(
            1,
            ResourceTarget::Utilization(50),
            "cpu",
            None,
            &[&p],
            &BTreeMap::new(),
            &Tuning::default(),
            at(1000),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "did not receive metrics for targeted pods (pods might be unready)"
        );
    }

    #[test]
    fn an_average_value_target_divides_usage_per_pod_by_it() {
        let pods = [
            pod("a", "100m", "Running", true),
            pod("b", "100m", "Running", true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let value = |current, usage: &[(&str, i64)]| {
            calc(
                current,
                ResourceTarget::AverageValue(200),
                None,
                &refs,
                usage,
            )
            .unwrap()
        };
        // 300m a pod against 200m: 1.5 × 2 pods = 3, reported as 300m.
        let r = value(2, &[("a", 300), ("b", 300)]);
        assert_eq!(
            (r.replicas, r.utilization, r.raw_average_milli),
            (3, None, 300)
        );
        // 210m is within the tolerance.
        assert_eq!(value(2, &[("a", 210), ("b", 210)]).replicas, 2);
        // Scaling down with one pod missing: it counts as at the target,
        // (50 + 200) / 2 = 125m, ceil(2 × 0.625) = 2.
        assert_eq!(value(2, &[("a", 50)]).replicas, 2);
        assert_eq!(value(2, &[("a", 40), ("b", 40)]).replicas, 1);
    }

    #[test]
    fn a_container_resource_counts_only_that_container_s_request() {
        let mut p = pod("a", "100m", "Running", true);
        let mut sidecar = p.spec.as_ref().unwrap().containers[0].clone();
        sidecar.name = "sidecar".into();
        sidecar.resources = None;
        p.spec.as_mut().unwrap().containers.push(sidecar);
        let r = calc(
            1,
            ResourceTarget::Utilization(50),
            Some("php"),
            &[&p],
            &[("a", 100)],
        )
        .unwrap();
        assert_eq!((r.utilization, r.replicas), (Some(100), 2));
        // Across all containers the sidecar's missing request is an error.
        let err = calc(
            1,
            ResourceTarget::Utilization(50),
            None,
            &[&p],
            &[("a", 100)],
        )
        .unwrap_err();
        assert_eq!(err, "missing request for cpu in container sidecar of Pod a");
    }
}
