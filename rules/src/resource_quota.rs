//! ResourceQuota: what an object counts against a namespace's quotas
//! (kube-apiserver's quota evaluators), which quotas a pod falls under
//! (scopes), and whether a new object fits, in the ResourceQuota
//! admission's words. Amounts are exact (nano-units).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use crate::qos::QosClass;
use crate::quantity::{self, NANOS_PER_UNIT, QuantityError};
use crate::resources::{self, RequestOptions};

/// Resource name → exact amount.
pub type Usage = BTreeMap<String, i128>;

/// The object-count name of a kind (`count/deployments.apps`, and the
/// legacy core names that quotas also accept).
pub fn count_names(group: &str, plural: &str) -> Vec<String> {
    let mut names = vec![if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }];
    if group.is_empty()
        && matches!(
            plural,
            "pods"
                | "services"
                | "secrets"
                | "configmaps"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        names.push(plural.to_owned());
    }
    names
}

/// A pod that has ended no longer counts (`QuotaV1Pod`).
pub fn pod_counts(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

fn pod_limits(pod: &Pod) -> Result<Usage, QuantityError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Usage::new());
    };
    let mut sum = Usage::new();
    for c in &spec.containers {
        for (k, v) in c.resources.iter().flat_map(|r| r.limits.iter().flatten()) {
            *sum.entry(k.clone()).or_default() += quantity::nano_value(v)?;
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in c.resources.iter().flat_map(|r| r.limits.iter().flatten()) {
            let n = quantity::nano_value(v)?;
            let e = sum.entry(k.clone()).or_default();
            *e = (*e).max(n);
        }
    }
    Ok(sum)
}

/// What one pod uses of quota (`podComputeUsageHelper`): its count, and
/// `requests.*` (also under the bare names `cpu`, `memory`) and `limits.*`.
pub fn pod_usage(pod: &Pod) -> Result<Usage, QuantityError> {
    let mut u = Usage::new();
    for n in count_names("", "pods") {
        u.insert(n, NANOS_PER_UNIT);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(u);
    };
    let requests = resources::pod_requests(spec, RequestOptions::default())?;
    for (name, amount) in requests.iter() {
        u.insert(format!("requests.{name}"), amount);
        if matches!(name, "cpu" | "memory" | "ephemeral-storage") {
            u.insert(name.to_owned(), amount);
        }
    }
    for (name, amount) in pod_limits(pod)? {
        u.insert(format!("limits.{name}"), amount);
    }
    Ok(u)
}

/// What an object of `group`/`plural` uses: its count, plus a pod's
/// compute, a Service's node ports and load balancers, a claim's storage.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Result<Usage, QuantityError> {
    let mut u = Usage::new();
    match (group, plural) {
        ("", "pods") => {
            if let Ok(pod) = serde_json::from_value::<Pod>(obj.clone()) {
                return pod_usage(&pod);
            }
        }
        ("", "services") => {
            if let Ok(svc) = serde_json::from_value::<Service>(obj.clone()) {
                let spec = svc.spec.unwrap_or_default();
                let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
                if matches!(ty, "NodePort" | "LoadBalancer") {
                    let ports = spec.ports.map_or(0, |p| p.len()) as i128;
                    u.insert("services.nodeports".into(), ports * NANOS_PER_UNIT);
                }
                if ty == "LoadBalancer" {
                    u.insert("services.loadbalancers".into(), NANOS_PER_UNIT);
                }
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(s) = obj["spec"]["resources"]["requests"]["storage"].as_str() {
                u.insert(
                    "requests.storage".into(),
                    quantity::nano_value(&Quantity(s.to_owned()))?,
                );
            }
        }
        _ => {}
    }
    for n in count_names(group, plural) {
        u.insert(n, NANOS_PER_UNIT);
    }
    Ok(u)
}

