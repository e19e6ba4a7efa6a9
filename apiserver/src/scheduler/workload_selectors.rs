//! The label selectors of Services, ReplicationControllers and ReplicaSets
//! (the listers behind kube-scheduler's `helper.DefaultSelector`): a pod
//! without `topologySpreadConstraints` of its own is spread by the
//! profile's default constraints among the pods these select together
//! with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kubelab_rules::selector;

/// (namespace, name)
type Key = (String, String);

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

#[derive(Debug, Default)]
pub struct WorkloadSelectors {
    /// Services with a selector (a service without one selects nothing).
    services: BTreeMap<Key, BTreeMap<String, String>>,
    replication_controllers: BTreeMap<Key, BTreeMap<String, String>>,
    replica_sets: BTreeMap<Key, LabelSelector>,
}

/// An object whose selector the default spreading reads.
pub trait SelectorSource {
    fn put(self, into: &mut WorkloadSelectors);
    fn remove(&self, from: &mut WorkloadSelectors);
    /// Forgets every object of this kind (before a relist refills them).
    fn clear(from: &mut WorkloadSelectors);
}

impl SelectorSource for Service {
    fn put(self, into: &mut WorkloadSelectors) {
        let k = key(&self.metadata);
        match self.spec.and_then(|s| s.selector) {
            Some(sel) => into.services.insert(k, sel),
            None => into.services.remove(&k),
        };
    }
    fn remove(&self, from: &mut WorkloadSelectors) {
        from.services.remove(&key(&self.metadata));
    }
    fn clear(from: &mut WorkloadSelectors) {
        from.services.clear();
    }
}

impl SelectorSource for ReplicationController {
    fn put(self, into: &mut WorkloadSelectors) {
        let k = key(&self.metadata);
        let sel = self.spec.and_then(|s| s.selector).unwrap_or_default();
        into.replication_controllers.insert(k, sel);
    }
    fn remove(&self, from: &mut WorkloadSelectors) {
        from.replication_controllers.remove(&key(&self.metadata));
    }
    fn clear(from: &mut WorkloadSelectors) {
        from.replication_controllers.clear();
    }
}

impl SelectorSource for ReplicaSet {
    fn put(self, into: &mut WorkloadSelectors) {
        let k = key(&self.metadata);
        let sel = self.spec.map(|s| s.selector).unwrap_or_default();
        into.replica_sets.insert(k, sel);
    }
    fn remove(&self, from: &mut WorkloadSelectors) {
        from.replica_sets.remove(&key(&self.metadata));
    }
    fn clear(from: &mut WorkloadSelectors) {
        from.replica_sets.clear();
    }
}

impl WorkloadSelectors {
    pub const fn new() -> Self {
        WorkloadSelectors {
            services: BTreeMap::new(),
            replication_controllers: BTreeMap::new(),
            replica_sets: BTreeMap::new(),
        }
    }

    /// `DefaultSelector`: the selectors of the pod's namespace's Services
    /// that select it, merged, and its controlling ReplicationController's
    /// or ReplicaSet's; `None` when that selects nothing.
    pub fn default_selector(&self, pod: &Pod) -> Option<LabelSelector> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut match_labels = BTreeMap::new();
        let mut match_expressions: Vec<LabelSelectorRequirement> = Vec::new();
        let in_ns = |m: &BTreeMap<Key, BTreeMap<String, String>>| {
            m.range((ns.clone(), String::new())..)
                .take_while(|((n, _), _)| *n == ns)
                .map(|(_, s)| s.clone())
                .collect::<Vec<_>>()
        };
        for sel in in_ns(&self.services) {
            if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                match_labels.extend(sel);
            }
        }
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        if let Some(o) = owner {
            let k = (ns.clone(), o.name.clone());
            match (o.api_version.as_str(), o.kind.as_str()) {
                ("v1", "ReplicationController") => {
                    if let Some(sel) = self.replication_controllers.get(&k) {
                        match_labels.extend(sel.clone());
                    }
                }
                ("apps/v1", "ReplicaSet") => {
                    if let Some(sel) = self.replica_sets.get(&k)
                        && selector::validate(sel).is_ok()
                    {
                        for (k, v) in sel.match_labels.iter().flatten() {
                            match_expressions.push(LabelSelectorRequirement {
                                key: k.clone(),
                                operator: "In".into(),
                                values: Some(vec![v.clone()]),
                            });
                        }
                        match_expressions.extend(sel.match_expressions.iter().flatten().cloned());
                    }
                }
                _ => {}
            }
        }
        let sel = LabelSelector {
            match_labels: Some(match_labels),
            match_expressions: Some(match_expressions),
        };
        (!selector::is_empty(&sel)).then_some(sel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn service(ns: &str, name: &str, sel: Option<&[(&str, &str)]>) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                selector: sel.map(labels),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(ns: &str, l: &[(&str, &str)], owner: Option<(&str, &str, &str)>) -> Pod {
        let mut m = meta(ns, "p");
        m.labels = Some(labels(l));
        m.owner_references = owner.map(|(api_version, kind, name)| {
            vec![OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: name.into(),
                uid: "u".into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        Pod {
            metadata: m,
            ..Default::default()
        }
    }

    #[test]
    fn services_selecting_the_pod_and_its_replica_set_make_the_selector() {
        let mut w = WorkloadSelectors::new();
        service("default", "web", Some(&[("app", "web")])).put(&mut w);
        service("default", "other", Some(&[("app", "db")])).put(&mut w);
        service("elsewhere", "web", Some(&[("tier", "front")])).put(&mut w);
        service("default", "headless", None).put(&mut w);
        ReplicaSet {
            metadata: meta("default", "web-abc"),
            spec: Some(ReplicaSetSpec {
                selector: LabelSelector {
                    match_labels: Some(labels(&[("pod-template-hash", "abc")])),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
        .put(&mut w);

        let p = pod(
            "default",
            &[
                ("app", "web"),
                ("tier", "front"),
                ("pod-template-hash", "abc"),
            ],
            Some(("apps/v1", "ReplicaSet", "web-abc")),
        );
        let sel = w.default_selector(&p).unwrap();
        assert_eq!(sel.match_labels, Some(labels(&[("app", "web")])));
        let exprs = sel.match_expressions.unwrap();
        assert_eq!(exprs.len(), 1);
        assert_eq!(exprs[0].key, "pod-template-hash");
        assert_eq!(exprs[0].operator, "In");

        // Nothing selects a bare pod with other labels: no default spreading.
        assert!(
            w.default_selector(&pod("default", &[("x", "y")], None))
                .is_none()
        );
        // A deleted service no longer counts.
        service("default", "web", None).remove(&mut w);
        assert!(
            w.default_selector(&pod("default", &[("app", "web")], None))
                .is_none()
        );
    }
}
