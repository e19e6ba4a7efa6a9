//! What a pod asks of a node (component-helpers' `resourcehelper.PodRequests`):
//! the sum of its containers' requests, or the largest init container if
//! that is more (restartable "sidecar" init containers keep running and add
//! to both), pod-level `spec.resources` where set, plus `spec.overhead`.
//! Amounts are kept exact (nano-units, as apimachinery's `Quantity.Add`)
//! and rounded up only when read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{self, NANOS_PER_UNIT, QuantityError};

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// What the scheduler assumes a container without a CPU request uses, for
/// scoring only (`DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// What it assumes for a missing memory request (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Resource amounts by name, exact (nano-units).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(BTreeMap<String, i128>);

impl Resources {
    /// Reads a `ResourceList`.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Result<Self, QuantityError> {
        let mut out = Self::default();
        for (name, q) in list {
            out.0.insert(name.clone(), quantity::nano_value(q)?);
        }
        Ok(out)
    }

    /// A node's `status.allocatable` (nothing when unreported).
    pub fn allocatable(node: &Node) -> Result<Self, QuantityError> {
        match node.status.as_ref().and_then(|s| s.allocatable.as_ref()) {
            Some(list) => Self::from_list(list),
            None => Ok(Self::default()),
        }
    }

    /// One amount in whole units (e.g. `milli_cpu` is `set_milli`'s inverse).
    pub fn set_units(&mut self, name: &str, units: i64) {
        self.0
            .insert(name.to_owned(), i128::from(units) * NANOS_PER_UNIT);
    }

    pub fn set_milli(&mut self, name: &str, milli: i64) {
        self.0
            .insert(name.to_owned(), i128::from(milli) * (NANOS_PER_UNIT / 1000));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The exact amount in nano-units (0 when absent).
    pub fn nanos(&self, name: &str) -> i128 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `MilliValue()` of one amount, rounded up.
    pub fn milli(&self, name: &str) -> i64 {
        quantity::nanos_to_ceil(self.nanos(name), NANOS_PER_UNIT / 1000)
    }

    /// `Value()` of one amount, rounded up.
    pub fn units(&self, name: &str) -> i64 {
        quantity::nanos_to_ceil(self.nanos(name), NANOS_PER_UNIT)
    }

    pub fn milli_cpu(&self) -> i64 {
        self.milli(CPU)
    }

    pub fn memory(&self) -> i64 {
        self.units(MEMORY)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Each amount becomes the larger of the two (`maxResourceList`).
    pub fn max_with(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            let e = self.0.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(|v| *v == 0)
    }
}

/// How to read a container's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Put the scheduler's defaults in for a missing CPU or memory request
    /// (`NonMissingContainerRequests`), as scoring does so that pods
    /// without requests still spread.
    pub non_zero_defaults: bool,
    /// Leave `spec.overhead` out.
    pub exclude_overhead: bool,
}

fn container_requests(c: &Container, opts: RequestOptions) -> Result<Resources, QuantityError> {
    let mut r = match c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        Some(list) => Resources::from_list(list)?,
        None => Resources::default(),
    };
    if opts.non_zero_defaults {
        if !r.contains(CPU) {
            r.set_milli(CPU, DEFAULT_MILLI_CPU_REQUEST);
        }
        if !r.contains(MEMORY) {
            r.set_units(MEMORY, DEFAULT_MEMORY_REQUEST);
        }
    }
    Ok(r)
}