/// Whether a quota's scopes take in this pod (`podMatchesScopeFunc`).
/// A quota with scopes counts pods only.
pub fn scopes_match(quota: &ResourceQuota, pod: Option<&Pod>) -> bool {
    let spec = quota.spec.clone().unwrap_or_default();
    let scopes = spec.scopes.unwrap_or_default();
    let selector = spec
        .scope_selector
        .map(|s| s.match_expressions.unwrap_or_default())
        .unwrap_or_default();
    if scopes.is_empty() && selector.is_empty() {
        return true;
    }
    let Some(pod) = pod else {
        return false;
    };
    let pspec = pod.spec.clone().unwrap_or_default();
    let terminating = pspec.active_deadline_seconds.is_some();
    let best_effort = QosClass::from_pod(&pspec).is_ok_and(|q| q == QosClass::BestEffort);
    let class = pspec.priority_class_name.unwrap_or_default();
    let scope_ok = |s: &str| match s {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        _ => false,
    };
    scopes.iter().all(|s| scope_ok(s))
        && selector.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            match (e.scope_name.as_str(), e.operator.as_str()) {
                ("PriorityClass", "In") => values.contains(&class),
                ("PriorityClass", "NotIn") => !values.contains(&class),
                ("PriorityClass", "Exists") => !class.is_empty(),
                ("PriorityClass", "DoesNotExist") => class.is_empty(),
                (scope, _) => scope_ok(scope),
            }
        })
}

/// The quota's hard limits, exact.
pub fn hard(quota: &ResourceQuota) -> Result<Usage, QuantityError> {
    quota
        .spec
        .iter()
        .flat_map(|s| s.hard.iter().flatten())
        .map(|(k, v)| Ok((k.clone(), quantity::nano_value(v)?)))
        .collect()
}

/// The usage restricted to what the quota limits, in `status.used` form.
pub fn used_status(hard: &Usage, used: &Usage) -> BTreeMap<String, Quantity> {
    hard.keys()
        .map(|k| {
            let v = used.get(k).copied().unwrap_or(0);
            (
                k.clone(),
                Quantity(quantity::format_nanos(v, resource_of(k))),
            )
        })
        .collect()
}

/// `requests.cpu` → `cpu`, for writing an amount the way its resource is.
fn resource_of(name: &str) -> &str {
    name.rsplit('.')
        .next()
        .filter(|_| name.starts_with("requests.") || name.starts_with("limits."))
        .unwrap_or(name)
}

fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={}", quantity::format_nanos(*v, resource_of(k))))
        .collect::<Vec<_>>()
        .join(",")
}

/// Compute resources a quota may require every container to name.
const COMPUTE: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The resources a quota tracks that some container of the pod leaves
/// unset (`enforcePodContainerConstraints`), worded as the admission
/// writes them: `limits.cpu for: app; requests.memory for: app, side`.
fn missing(hard: &Usage, pod: &Pod) -> Option<String> {
    let required: Vec<&str> = COMPUTE
        .into_iter()
        .filter(|r| hard.contains_key(*r))
        .collect();
    let mut by_resource: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let res = c.resources.clone().unwrap_or_default();
        let req = res.requests.unwrap_or_default();
        let lim = res.limits.unwrap_or_default();
        for r in &required {
            let named = match *r {
                "cpu" | "requests.cpu" => req.contains_key("cpu"),
                "memory" | "requests.memory" => req.contains_key("memory"),
                "limits.cpu" => lim.contains_key("cpu"),
                _ => lim.contains_key("memory"),
            };
            if !named {
                by_resource.entry(r).or_default().push(c.name.clone());
            }
        }
    }
    (!by_resource.is_empty()).then(|| {
        by_resource
            .iter()
            .map(|(r, cs)| format!("{r} for: {}", cs.join(",")))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Whether an object using `delta` fits a quota already at `used`; the
/// refusal in the ResourceQuota admission's words otherwise.
pub fn admit(
    name: &str,
    hard: &Usage,
    used: &Usage,
    delta: &Usage,
    pod: Option<&Pod>,
) -> Result<(), String> {
    if let Some(pod) = pod
        && let Some(what) = missing(hard, pod)
    {
        return Err(format!("failed quota: {name}: must specify {what}"));
    }
    let mut requested = Usage::new();
    let mut was = Usage::new();
    let mut limited = Usage::new();
    for (k, d) in delta {
        let Some(h) = hard.get(k) else { continue };
        let u = used.get(k).copied().unwrap_or(0);
        if *d > 0 && u + d > *h {
            requested.insert(k.clone(), *d);
            was.insert(k.clone(), u);
            limited.insert(k.clone(), *h);
        }
    }
    if requested.is_empty() {
        return Ok(());
    }
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&requested),
        pretty(&was),
        pretty(&limited)
    ))
}

