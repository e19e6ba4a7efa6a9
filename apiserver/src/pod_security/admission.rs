//! The PodSecurity admission decisions (upstream's `admission.Admission`),
//! pure over the request: a pod is refused when it fails its namespace's
//! `enforce` policy, and otherwise gets a warning when it fails `warn`;
//! workload resources with a pod template only get warnings; `audit`
//! violations become audit annotations. A namespace's labels must be valid,
//! and making its enforce policy stricter checks the pods it has.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::check::Violations;
use super::checks;
use super::level::{
    AUDIT_ANNOTATION_PREFIX, AUDIT_LEVEL_LABEL, AUDIT_VERSION_LABEL, ENFORCE_LEVEL_LABEL,
    ENFORCE_VERSION_LABEL, Level, LevelVersion, Policy, WARN_LEVEL_LABEL, WARN_VERSION_LABEL,
};
use crate::status::FieldError;

/// How many existing pods a namespace's new enforce level is checked
/// against (upstream's `defaultNamespaceMaxPodsToCheck`).
const MAX_PODS_TO_CHECK: usize = 3000;

/// Requests and objects the plugin leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exemptions {
    pub usernames: Vec<String>,
    pub namespaces: Vec<String>,
    pub runtime_classes: Vec<String>,
}

/// The plugin, as configured (`PodSecurityConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSecurity {
    /// The policy of namespaces without labels.
    pub defaults: Policy,
    pub exemptions: Exemptions,
}

/// Who writes where.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub namespace: &'a str,
    /// The authenticated (or impersonated) user; `None` for writes from
    /// inside the apiserver.
    pub username: Option<&'a str>,
}

/// The outcome for one pod or pod template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Why the write is refused: `violates PodSecurity "…": …`.
    pub refusal: Option<String>,
    /// `Warning` headers for the client.
    pub warnings: Vec<String>,
    /// What kube-apiserver records in the audit event
    /// (`pod-security.kubernetes.io/enforce-policy`, `audit-violations`,
    /// `exempt`, `error`).
    pub audit_annotations: BTreeMap<String, String>,
}

impl Decision {
    fn annotated(key: &str, value: impl Into<String>) -> Self {
        let mut d = Self::default();
        d.annotate(key, value);
        d
    }

    fn annotate(&mut self, key: &str, value: impl Into<String>) {
        self.audit_annotations
            .insert(format!("{AUDIT_ANNOTATION_PREFIX}{key}"), value.into());
    }
}

/// The outcome for a namespace write.
#[derive(Debug, Clone, PartialEq)]
pub enum NamespaceDecision {
    /// Invalid `pod-security.kubernetes.io/*` labels.
    Invalid(Vec<FieldError>),
    Allowed {
        warnings: Vec<String>,
    },
    /// Allowed; the namespace's pods are to be checked against the new
    /// enforce level ([`PodSecurity::existing_pods`]) for warnings.
    CheckPods(LevelVersion),
}

/// A field error list as apimachinery's `ToAggregate` prints it.
fn aggregate(errs: &[FieldError]) -> String {
    let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
    if all.len() == 1 {
        all[0].clone()
    } else {
        format!("[{}]", all.join(", "))
    }
}

impl PodSecurity {
    pub fn policy(&self, ns_labels: &BTreeMap<String, String>) -> (Policy, Vec<FieldError>) {
        Policy::from_labels(ns_labels, &self.defaults)
    }

    fn exempt_namespace(&self, ns: &str) -> bool {
        !ns.is_empty() && self.exemptions.namespaces.iter().any(|n| n == ns)
    }

    fn exempt_user(&self, user: Option<&str>) -> bool {
        user.is_some_and(|u| !u.is_empty() && self.exemptions.usernames.iter().any(|n| n == u))
    }

    /// An exempt namespace or user: nothing is checked, and the audit
    /// event says why.
    fn exempt_request(&self, req: Request) -> Option<Decision> {
        if self.exempt_namespace(req.namespace) {
            return Some(Decision::annotated("exempt", "namespace"));
        }
        if self.exempt_user(req.username) {
            return Some(Decision::annotated("exempt", "user"));
        }
        None
    }

    fn exempt_runtime_class(&self, class: Option<&str>) -> bool {
        class.is_some_and(|c| {
            !c.is_empty() && self.exemptions.runtime_classes.iter().any(|n| n == c)
        })
    }

