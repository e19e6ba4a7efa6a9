//! A pod's QoS class and the resource sums it and the node's cgroups are
//! computed from (`GetPodQOS`, `PodRequests`/`PodLimits` of component-helpers):
//! one implementation for the apiserver's `status.qosClass` and the node's
//! cgroup placement, so a request of `1` against a limit of `1000m` is
//! Guaranteed everywhere.
//!
//! Amounts are summed in nano-units (i128), the precision apimachinery keeps, so a
//! sum is exactly Go's `Quantity.Add`; callers round up only at the end, like
//! `MilliValue()`/`Value()` on the summed quantity.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{self, QuantityError};

/// A pod's quality-of-service class (`status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A resource quantity that could not be used; `field` is where it is in the pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {source}")]
pub struct ResourceError {
    pub field: String,
    pub source: QuantityError,
}

impl QosClass {
    /// Kubernetes' `GetPodQOS`: over init and app containers, considering only
    /// positive cpu and memory amounts, with requests defaulted to limits. Guaranteed
    /// iff every container has cpu and memory limits and the summed requests equal
    /// the summed limits; BestEffort iff there are no requests and no limits at all.
    pub fn from_pod(spec: &PodSpec) -> Result<Self, ResourceError> {
        Ok(PodResources::from_spec(spec)?.qos())
    }

    /// The name Kubernetes uses (`Guaranteed`, `Burstable`, `BestEffort`).
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cpu and memory entries of a ResourceList, in nano-units; `None` = absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Amounts {
    pub cpu: Option<i128>,
    pub memory: Option<i128>,
}

impl Amounts {
    fn parse(
        list: Option<&BTreeMap<String, Quantity>>,
        field: &str,
    ) -> Result<Self, ResourceError> {
        let get = |name: &str| -> Result<Option<i128>, ResourceError> {
            let Some(q) = list.and_then(|l| l.get(name)) else {
                return Ok(None);
            };
            let err = |source| ResourceError {
                field: format!("{field}.{name}"),
                source,
            };
            let nanos = quantity::nano_value(q).map_err(err)?;
            if nanos < 0 {
                return Err(err(QuantityError::Negative { value: q.0.clone() }));
            }
            Ok(Some(nanos))
        };
        Ok(Amounts {
            cpu: get("cpu")?,
            memory: get("memory")?,
        })
    }

    /// `addResourceList`: sums what both have, copies what only `other` has.
    pub fn add(&mut self, other: &Amounts) {
        fn add(a: &mut Option<i128>, b: Option<i128>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        }
        add(&mut self.cpu, other.cpu);
        add(&mut self.memory, other.memory);
    }

    /// `maxResourceList`: per resource, the larger (present beats absent).
    pub fn max(&mut self, other: &Amounts) {
        fn max(a: &mut Option<i128>, b: Option<i128>) {
            if let Some(b) = b {
                *a = Some(a.map_or(b, |a| a.max(b)));
            }
        }
        max(&mut self.cpu, other.cpu);
        max(&mut self.memory, other.memory);
    }

    /// Only the strictly positive entries (what `GetPodQOS` looks at).
    fn positive(&self) -> Amounts {
        Amounts {
            cpu: self.cpu.filter(|&v| v > 0),
            memory: self.memory.filter(|&v| v > 0),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.cpu.is_some()) + usize::from(self.memory.is_some())
    }
}

/// One container's requests (defaulted to limits, as the API server's defaulting
/// does) and limits.
#[derive(Debug, Clone, Copy)]
pub struct ContainerResources {
    pub requests: Amounts,
    pub limits: Amounts,
}

impl ContainerResources {
    pub fn from_container(c: &Container, field: &str) -> Result<Self, ResourceError> {
        let res = c.resources.as_ref();
        let limits = Amounts::parse(
            res.and_then(|r| r.limits.as_ref()),
            &format!("{field}.resources.limits"),
        )?;
        let mut requests = Amounts::parse(
            res.and_then(|r| r.requests.as_ref()),
            &format!("{field}.resources.requests"),
        )?;
        requests.cpu = requests.cpu.or(limits.cpu);
        requests.memory = requests.memory.or(limits.memory);
        Ok(ContainerResources { requests, limits })
    }
}

/// Which limits every container declared (kubelet's `cpuLimitsDeclared` /
/// `memoryLimitsDeclared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    pub cpu: bool,
    pub memory: bool,
}