/// Adds `b` into `a`.
pub fn add(a: &mut Usage, b: &Usage) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota(spec: Value) -> ResourceQuota {
        serde_json::from_value(json!({"metadata": {"name": "compute"}, "spec": spec})).unwrap()
    }

    fn pod(resources: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "resources": resources}]}}))
        .unwrap()
    }

    #[test]
    fn a_pod_uses_its_count_requests_and_limits() {
        let u = pod_usage(&pod(
            json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}}),
        ))
        .unwrap();
        let q = |s: &str| quantity::nano_value(&Quantity(s.into())).unwrap();
        assert_eq!(u["pods"], NANOS_PER_UNIT);
        assert_eq!(u["count/pods"], NANOS_PER_UNIT);
        assert_eq!(u["requests.cpu"], q("250m"));
        assert_eq!(u["cpu"], q("250m"));
        assert_eq!(u["requests.memory"], q("64Mi"));
        assert_eq!(u["limits.cpu"], q("500m"));
        assert!(!u.contains_key("limits.memory"));
    }

    #[test]
    fn a_pod_over_the_quota_is_refused_with_what_it_asked_and_what_was_used() {
        let qt = quota(json!({"hard": {"requests.cpu": "1", "pods": "10"}}));
        let hard = hard(&qt).unwrap();
        let p = pod(json!({"requests": {"cpu": "700m"}}));
        let delta = pod_usage(&p).unwrap();
        let mut used = Usage::new();
        assert_eq!(admit("compute", &hard, &used, &delta, Some(&p)), Ok(()));
        add(&mut used, &delta);
        assert_eq!(
            admit("compute", &hard, &used, &delta, Some(&p)).unwrap_err(),
            "exceeded quota: compute, requested: requests.cpu=700m, used: requests.cpu=700m, limited: requests.cpu=1"
        );
        assert_eq!(
            used_status(&hard, &used),
            BTreeMap::from([
                ("pods".to_string(), Quantity("1".into())),
                ("requests.cpu".to_string(), Quantity("700m".into()))
            ])
        );
    }

    #[test]
    fn a_compute_quota_needs_every_container_to_name_the_resource() {
        let qt = quota(json!({"hard": {"requests.cpu": "1", "limits.memory": "1Gi"}}));
        let p = pod(json!({}));
        assert_eq!(
            admit(
                "mem-cpu",
                &hard(&qt).unwrap(),
                &Usage::new(),
                &pod_usage(&p).unwrap(),
                Some(&p)
            )
            .unwrap_err(),
            "failed quota: mem-cpu: must specify limits.memory for: app; requests.cpu for: app"
        );
    }

    #[test]
    fn scopes_sort_pods_by_qos_deadline_and_priority_class() {
        let best_effort = quota(json!({"hard": {"pods": "1"}, "scopes": ["BestEffort"]}));
        let high = quota(
            json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
        );
        let plain = pod(json!({}));
        let burstable = pod(json!({"requests": {"cpu": "1"}}));
        assert!(scopes_match(&best_effort, Some(&plain)));
        assert!(!scopes_match(&best_effort, Some(&burstable)));
        assert!(
            !scopes_match(&best_effort, None),
            "scoped quotas count pods only"
        );
        let mut urgent = plain.clone();
        urgent.spec.as_mut().unwrap().priority_class_name = Some("high".into());
        assert!(scopes_match(&high, Some(&urgent)));
        assert!(!scopes_match(&high, Some(&plain)));
    }

    #[test]
    fn objects_count_under_their_group_and_legacy_names() {
        assert_eq!(
            count_names("apps", "deployments"),
            ["count/deployments.apps"]
        );
        assert_eq!(
            count_names("", "configmaps"),
            ["count/configmaps", "configmaps"]
        );
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc).unwrap();
        assert_eq!(u["services.nodeports"], 2 * NANOS_PER_UNIT);
        assert_eq!(u["services"], NANOS_PER_UNIT);
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(
            usage("", "persistentvolumeclaims", &pvc).unwrap()["requests.storage"],
            (1i128 << 30) * NANOS_PER_UNIT
        );
    }
}
