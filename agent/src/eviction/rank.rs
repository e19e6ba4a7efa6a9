//! Which pod goes first, and what it is told (kubelet's `rankMemoryPressure`,
//! `rankDiskPressureFunc`, `rankPIDPressure` and `evictionMessage`), pure.
//!
//! Under memory pressure pods using more than they requested go first,
//! then lower priority, then the larger use above the request; under disk
//! pressure the same with disk use; under PID pressure priority, then the
//! number of processes. A pod without stats goes before those with.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::config::{Signal, format_amount, format_threshold};
use super::thresholds::Observation;
use crate::quantity;

/// kubelet's `SystemCriticalPriority`: pods at or above it are never evicted.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// What a container uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    pub memory_working_set: u64,
}

/// What a pod uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    pub memory_working_set: u64,
    /// Bytes of its writable layers, logs and local volumes.
    pub disk_bytes: u64,
    pub inodes: u64,
    pub processes: u64,
    pub containers: Vec<ContainerUsage>,
}

/// A pod the node runs, with its usage when it could be measured.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pod: Pod,
    pub usage: Option<PodUsage>,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The pod's request of `resource` (kubelet's `GetResourceRequestQuantity`).
fn request(pod: &Pod, resource: &str) -> i128 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    kubelab_rules::resources::pod_requests(spec, Default::default())
        .map(|r| r.units(resource) as i128)
        .unwrap_or(0)
}

/// kubelet's `IsCriticalPod`: static and mirror pods, and those of system
/// critical priority.
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let source = annotations.and_then(|a| a.get(crate::config::manifest::CONFIG_SOURCE_ANNOTATION));
    let is_static = source.is_some_and(|s| s != crate::config::SOURCE_API);
    let is_mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    is_static || is_mirror || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

/// The amount of `signal`'s resource a pod uses.
fn used(usage: &PodUsage, signal: Signal) -> i128 {
    (match signal.resource() {
        "memory" => usage.memory_working_set,
        "ephemeral-storage" => usage.disk_bytes,
        "inodes" => usage.inodes,
        _ => usage.processes,
    }) as i128
}