/// A pod's containers' resources, parsed once.
pub struct PodResources {
    app: Vec<ContainerResources>,
    /// Init containers in order, with whether each is a restartable (sidecar) one.
    init: Vec<(ContainerResources, bool)>,
    overhead: Amounts,
}

impl PodResources {
    pub fn from_spec(spec: &PodSpec) -> Result<Self, ResourceError> {
        let app = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| ContainerResources::from_container(c, &format!("spec.containers[{i}]")))
            .collect::<Result<_, _>>()?;
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| {
                let r =
                    ContainerResources::from_container(c, &format!("spec.initContainers[{i}]"))?;
                Ok((r, c.restart_policy.as_deref() == Some("Always")))
            })
            .collect::<Result<_, _>>()?;
        let overhead = Amounts::parse(spec.overhead.as_ref(), "spec.overhead")?;
        Ok(PodResources {
            app,
            init,
            overhead,
        })
    }

    fn all(&self) -> impl Iterator<Item = &ContainerResources> {
        self.app.iter().chain(self.init.iter().map(|(c, _)| c))
    }

    pub fn qos(&self) -> QosClass {
        let mut requests = Amounts::default();
        let mut limits = Amounts::default();
        let mut guaranteed = true;
        for c in self.all() {
            requests.add(&c.requests.positive());
            let found = c.limits.positive();
            limits.add(&found);
            if found.cpu.is_none() || found.memory.is_none() {
                guaranteed = false;
            }
        }
        if requests.len() == 0 && limits.len() == 0 {
            return QosClass::BestEffort;
        }
        let matches = |req: Option<i128>, lim: Option<i128>| req.is_none() || req == lim;
        if guaranteed
            && matches(requests.cpu, limits.cpu)
            && matches(requests.memory, limits.memory)
            && requests.len() == limits.len()
        {
            QosClass::Guaranteed
        } else {
            QosClass::Burstable
        }
    }

    /// `PodRequests`: the larger of the app containers' sum and any init container's
    /// need (its own requests plus the restartable init containers started before
    /// it), with restartable init containers also counted with the app containers;
    /// plus the pod overhead.
    pub fn requests(&self) -> Amounts {
        let mut requests = self.aggregate(|c| c.requests, |_| {});
        requests.add(&self.overhead);
        requests
    }

    /// `PodLimits`, and whether every container (init containers as seen with the
    /// sidecars before them) declared a non-zero cpu and memory limit.
    pub fn limits(&self) -> (Amounts, Declared) {
        let mut declared = Declared {
            cpu: true,
            memory: true,
        };
        let mut limits = self.aggregate(
            |c| c.limits,
            |l| {
                declared.cpu &= l.cpu.is_some_and(|v| v != 0);
                declared.memory &= l.memory.is_some_and(|v| v != 0);
            },
        );
        // Overhead is added only to limits that are set and non-zero.
        for (lim, over) in [
            (&mut limits.cpu, self.overhead.cpu),
            (&mut limits.memory, self.overhead.memory),
        ] {
            if let (Some(l), Some(o)) = (lim.as_mut(), over)
                && *l != 0
            {
                *l += o;
            }
        }
        (limits, declared)
    }

    fn aggregate(
        &self,
        pick: impl Fn(&ContainerResources) -> Amounts,
        mut each: impl FnMut(&Amounts),
    ) -> Amounts {
        let mut total = Amounts::default();
        for c in &self.app {
            let a = pick(c);
            each(&a);
            total.add(&a);
        }
        let mut sidecars = Amounts::default();
        let mut init_max = Amounts::default();
        for (c, restartable) in &self.init {
            let a = pick(c);
            let effective = if *restartable {
                total.add(&a);
                sidecars.add(&a);
                sidecars
            } else {
                let mut t = Amounts::default();
                t.add(&a);
                t.add(&sidecars);
                t
            };
            each(&effective);
            init_max.max(&effective);
        }
        total.max(&init_max);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("valid PodSpec")
    }

    fn res(requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
        json!({ "requests": requests, "limits": limits })
    }

    #[test]
    fn qos_classes() {
        let guaranteed = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"cpu": "500m", "memory": "64Mi"}), json!({"cpu": "0.5", "memory": "67108864"}))},
        ]}));
        assert_eq!(
            QosClass::from_pod(&guaranteed).unwrap(),
            QosClass::Guaranteed
        );

        // Only limits given: requests default to them.
        let limits_only = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "128Mi"}}},
        ]}));
        assert_eq!(
            QosClass::from_pod(&limits_only).unwrap(),
            QosClass::Guaranteed
        );

        let best_effort =
            pod(json!({"containers": [{"name": "a"}, {"name": "b", "resources": {}}]}));
        assert_eq!(
            QosClass::from_pod(&best_effort).unwrap(),
            QosClass::BestEffort
        );

        // Zero amounts don't count.
        let zeros = pod(
            json!({"containers": [{"name": "a", "resources": res(json!({"cpu": "0"}), json!({"memory": "0"}))}]}),
        );
        assert_eq!(QosClass::from_pod(&zeros).unwrap(), QosClass::BestEffort);

        let request_below_limit = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"cpu": "100m", "memory": "64Mi"}), json!({"cpu": "200m", "memory": "64Mi"}))},
        ]}));
        assert_eq!(
            QosClass::from_pod(&request_below_limit).unwrap(),
            QosClass::Burstable
        );

        let no_memory_limit =
            pod(json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]}));
        assert_eq!(
            QosClass::from_pod(&no_memory_limit).unwrap(),
            QosClass::Burstable
        );

        // One container without limits makes the pod Burstable.
        let mixed = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b"},
        ]}));
        assert_eq!(QosClass::from_pod(&mixed).unwrap(), QosClass::Burstable);

        // Init containers count too.
        let init_unlimited = pod(json!({
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
        }));
        assert_eq!(
            QosClass::from_pod(&init_unlimited).unwrap(),
            QosClass::Burstable
        );
        let init_requests_only = pod(json!({
            "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "1m"}}}],
            "containers": [{"name": "a"}],
        }));
        assert_eq!(
            QosClass::from_pod(&init_requests_only).unwrap(),
            QosClass::Burstable
        );

        // An explicit zero request next to limits: the summed requests lack memory.
        let zero_request = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"memory": "0"}), json!({"cpu": "1", "memory": "1Gi"}))},
        ]}));
        assert_eq!(
            QosClass::from_pod(&zero_request).unwrap(),
            QosClass::Burstable
        );

        // Non-cgroup resources are ignored.
        let gpu = pod(
            json!({"containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}),
        );
        assert_eq!(QosClass::from_pod(&gpu).unwrap(), QosClass::BestEffort);

        assert_eq!(QosClass::Guaranteed.as_str(), "Guaranteed");
        assert_eq!(QosClass::Burstable.as_str(), "Burstable");
        assert_eq!(QosClass::BestEffort.to_string(), "BestEffort");
    }

    #[test]
    fn equal_amounts_in_other_units_are_equal() {
        let spec = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"cpu": "1", "memory": "1Gi"}), json!({"cpu": "1000m", "memory": "1024Mi"}))},
        ]}));
        assert_eq!(QosClass::from_pod(&spec).unwrap(), QosClass::Guaranteed);
    }
}
