//! The PodSecurity admission plugin on writes: pods (create, and updates
//! that change what the policy judges) are refused by their namespace's
//! `enforce` level and warned by `warn`; workload resources with a pod
//! template (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
//! ReplicationController, PodTemplate) only get warnings; namespace labels
//! are validated, and a stricter enforce level warns about the pods the
//! namespace already has. The decisions are in [`crate::pod_security`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodTemplateSpec};
use serde::Deserialize;
use serde_json::Value;

use super::{Api, ApiResult, object};
use crate::kinds::Kind;
use crate::pod_security::{Decision, NamespaceDecision, Request};
use crate::rbac::admission::REQUESTER;
use crate::status::ApiError;

/// Where a kind keeps its pod template, as a JSON pointer.
fn template_pointer(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("", "podtemplates") => Some("/template"),
        ("", "replicationcontrollers")
        | ("apps", "replicasets" | "deployments" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => Some("/spec/template"),
        ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(object::meta(obj).get("labels").cloned().unwrap_or_default())
        .unwrap_or_default()
}

impl Api {
    /// Admits `obj` (replacing `old`, if any) and returns the warnings for
    /// the client. Status writes are not checked, as upstream.
    pub(super) async fn admit_pod_security(
        &self,
        kind: &dyn Kind,
        obj: &Value,
        old: Option<&Value>,
    ) -> ApiResult<Vec<String>> {
        let info = kind.info();
        let name = object::name(obj).to_owned();
        let username = REQUESTER.try_with(|r| r.user.name.clone()).ok();
        if (info.group, info.plural) == ("", "namespaces") {
            return match self
                .pod_security
                .namespace(&name, &labels(obj), old.map(labels).as_ref())
            {
                NamespaceDecision::Invalid(errs) => {
                    Err(ApiError::invalid(info.subject(), &name, &errs))
                }
                NamespaceDecision::Allowed { warnings } => Ok(warnings),
                NamespaceDecision::CheckPods(enforce) => {
                    let pods_kind = self.kind("", "v1", "pods");
                    let (kvs, _) = self
                        .store
                        .list(&pods_kind.info().key_prefix(Some(&name)))
                        .await?;
                    let pods: Vec<Pod> = kvs
                        .iter()
                        .filter_map(|kv| serde_json::from_value(object::decode(kv)).ok())
                        .collect();
                    Ok(self.pod_security.existing_pods(&name, enforce, &pods))
                }
            };
        }
        let is_pod = (info.group, info.plural) == ("", "pods");
        let pointer = template_pointer(info.group, info.plural);
        let decode = |v: &Value| -> ApiResult<Pod> {
            Pod::deserialize(v)
                .map_err(|e| ApiError::bad_request(format!("failed to decode pod: {e}")))
        };
        let p = match pointer {
            None if is_pod => {
                let old = old.map(decode).transpose()?;
                return self
                    .admit_pod_security_of(&decode(obj)?, old.as_ref())
                    .await;
            }
            None => return Ok(Vec::new()),
            Some(p) => p,
        };
        let Some(ns) = object::meta_str(obj, "namespace").map(str::to_owned) else {
            return Ok(Vec::new());
        };
        // A workload is let in when its namespace cannot be read; a pod
        // is not (upstream fails closed only for pods).
        let Ok(ns_labels) = self.namespace_labels(&ns).await else {
            return Ok(Vec::new());
        };
        let req = Request {
            namespace: &ns,
            username: username.as_deref(),
        };
        let template: Option<PodTemplateSpec> = obj
            .pointer(p)
            .and_then(|t| serde_json::from_value(t.clone()).ok());
        let meta = template
            .as_ref()
            .map(|t| t.metadata.clone().unwrap_or_default());
        let spec = template
            .as_ref()
            .map(|t| t.spec.clone().unwrap_or_default());
        let decision =
            self.pod_security
                .pod_template(req, &ns_labels, meta.as_ref().zip(spec.as_ref()));
        record_audit(&ns, &name, info.plural, &decision);
        match decision.refusal {
            Some(why) => Err(ApiError::forbidden(info.subject(), &name, &why)),
            None => Ok(decision.warnings),
        }
    }

    /// Admits a pod (replacing `old`, if any), already decoded: a new pod's
    /// admission works on its typed form throughout.
    pub(super) async fn admit_pod_security_of(
        &self,
        pod: &Pod,
        old: Option<&Pod>,
    ) -> ApiResult<Vec<String>> {
        let Some(ns) = pod.metadata.namespace.as_deref().filter(|n| !n.is_empty()) else {
            return Ok(Vec::new());
        };
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let username = REQUESTER.try_with(|r| r.user.name.clone()).ok();
        let ns_labels = self
            .namespace_labels(ns)
            .await
            .map_err(|_| ApiError::internal(format!("failed to lookup namespace {ns:?}")))?;
        let req = Request {
            namespace: ns,
            username: username.as_deref(),
        };
        let decision = self.pod_security.pod(req, &ns_labels, pod, old);
        record_audit(ns, name, "pods", &decision);
        match decision.refusal {
            Some(why) => {
                let pods = self.kind("", "v1", "pods");
                Err(ApiError::forbidden(pods.info().subject(), name, &why))
            }
            None => Ok(decision.warnings),
        }
    }

    async fn namespace_labels(&self, ns: &str) -> ApiResult<BTreeMap<String, String>> {
        let kind = self.kind("", "v1", "namespaces");
        let nsobj = self.get(kind.as_ref(), None, ns).await?;
        let typed: Namespace = serde_json::from_value(nsobj)
            .map_err(|e| ApiError::internal(format!("namespace {ns:?}: {e}")))?;
        Ok(typed.metadata.labels.unwrap_or_default())
    }
}

/// kube-apiserver puts these annotations on the request's audit event.
/// This server keeps no audit log, so audit-mode violations go to its own
/// log instead.
fn record_audit(ns: &str, name: &str, plural: &str, d: &Decision) {
    if d.audit_annotations
        .keys()
        .any(|k| k.ends_with("/audit-violations") || k.ends_with("/error"))
    {
        tracing::info!(
            namespace = ns,
            resource = plural,
            name,
            annotations = ?d.audit_annotations,
            "PodSecurity audit"
        );
    }
}