/// `resourcehelper.PodRequests`: max(sum of containers + sidecars, each
/// init container with the sidecars started before it), pod-level
/// requests for cpu and memory when set, plus overhead.
pub fn pod_requests(spec: &PodSpec, opts: RequestOptions) -> Result<Resources, QuantityError> {
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, opts)?);
    }
    // Restartable init containers keep running beside the app containers:
    // they add to the sum, and every later init container runs next to them.
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(c, opts)?;
        let during = if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut t = own;
            t.add(&sidecars);
            t
        };
        init_max.max_with(&during);
    }
    reqs.max_with(&init_max);
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let pod_level = Resources::from_list(pod_level)?;
        for name in [CPU, MEMORY] {
            if pod_level.contains(name) {
                reqs.0.insert(name.to_owned(), pod_level.nanos(name));
            }
        }
    }
    if !opts.exclude_overhead
        && let Some(overhead) = &spec.overhead
    {
        reqs.add(&Resources::from_list(overhead)?);
    }
    Ok(reqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn list(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    fn container(name: &str, requests: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            resources: (!requests.is_empty()).then(|| ResourceRequirements {
                requests: Some(list(requests)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sidecar(name: &str, requests: &[(&str, &str)]) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..container(name, requests)
        }
    }

    #[test]
    fn containers_add_up_and_the_largest_init_container_wins() {
        let spec = PodSpec {
            containers: vec![
                container("a", &[("cpu", "100m"), ("memory", "64Mi")]),
                container("b", &[("cpu", "0.2"), ("nvidia.com/gpu", "1")]),
            ],
            init_containers: Some(vec![
                container("i1", &[("cpu", "500m")]),
                container("i2", &[("memory", "32Mi")]),
            ]),
            overhead: Some(list(&[("cpu", "10m")])),
            ..Default::default()
        };
        let r = pod_requests(&spec, RequestOptions::default()).unwrap();
        assert_eq!(r.milli_cpu(), 510, "max(300m, 500m) + 10m overhead");
        assert_eq!(r.memory(), 64 << 20);
        assert_eq!(r.units("nvidia.com/gpu"), 1);
        let r = pod_requests(
            &spec,
            RequestOptions {
                exclude_overhead: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.milli_cpu(), 500);
    }

    #[test]
    fn sidecars_run_beside_later_init_containers_and_the_app() {
        let spec = PodSpec {
            containers: vec![container("app", &[("cpu", "100m")])],
            init_containers: Some(vec![
                sidecar("proxy", &[("cpu", "200m")]),
                container("migrate", &[("cpu", "250m")]),
            ]),
            ..Default::default()
        };
        // app + proxy = 300m; migrate runs beside proxy: 450m.
        assert_eq!(
            pod_requests(&spec, RequestOptions::default())
                .unwrap()
                .milli_cpu(),
            450
        );
    }

    #[test]
    fn sums_are_exact_before_rounding() {
        let spec = PodSpec {
            containers: vec![
                container("a", &[("cpu", "0.0004")]),
                container("b", &[("cpu", "0.0004")]),
            ],
            ..Default::default()
        };
        assert_eq!(
            pod_requests(&spec, RequestOptions::default())
                .unwrap()
                .milli_cpu(),
            1
        );
    }

    #[test]
    fn scoring_defaults_fill_missing_requests() {
        let spec = PodSpec {
            containers: vec![container("a", &[]), container("b", &[("cpu", "1")])],
            ..Default::default()
        };
        let plain = pod_requests(&spec, RequestOptions::default()).unwrap();
        assert_eq!((plain.milli_cpu(), plain.memory()), (1000, 0));
        let r = pod_requests(
            &spec,
            RequestOptions {
                non_zero_defaults: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.milli_cpu(), 1100);
        assert_eq!(r.memory(), 2 * DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn pod_level_requests_replace_the_containers_sum() {
        let spec = PodSpec {
            containers: vec![container("a", &[("cpu", "100m"), ("memory", "1Gi")])],
            resources: Some(ResourceRequirements {
                requests: Some(list(&[("cpu", "2")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&spec, RequestOptions::default()).unwrap();
        assert_eq!((r.milli_cpu(), r.memory()), (2000, 1 << 30));
    }

    #[test]
    fn bad_quantities_are_errors() {
        let spec = PodSpec {
            containers: vec![container("a", &[("cpu", "lots")])],
            ..Default::default()
        };
        assert!(pod_requests(&spec, RequestOptions::default()).is_err());
    }
}