    /// A pod create, or an update of `old` (upstream's `ValidatePod`; the
    /// caller leaves out the subresources upstream ignores, such as status).
    pub fn pod(
        &self,
        req: Request,
        ns_labels: &BTreeMap<String, String>,
        pod: &Pod,
        old: Option<&Pod>,
    ) -> Decision {
        if let Some(exempt) = self.exempt_request(req) {
            return exempt;
        }
        let (policy, errs) = self.policy(ns_labels);
        if errs.is_empty() && policy.fully_privileged() {
            return Decision::annotated("enforce-policy", LevelVersion::PRIVILEGED.to_string());
        }
        if let Some(old) = old
            && !significant_update(pod, old)
        {
            return Decision::default();
        }
        let spec = pod.spec.clone().unwrap_or_default();
        self.evaluate(&policy, &errs, &pod.metadata, &spec, true)
    }

    /// A workload resource's pod template (upstream's
    /// `ValidatePodController`): warnings and audit annotations only.
    /// `template` is `None` for an object without one.
    pub fn pod_template(
        &self,
        req: Request,
        ns_labels: &BTreeMap<String, String>,
        template: Option<(&ObjectMeta, &PodSpec)>,
    ) -> Decision {
        if let Some(exempt) = self.exempt_request(req) {
            return exempt;
        }
        let (policy, errs) = self.policy(ns_labels);
        if errs.is_empty()
            && policy.warn.level == Level::Privileged
            && policy.audit.level == Level::Privileged
        {
            return Decision::default();
        }
        let Some((meta, spec)) = template else {
            return Decision::default();
        };
        self.evaluate(&policy, &errs, meta, spec, false)
    }

    /// Upstream's `EvaluatePod`: enforce (for pods), then audit, then warn
    /// unless refused; each level and version evaluated once.
    fn evaluate(
        &self,
        policy: &Policy,
        errs: &[FieldError],
        meta: &ObjectMeta,
        spec: &PodSpec,
        enforce: bool,
    ) -> Decision {
        if self.exempt_runtime_class(spec.runtime_class_name.as_deref()) {
            return Decision::annotated("exempt", "runtimeClass");
        }
        let mut d = Decision::default();
        if !errs.is_empty() {
            d.annotate(
                "error",
                format!("Failed to parse policy: {}", aggregate(errs)),
            );
        }
        let mut cache: HashMap<LevelVersion, Violations> = HashMap::new();
        let mut eval = |lv: LevelVersion| {
            cache
                .entry(lv)
                .or_insert_with(|| checks::evaluate(lv, meta, spec))
                .clone()
        };
        if enforce {
            d.annotate("enforce-policy", policy.enforce.to_string());
            let v = eval(policy.enforce);
            if !v.allowed() {
                d.refusal = Some(format!(
                    "violates PodSecurity \"{}\": {}",
                    policy.enforce,
                    v.details()
                ));
            }
        }
        let v = eval(policy.audit);
        if !v.allowed() {
            d.annotate(
                "audit-violations",
                format!(
                    "would violate PodSecurity \"{}\": {}",
                    policy.audit,
                    v.details()
                ),
            );
        }
        if d.refusal.is_none() {
            let v = eval(policy.warn);
            if !v.allowed() {
                d.warnings.push(format!(
                    "would violate PodSecurity \"{}\": {}",
                    policy.warn,
                    v.details()
                ));
            }
        }
        d
    }

