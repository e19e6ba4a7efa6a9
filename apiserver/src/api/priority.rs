//! The Priority admission plugin: a new pod's `priorityClassName` (or the
//! `globalDefault` class) becomes `spec.priority` and `preemptionPolicy`;
//! an unknown class, or a hand-set priority that disagrees, is refused in
//! kube-apiserver's words. Also: one `globalDefault` class at most, and the
//! built-in `system-*` classes made at bootstrap.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{Api, ApiResult, object};
use crate::kinds::scheduling::SYSTEM_PRIORITY_CLASSES;
use crate::status::ApiError;

impl Api {
    fn priority_classes_kind(&self) -> std::sync::Arc<dyn crate::kinds::Kind> {
        self.kind("scheduling.k8s.io", "v1", "priorityclasses")
    }

    async fn priority_classes(&self) -> ApiResult<Vec<Value>> {
        let kind = self.priority_classes_kind();
        let (kvs, _) = self.store.list(&kind.info().key_prefix(None)).await?;
        Ok(kvs.iter().map(object::decode).collect())
    }

    /// Resolves a new pod's priority from its class.
    pub(super) async fn admit_pod_priority(&self, pod: &mut Pod) -> ApiResult<()> {
        let pods = self.kind("", "v1", "pods");
        let name = pod.metadata.name.clone().unwrap_or_default();
        let forbidden = |why: String| ApiError::forbidden(pods.info().subject(), &name, &why);
        let spec = pod.spec.get_or_insert_with(Default::default);
        let class_name = spec.priority_class_name.clone().unwrap_or_default();
        let classes = self.priority_classes().await?;
        let class = if class_name.is_empty() {
            classes.iter().find(|c| c["globalDefault"] == true)
        } else {
            Some(
                classes
                    .iter()
                    .find(|c| object::name(c) == class_name)
                    .ok_or_else(|| {
                        forbidden(format!("no PriorityClass with name {class_name} was found"))
                    })?,
            )
        };
        let (priority, policy) = match class {
            Some(c) => (
                // A class's value is an int32 (validated when it was made).
                c["value"]
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .unwrap_or(0),
                c["preemptionPolicy"].as_str().map(str::to_owned),
            ),
            None => (0, None),
        };
        if let Some(given) = spec.priority
            && given != priority
        {
            return Err(forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
        if let (Some(given), Some(p)) = (spec.preemption_policy.as_deref(), policy.as_deref())
            && given != p
        {
            return Err(forbidden(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {p} from the given PriorityClass name"
            )));
        }
        if let Some(c) = class
            && class_name.is_empty()
        {
            spec.priority_class_name = Some(object::name(c).to_owned());
        }
        spec.priority = Some(priority);
        if let Some(p) = policy {
            spec.preemption_policy = Some(p);
        }
        Ok(())
    }

    /// Only one class may be the global default.
    pub(super) async fn admit_priority_class(&self, pc: &Value) -> ApiResult<()> {
        if pc["globalDefault"] != true {
            return Ok(());
        }
        let name = object::name(pc);
        if let Some(other) = self
            .priority_classes()
            .await?
            .into_iter()
            .find(|c| c["globalDefault"] == true && object::name(c) != name)
        {
            let kind = self.priority_classes_kind();
            return Err(ApiError::forbidden(
                kind.info().subject(),
                name,
                &format!(
                    "PriorityClass {} is already marked as default. Only one default can exist",
                    object::name(&other)
                ),
            ));
        }
        Ok(())
    }

    /// `system-node-critical` and `system-cluster-critical`, as every
    /// cluster has them.
    pub(super) async fn bootstrap_priority_classes(&self) -> anyhow::Result<()> {
        let kind = self.priority_classes_kind();
        for (name, value, description) in SYSTEM_PRIORITY_CLASSES {
            if self.get(kind.as_ref(), None, name).await.is_ok() {
                continue;
            }
            let obj = json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": description,
            });
            if let Err(e) = self.create_object(kind.as_ref(), obj).await
                && e.code != 409
            {
                anyhow::bail!("creating PriorityClass {name}: {}", e.message);
            }
        }
        Ok(())
    }
}