/// `true` sorts first (kubelet's `cmpBool`).
fn first_if(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

/// Orders `pods` for eviction under `signal`'s pressure, first to go first.
pub fn rank(pods: &mut [Candidate], signal: Signal) {
    let resource = signal.resource();
    // What a request can be compared with: inodes and pids have none.
    let requested = |c: &Candidate| match resource {
        "memory" | "ephemeral-storage" => request(&c.pod, resource),
        _ => 0,
    };
    pods.sort_by(|a, b| {
        let (ua, ub) = match (&a.usage, &b.usage) {
            (Some(ua), Some(ub)) => (ua, ub),
            (ua, ub) => return first_if(ua.is_none(), ub.is_none()),
        };
        if resource == "pids" {
            return priority(&a.pod)
                .cmp(&priority(&b.pod))
                .then_with(|| ub.processes.cmp(&ua.processes));
        }
        let (ra, rb) = (requested(a), requested(b));
        let (sa, sb) = (used(ua, signal), used(ub, signal));
        first_if(sa > ra, sb > rb)
            .then_with(|| priority(&a.pod).cmp(&priority(&b.pod)))
            .then_with(|| (sb - rb).cmp(&(sa - ra)))
    });
}

/// The event annotations kubelet puts on an eviction.
pub const OFFENDING_CONTAINERS: &str = "offending_containers";
pub const OFFENDING_CONTAINERS_USAGE: &str = "offending_containers_usage";
pub const STARVED_RESOURCE: &str = "starved_resource";

/// kubelet's `evictionMessage`: the starved resource, the threshold and
/// what is available, and each container using more memory than it
/// requested. Word for word, trailing space included.
pub fn eviction_message(
    signal: Signal,
    threshold: &super::config::Threshold,
    observation: Option<&Observation>,
    candidate: &Candidate,
) -> (String, BTreeMap<String, String>) {
    let resource = signal.resource();
    let mut message = format!("The node was low on resource: {resource}. ");
    if let Some(obs) = observation {
        message += &format!(
            "Threshold quantity: {}, available: {}. ",
            format_threshold(&threshold.value, signal, obs.capacity),
            format_amount(signal, obs.available),
        );
    }
    let mut containers = Vec::new();
    let mut usages = Vec::new();
    if resource == "memory"
        && let (Some(usage), Some(spec)) = (&candidate.usage, candidate.pod.spec.as_ref())
    {
        for stats in &usage.containers {
            let Some(container) = spec.containers.iter().find(|c| c.name == stats.name) else {
                continue;
            };
            let requested = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("memory"));
            let request_bytes = requested.map_or(0, |q| quantity::bytes(q).unwrap_or(0));
            if stats.memory_working_set as i64 > request_bytes {
                let used = quantity::format_binary_si(stats.memory_working_set as i64);
                message += &format!(
                    "Container {} was using {used}, request is {}, has larger consumption of {resource}. ",
                    container.name,
                    requested.map_or("0".to_owned(), |q| q.0.clone()),
                );
                containers.push(container.name.clone());
                usages.push(used);
            }
        }
    }
    let annotations = [
        (OFFENDING_CONTAINERS, containers.join(",")),
        (OFFENDING_CONTAINERS_USAGE, usages.join(",")),
        (STARVED_RESOURCE, resource.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    (message, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reserved::ThresholdValue;
    use crate::eviction::config::Threshold;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::time::Duration;

    const MI: u64 = 1 << 20;

    fn pod(name: &str, memory_request: Option<&str>, priority: i32) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.spec = Some(PodSpec {
            priority: Some(priority),
            containers: vec![Container {
                name: "c".into(),
                resources: memory_request.map(|m| ResourceRequirements {
                    requests: Some([("memory".to_owned(), Quantity(m.into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    fn candidate(
        name: &str,
        request: Option<&str>,
        priority: i32,
        used_mi: Option<u64>,
    ) -> Candidate {
        Candidate {
            pod: pod(name, request, priority),
            usage: used_mi.map(|m| PodUsage {
                memory_working_set: m * MI,
                processes: m,
                containers: vec![ContainerUsage {
                    name: "c".into(),
                    memory_working_set: m * MI,
                }],
                ..Default::default()
            }),
        }
    }

    fn names(pods: &[Candidate]) -> Vec<&str> {
        pods.iter()
            .map(|c| c.pod.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn memory_pressure_takes_pods_over_their_request_then_low_priority_then_the_largest() {
        let mut pods = vec![
            // Guaranteed-like: under its request, however large.
            candidate("guaranteed", Some("512Mi"), 0, Some(400)),
            candidate("besteffort-small", None, 0, Some(10)),
            candidate("besteffort-big", None, 0, Some(300)),
            candidate("important-big", None, 1000, Some(600)),
            candidate("burstable-over", Some("100Mi"), 0, Some(250)),
        ];
        rank(&mut pods, Signal::MemoryAvailable);
        assert_eq!(
            names(&pods),
            [
                "besteffort-big",   // 300 above request
                "burstable-over",   // 150 above
                "besteffort-small", // 10 above
                "important-big",    // over its request, but higher priority
                "guaranteed",       // within its request
            ]
        );
    }

    #[test]
    fn pods_without_stats_go_first_and_pid_pressure_counts_processes() {
        let mut pods = vec![
            candidate("measured", None, 0, Some(10)),
            candidate("unknown", None, 0, None),
        ];
        rank(&mut pods, Signal::MemoryAvailable);
        assert_eq!(names(&pods), ["unknown", "measured"]);
        let mut pods = vec![
            candidate("few", None, 0, Some(2)),
            candidate("many", None, 0, Some(50)),
            candidate("many-important", None, 10, Some(500)),
        ];
        rank(&mut pods, Signal::PidAvailable);
        assert_eq!(names(&pods), ["many", "few", "many-important"]);
    }

    #[test]
    fn the_message_names_resource_threshold_and_the_containers_over_their_request() {
        let threshold = Threshold {
            signal: Signal::MemoryAvailable,
            value: ThresholdValue::Quantity(Quantity("100Mi".into())),
            grace_period: Duration::ZERO,
            min_reclaim: None,
        };
        let obs = Observation {
            available: 80 * MI as i64,
            capacity: 1 << 30,
        };
        let (message, annotations) = eviction_message(
            Signal::MemoryAvailable,
            &threshold,
            Some(&obs),
            &candidate("hog", None, 0, Some(500)),
        );
        assert_eq!(
            message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. \
             Container c was using 500Mi, request is 0, has larger consumption of memory. "
        );
        assert_eq!(annotations[OFFENDING_CONTAINERS], "c");
        assert_eq!(annotations[OFFENDING_CONTAINERS_USAGE], "500Mi");
        assert_eq!(annotations[STARVED_RESOURCE], "memory");
        // Within its request: not named.
        let (message, annotations) = eviction_message(
            Signal::MemoryAvailable,
            &threshold,
            Some(&obs),
            &candidate("fine", Some("1Gi"), 0, Some(500)),
        );
        assert_eq!(
            message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. "
        );
        assert_eq!(annotations[OFFENDING_CONTAINERS], "");
        // Disk: a percentage threshold prints as the amount it stands for.
        let disk = Threshold {
            signal: Signal::NodeFsAvailable,
            value: ThresholdValue::Percent(10_000),
            grace_period: Duration::ZERO,
            min_reclaim: None,
        };
        let (message, _) = eviction_message(
            Signal::NodeFsAvailable,
            &disk,
            Some(&Observation {
                available: 1 << 30,
                capacity: 20 << 30,
            }),
            &candidate("writer", None, 0, Some(1)),
        );
        assert_eq!(
            message,
            "The node was low on resource: ephemeral-storage. Threshold quantity: 2Gi, available: 1Gi. "
        );
    }

    #[test]
    fn static_mirror_and_system_critical_pods_are_critical() {
        let mut p = pod("p", None, 0);
        assert!(!is_critical(&p));
        p.metadata.annotations = Some(
            [(
                crate::config::manifest::CONFIG_SOURCE_ANNOTATION.to_owned(),
                crate::config::SOURCE_FILE.to_owned(),
            )]
            .into(),
        );
        assert!(is_critical(&p));
        assert!(is_critical(&pod("q", None, SYSTEM_CRITICAL_PRIORITY)));
    }
}