    /// A namespace create (`old_labels` `None`) or update (upstream's
    /// `ValidateNamespace`).
    pub fn namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        old_labels: Option<&BTreeMap<String, String>>,
    ) -> NamespaceDecision {
        let (policy, errs) = self.policy(labels);
        let exempt_warning = || NamespaceDecision::Allowed {
            warnings: self
                .exempt_namespace_warning(name, &policy, labels)
                .into_iter()
                .collect(),
        };
        let Some(old_labels) = old_labels else {
            if !errs.is_empty() {
                return NamespaceDecision::Invalid(errs);
            }
            if self.exempt_namespace(name) {
                return exempt_warning();
            }
            return NamespaceDecision::Allowed { warnings: vec![] };
        };
        let (old_policy, old_errs) = self.policy(old_labels);
        // Labels that were already invalid in the same way stay writable.
        if !errs.is_empty() && (old_errs.is_empty() || errs != old_errs) {
            return NamespaceDecision::Invalid(errs);
        }
        let allowed = NamespaceDecision::Allowed { warnings: vec![] };
        if policy.enforce == old_policy.enforce
            || policy.enforce.level == Level::Privileged
            || (policy.enforce.version == old_policy.enforce.version
                && policy.enforce.level <= old_policy.enforce.level)
        {
            return allowed;
        }
        if self.exempt_namespace(name) {
            return exempt_warning();
        }
        NamespaceDecision::CheckPods(policy.enforce)
    }

    /// `namespace "x" is exempt from Pod Security, and the policy
    /// (enforce=…) will be ignored`, for labels that ask for something.
    fn exempt_namespace_warning(
        &self,
        name: &str,
        policy: &Policy,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        if policy.fully_privileged() || policy.equivalent(&self.defaults) {
            return None;
        }
        let has =
            |level: &str, version: &str| labels.contains_key(level) || labels.contains_key(version);
        let parts: Vec<String> = [
            (
                "enforce",
                policy.enforce,
                has(ENFORCE_LEVEL_LABEL, ENFORCE_VERSION_LABEL),
            ),
            (
                "audit",
                policy.audit,
                has(AUDIT_LEVEL_LABEL, AUDIT_VERSION_LABEL),
            ),
            (
                "warn",
                policy.warn,
                has(WARN_LEVEL_LABEL, WARN_VERSION_LABEL),
            ),
        ]
        .into_iter()
        .filter(|(_, lv, labelled)| lv.level != Level::Privileged && *labelled)
        .map(|(mode, lv, _)| format!("{mode}={lv}"))
        .collect();
        Some(format!(
            "namespace {name:?} is exempt from Pod Security, and the policy ({}) will be ignored",
            parts.join(", ")
        ))
    }

    /// The warnings for a namespace whose enforce level becomes `enforce`,
    /// from the pods it has (upstream's `EvaluatePodsInNamespace`): one line
    /// per distinct set of reasons, naming the first pod by name and how
    /// many others share it. One pod per controller is checked first.
    pub fn existing_pods(
        &self,
        namespace: &str,
        enforce: LevelVersion,
        pods: &[Pod],
    ) -> Vec<String> {
        let mut first = Vec::new();
        let mut replicas = Vec::new();
        let mut seen_controllers = Vec::new();
        for pod in pods {
            let spec = pod.spec.as_ref();
            if self.exempt_runtime_class(spec.and_then(|s| s.runtime_class_name.as_deref())) {
                continue;
            }
            let controller = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.clone());
            match controller {
                Some(uid) if seen_controllers.contains(&uid) => replicas.push(pod),
                Some(uid) => {
                    seen_controllers.push(uid);
                    first.push(pod);
                }
                None => first.push(pod),
            }
        }
        let ordered: Vec<&Pod> = first.into_iter().chain(replicas).collect();
        let total = ordered.len();
        let checked = &ordered[..total.min(MAX_PODS_TO_CHECK)];
        // reasons -> (smallest pod name, count), in first-seen order.
        let mut by_reason: Vec<(String, String, usize)> = Vec::new();
        for pod in checked {
            let spec = pod.spec.clone().unwrap_or_default();
            let v = checks::evaluate(enforce, &pod.metadata, &spec);
            if v.allowed() {
                continue;
            }
            let reasons = v.reasons();
            let name = pod.metadata.name.clone().unwrap_or_default();
            match by_reason.iter_mut().find(|(r, _, _)| *r == reasons) {
                Some((_, first_name, count)) => {
                    if name < *first_name {
                        *first_name = name;
                    }
                    *count += 1;
                }
                None => by_reason.push((reasons, name, 1)),
            }
        }
        let mut warnings = Vec::new();
        if checked.len() < total {
            warnings.push(format!(
                "new PodSecurity enforce level only checked against the first {} of {total} existing pods",
                checked.len()
            ));
        }
        if !by_reason.is_empty() {
            warnings.push(format!(
                "existing pods in namespace {namespace:?} violate the new PodSecurity enforce level \"{enforce}\""
            ));
        }
        let mut pod_warnings: Vec<String> = by_reason
            .into_iter()
            .map(|(reasons, name, count)| match count {
                1 => format!("{name}: {reasons}"),
                2 => format!("{name} (and 1 other pod): {reasons}"),
                n => format!("{name} (and {} other pods): {reasons}", n - 1),
            })
            .collect();
        pod_warnings.sort();
        warnings.extend(pod_warnings);
        warnings
    }
}

