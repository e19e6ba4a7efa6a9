//! The RuntimeClass admission plugin: a new pod naming a RuntimeClass gets
//! the class's `overhead` as `spec.overhead` and its `scheduling` merged into
//! its node selector and tolerations; an unknown class, or an overhead the
//! class does not define, is refused in kube-apiserver's words. Tolerations
//! merge as upstream's `MergeTolerations`: one covered by another goes.

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::api::node::v1::RuntimeClass;

use super::{Api, ApiResult};
use crate::status::ApiError;

impl Api {
    pub(super) async fn admit_pod_runtime_class(&self, pod: &mut Pod) -> ApiResult<()> {
        let pods = self.kind("", "v1", "pods");
        let name = pod.metadata.name.clone().unwrap_or_default();
        let forbidden = |why: String| ApiError::forbidden(pods.info().subject(), &name, &why);
        let spec = pod.spec.get_or_insert_with(Default::default);
        let class_name = spec.runtime_class_name.clone().filter(|n| !n.is_empty());
        if class_name.is_none() && spec.overhead.is_none() {
            return Ok(());
        }
        let class = match &class_name {
            None => None,
            Some(class_name) => {
                let kind = self.kind("node.k8s.io", "v1", "runtimeclasses");
                match self.get(kind.as_ref(), None, class_name).await {
                    Ok(v) => Some(
                        serde_json::from_value::<RuntimeClass>(v)
                            .map_err(|e| ApiError::internal(e.to_string()))?,
                    ),
                    Err(e) if e.code == 404 => {
                        return Err(forbidden(format!(
                            "pod rejected: RuntimeClass {class_name:?} not found"
                        )));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        apply_runtime_class(spec, class.as_ref()).map_err(forbidden)
    }
}

/// `setOverhead`, `setScheduling` and `validateOverhead` of the plugin:
/// what a pod naming `class` (`None`: no class) becomes, or why it is refused.
pub fn apply_runtime_class(spec: &mut PodSpec, class: Option<&RuntimeClass>) -> Result<(), String> {
    let class_overhead = class
        .and_then(|c| c.overhead.as_ref())
        .and_then(|o| o.pod_fixed.clone());
    match (class_overhead, &spec.overhead) {
        (None, Some(_)) => {
            return Err(
                "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
                    .into(),
            );
        }
        (Some(fixed), Some(given)) if !same_resources(&fixed, given) => {
            return Err(
                "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead".into(),
            );
        }
        (Some(fixed), _) => spec.overhead = Some(fixed),
        (None, None) => {}
    }
    let Some(scheduling) = class.and_then(|c| c.scheduling.as_ref()) else {
        return Ok(());
    };
    if let Some(class_selector) = &scheduling.node_selector {
        let selector = spec.node_selector.get_or_insert_with(Default::default);
        for (key, value) in class_selector {
            match selector.get(key) {
                Some(pod_value) if pod_value != value => {
                    return Err(format!(
                        "conflict: runtimeClass.scheduling.nodeSelector[{key}] = {value}; pod.spec.nodeSelector[{key}] = {pod_value}"
                    ));
                }
                _ => {
                    selector.insert(key.clone(), value.clone());
                }
            }
        }
    }
    // Tolerations another one covers go, the pod's own included.
    let merged = kubelab_rules::taints::merge_tolerations(
        spec.tolerations.as_deref().unwrap_or_default(),
        scheduling.tolerations.as_deref().unwrap_or_default(),
    );
    spec.tolerations = (!merged.is_empty()).then_some(merged);
    Ok(())
}

/// Resource lists equal as quantities (`1` and `1000m` are the same).
fn same_resources(
    a: &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    b: &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> bool {
    let value = |q| kubelab_rules::quantity::nano_value(q).ok();
    a.len() == b.len()
        && a.iter().all(|(k, q)| {
            b.get(k)
                .is_some_and(|other| value(q).is_some() && value(q) == value(other))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Toleration;
    use k8s_openapi::api::node::v1::{Overhead, Scheduling};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn class(overhead: Option<&[(&str, &str)]>, selector: &[(&str, &str)]) -> RuntimeClass {
        let list = |items: &[(&str, &str)]| {
            items
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        };
        RuntimeClass {
            handler: "runc".into(),
            overhead: overhead.map(|o| Overhead {
                pod_fixed: Some(list(o)),
            }),
            scheduling: Some(Scheduling {
                node_selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                tolerations: Some(vec![Toleration {
                    key: Some("sandboxed".into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_class_sets_overhead_and_scheduling() {
        let mut spec = PodSpec::default();
        let rc = class(Some(&[("cpu", "250m")]), &[("runtime", "runc")]);
        apply_runtime_class(&mut spec, Some(&rc)).unwrap();
        assert_eq!(spec.overhead.unwrap()["cpu"], Quantity("250m".into()));
        assert_eq!(spec.node_selector.unwrap()["runtime"], "runc");
        assert_eq!(spec.tolerations.unwrap().len(), 1);
    }

    #[test]
    fn tolerations_the_class_covers_are_merged_away() {
        let rc = class(None, &[]);
        let mut spec = PodSpec {
            tolerations: Some(vec![
                Toleration {
                    key: Some("sandboxed".into()),
                    operator: Some("Equal".into()),
                    value: Some("yes".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                },
                Toleration {
                    key: Some("zone".into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        apply_runtime_class(&mut spec, Some(&rc)).unwrap();
        let keys: Vec<_> = spec
            .tolerations
            .unwrap()
            .into_iter()
            .map(|t| (t.key.unwrap(), t.operator.unwrap()))
            .collect();
        assert_eq!(
            keys,
            [
                ("zone".to_string(), "Exists".to_string()),
                ("sandboxed".into(), "Exists".into())
            ]
        );
    }

    #[test]
    fn overheads_and_selectors_that_disagree_are_refused() {
        let rc = class(Some(&[("cpu", "250m")]), &[("runtime", "runc")]);
        let mut same = PodSpec {
            overhead: Some([("cpu".to_string(), Quantity("0.25".into()))].into()),
            ..Default::default()
        };
        apply_runtime_class(&mut same, Some(&rc)).unwrap();
        let mut other = PodSpec {
            overhead: Some([("cpu".to_string(), Quantity("1".into()))].into()),
            ..Default::default()
        };
        assert_eq!(
            apply_runtime_class(&mut other, Some(&rc)).unwrap_err(),
            "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
        );
        let mut no_class = PodSpec {
            overhead: Some([("cpu".to_string(), Quantity("1".into()))].into()),
            ..Default::default()
        };
        assert_eq!(
            apply_runtime_class(&mut no_class, None).unwrap_err(),
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
        );
        let mut conflict = PodSpec {
            node_selector: Some([("runtime".to_string(), "kata".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(
            apply_runtime_class(&mut conflict, Some(&rc)).unwrap_err(),
            "conflict: runtimeClass.scheduling.nodeSelector[runtime] = runc; pod.spec.nodeSelector[runtime] = kata"
        );
    }
}