/// Whether an update changes what the policy judges: containers added or
/// removed, an image changed, an ephemeral container added or changed.
/// Metadata, tolerations, activeDeadlineSeconds and resources do not count.
fn significant_update(pod: &Pod, old: &Pod) -> bool {
    let (Some(new), Some(old)) = (pod.spec.as_ref(), old.spec.as_ref()) else {
        return true;
    };
    let images = |cs: &[k8s_openapi::api::core::v1::Container]| {
        cs.iter().map(|c| c.image.clone()).collect::<Vec<_>>()
    };
    let init = |s: &PodSpec| images(s.init_containers.as_deref().unwrap_or_default());
    if images(&new.containers) != images(&old.containers) || init(new) != init(old) {
        return true;
    }
    new.ephemeral_containers.iter().flatten().any(|c| {
        !old.ephemeral_containers
            .iter()
            .flatten()
            .any(|o| o.name == c.name && o.image == c.image)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::level::Version;
    use crate::selectors::tests::labels;

    fn pod(name: &str, containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": containers},
        }))
        .unwrap()
    }

    fn privileged(name: &str) -> Pod {
        pod(
            name,
            serde_json::json!([{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]),
        )
    }

    const REQ: Request = Request {
        namespace: "ns",
        username: Some("alice"),
    };

    #[test]
    fn enforce_refuses_with_upstreams_words_and_annotates() {
        let psa = PodSecurity::default();
        let d = psa.pod(
            REQ,
            &labels(&[(ENFORCE_LEVEL_LABEL, "baseline")]),
            &privileged("p"),
            None,
        );
        assert_eq!(
            d.refusal.as_deref(),
            Some(
                "violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
            )
        );
        assert!(d.warnings.is_empty());
        assert_eq!(
            d.audit_annotations["pod-security.kubernetes.io/enforce-policy"],
            "baseline:latest"
        );
    }

    #[test]
    fn warn_and_audit_let_the_pod_in() {
        let psa = PodSecurity::default();
        let ns = labels(&[
            (WARN_LEVEL_LABEL, "baseline"),
            (AUDIT_LEVEL_LABEL, "baseline"),
            (AUDIT_VERSION_LABEL, "v1.30"),
        ]);
        let d = psa.pod(REQ, &ns, &privileged("p"), None);
        assert_eq!(d.refusal, None);
        assert_eq!(
            d.warnings,
            [
                "would violate PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
            ]
        );
        assert_eq!(
            d.audit_annotations["pod-security.kubernetes.io/audit-violations"],
            "would violate PodSecurity \"baseline:v1.30\": privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        // Unlabelled namespaces are privileged by default.
        let d = psa.pod(REQ, &BTreeMap::new(), &privileged("p"), None);
        assert_eq!(d.refusal, None);
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn exemptions_and_configured_defaults() {
        let psa = PodSecurity {
            defaults: Policy {
                enforce: LevelVersion {
                    level: Level::Baseline,
                    version: Version::Latest,
                },
                ..Policy::default()
            },
            exemptions: Exemptions {
                usernames: vec!["admin".into()],
                namespaces: vec!["kube-system".into()],
                runtime_classes: vec!["kata".into()],
            },
        };
        assert!(
            psa.pod(REQ, &BTreeMap::new(), &privileged("p"), None)
                .refusal
                .is_some()
        );
        let d = psa.pod(
            Request {
                namespace: "kube-system",
                username: None,
            },
            &BTreeMap::new(),
            &privileged("p"),
            None,
        );
        assert_eq!(d.refusal, None);
        assert_eq!(
            d.audit_annotations["pod-security.kubernetes.io/exempt"],
            "namespace"
        );
        let d = psa.pod(
            Request {
                namespace: "ns",
                username: Some("admin"),
            },
            &BTreeMap::new(),
            &privileged("p"),
            None,
        );
        assert_eq!(
            d.audit_annotations["pod-security.kubernetes.io/exempt"],
            "user"
        );
        let mut kata = privileged("p");
        kata.spec.as_mut().unwrap().runtime_class_name = Some("kata".into());
        let d = psa.pod(REQ, &BTreeMap::new(), &kata, None);
        assert_eq!(
            d.audit_annotations["pod-security.kubernetes.io/exempt"],
            "runtimeClass"
        );
        assert_eq!(d.refusal, None);
    }

    #[test]
    fn only_significant_pod_updates_are_checked() {
        let psa = PodSecurity::default();
        let ns = labels(&[(ENFORCE_LEVEL_LABEL, "baseline")]);
        let old = privileged("p");
        let mut relabelled = old.clone();
        relabelled.metadata.labels = Some(labels(&[("a", "b")]));
        assert_eq!(
            psa.pod(REQ, &ns, &relabelled, Some(&old)),
            Decision::default()
        );
        let mut new_image = old.clone();
        new_image.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.36".into());
        assert!(psa.pod(REQ, &ns, &new_image, Some(&old)).refusal.is_some());
    }

    #[test]
    fn templates_only_warn() {
        let psa = PodSecurity::default();
        let p = privileged("p");
        let ns = labels(&[
            (ENFORCE_LEVEL_LABEL, "baseline"),
            (WARN_LEVEL_LABEL, "baseline"),
        ]);
        let d = psa.pod_template(REQ, &ns, Some((&p.metadata, p.spec.as_ref().unwrap())));
        assert_eq!(d.refusal, None);
        assert_eq!(d.warnings.len(), 1);
        assert!(
            !d.audit_annotations
                .contains_key("pod-security.kubernetes.io/enforce-policy")
        );
        let enforce_only = labels(&[
            (ENFORCE_LEVEL_LABEL, "baseline"),
            (WARN_LEVEL_LABEL, "privileged"),
        ]);
        assert_eq!(
            psa.pod_template(
                REQ,
                &enforce_only,
                Some((&p.metadata, p.spec.as_ref().unwrap()))
            ),
            Decision::default()
        );
    }

    #[test]
    fn namespace_labels_are_validated_and_stricter_enforce_checks_pods() {
        let psa = PodSecurity::default();
        let bad = labels(&[(ENFORCE_LEVEL_LABEL, "strict")]);
        let NamespaceDecision::Invalid(errs) = psa.namespace("ns", &bad, None) else {
            panic!("invalid labels pass");
        };
        assert_eq!(
            aggregate(&errs),
            "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"
        );
        // Already invalid the same way: other updates still go through.
        assert!(matches!(
            psa.namespace("ns", &bad, Some(&bad)),
            NamespaceDecision::Allowed { .. }
        ));
        let baseline = labels(&[(ENFORCE_LEVEL_LABEL, "baseline")]);
        let restricted = labels(&[(ENFORCE_LEVEL_LABEL, "restricted")]);
        assert_eq!(
            psa.namespace("ns", &restricted, Some(&baseline)),
            NamespaceDecision::CheckPods(LevelVersion {
                level: Level::Restricted,
                version: Version::Latest
            })
        );
        assert!(matches!(
            psa.namespace("ns", &baseline, Some(&restricted)),
            NamespaceDecision::Allowed { .. }
        ));
        let exempt = PodSecurity {
            exemptions: Exemptions {
                namespaces: vec!["ns".into()],
                ..Exemptions::default()
            },
            ..PodSecurity::default()
        };
        assert_eq!(
            exempt.namespace("ns", &restricted, Some(&baseline)),
            NamespaceDecision::Allowed {
                warnings: vec!["namespace \"ns\" is exempt from Pod Security, and the policy (enforce=restricted:latest) will be ignored".into()]
            }
        );
    }

    #[test]
    fn existing_pods_are_summarised_by_reason() {
        let psa = PodSecurity::default();
        let ok = pod("ok", serde_json::json!([{"name": "c", "image": "busybox"}]));
        let pods = [
            privileged("web-2"),
            privileged("web-1"),
            privileged("web-3"),
            ok,
        ];
        let warnings = psa.existing_pods(
            "ns",
            LevelVersion {
                level: Level::Baseline,
                version: Version::Latest,
            },
            &pods,
        );
        assert_eq!(
            warnings,
            [
                "existing pods in namespace \"ns\" violate the new PodSecurity enforce level \"baseline:latest\"",
                "web-1 (and 2 other pods): privileged",
            ]
        );
    }
}
