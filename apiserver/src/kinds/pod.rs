//! Pods: defaults (`SetDefaults_Pod`, the DefaultTolerationSeconds
//! admission plugin), validation, and the
//! `kubectl get pods` columns (`printPod`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, PodSpec, PodStatus, Toleration, Volume,
};
use serde_json::Value;

use super::KindSpec;
use super::pod_defaults::default_pod_spec;
use super::table::{Column, age, age_col, col, name_col, none_if_empty};
use super::validation::{
    dns1123_label, local_descending_path, local_non_reserved_path, path_no_backsteps,
};
use crate::status::FieldError;

/// What only pods get: `SetDefaults_Pod` (requests from limits, service
/// links) and the admission plugins (Priority, DefaultTolerationSeconds),
/// which see pods, not templates.
fn default_spec(spec: &mut PodSpec) {
    default_pod_spec(spec);
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
    // The deprecated field and its successor say the same; `default` is
    // the ServiceAccount admission plugin's to fill in (mirror pods have none).
    if spec.service_account_name.is_none() {
        spec.service_account_name = spec.service_account.clone();
    }
    spec.service_account = spec.service_account_name.clone();
    // With the host's network, a container's ports are the host's ports.
    if spec.host_network == Some(true) {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            for p in c.ports.iter_mut().flatten() {
                if p.host_port.unwrap_or(0) == 0 {
                    p.host_port = Some(p.container_port);
                }
            }
        }
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let resources = c.resources.get_or_insert_with(Default::default);
        // Requests default to limits, as SetDefaults_Pod does.
        if let Some(limits) = &resources.limits {
            let requests = resources.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    // DefaultTolerationSeconds admission: tolerate a not-ready or
    // unreachable node for five minutes, unless a toleration of the pod
    // already covers that NoExecute taint (by its key or a wildcard).
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = tolerations.iter().any(|t| {
            matches!(t.key.as_deref(), None | Some("")) || t.key.as_deref() == Some(key)
        } && matches!(t.effect.as_deref(), None | Some("") | Some("NoExecute")));
        if !covered {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                ..Default::default()
            });
        }
    }
}

fn validate_containers(
    list: &[Container],
    path: &str,
    names: &mut BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) {
    for (i, c) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if c.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        } else {
            errs.extend(dns1123_label(&format!("{p}.name"), &c.name));
            if !names.insert(c.name.clone()) {
                errs.push(FieldError::duplicate(format!("{p}.name"), &c.name));
            }
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            errs.push(FieldError::required(format!("{p}.image"), ""));
        }
        if let Some(policy) = &c.image_pull_policy
            && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
        {
            errs.push(FieldError::not_supported(
                format!("{p}.imagePullPolicy"),
                policy,
                &["Always", "IfNotPresent", "Never"],
            ));
        }
        if let Some(r) = &c.resources {
            for (kind, m) in [("limits", &r.limits), ("requests", &r.requests)] {
                for (res, q) in m.iter().flatten() {
                    if let Err(why) = kubelab_rules::validation::resource_amount(q) {
                        errs.push(FieldError::invalid(
                            format!("{p}.resources.{kind}[{res}]"),
                            &q.0,
                            why,
                        ));
                    }
                }
            }
            for (res, request) in r.requests.iter().flatten() {
                if let Some(why) = r
                    .limits
                    .as_ref()
                    .and_then(|l| l.get(res))
                    .and_then(|limit| {
                        kubelab_rules::validation::request_over_limit(res, request, limit)
                    })
                {
                    errs.push(FieldError::invalid(
                        format!("{p}.resources.requests[{res}]"),
                        &request.0,
                        why,
                    ));
                }
            }
        }
        for (j, vm) in c.volume_mounts.iter().flatten().enumerate() {
            for (key, value) in [
                ("subPath", &vm.sub_path),
                ("subPathExpr", &vm.sub_path_expr),
            ] {
                if let Some(sub) = value.as_deref().filter(|s| !s.is_empty()) {
                    errs.extend(local_descending_path(
                        &format!("{p}.volumeMounts[{j}].{key}"),
                        sub,
                    ));
                }
            }
        }
        for (j, port) in c.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&port.container_port) {
                errs.push(FieldError::invalid_raw(
                    format!("{p}.ports[{j}].containerPort"),
                    port.container_port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

/// The paths a volume source names on the node: a hostPath without `..`,
/// and projected files that stay inside their volume.
fn volume_source_paths(v: &Volume, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(h) = &v.host_path {
        errs.extend(path_no_backsteps(&format!("{path}.hostPath.path"), &h.path));
    }
    let mut files = |field: String, paths: Vec<&str>| {
        for (j, p) in paths.into_iter().enumerate() {
            errs.extend(local_non_reserved_path(
                &format!("{field}.items[{j}].path"),
                p,
            ));
        }
    };
    fn key_paths(items: &Option<Vec<KeyToPath>>) -> Vec<&str> {
        items.iter().flatten().map(|i| i.path.as_str()).collect()
    }
    fn file_paths(items: &Option<Vec<DownwardAPIVolumeFile>>) -> Vec<&str> {
        items.iter().flatten().map(|i| i.path.as_str()).collect()
    }
    if let Some(c) = &v.config_map {
        files(format!("{path}.configMap"), key_paths(&c.items));
    }
    if let Some(s) = &v.secret {
        files(format!("{path}.secret"), key_paths(&s.items));
    }
    if let Some(d) = &v.downward_api {
        files(format!("{path}.downwardAPI"), file_paths(&d.items));
    }
    for (k, source) in v
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .enumerate()
    {
        let at = format!("{path}.projected.sources[{k}]");
        if let Some(c) = &source.config_map {
            files(format!("{at}.configMap"), key_paths(&c.items));
        }
        if let Some(s) = &source.secret {
            files(format!("{at}.secret"), key_paths(&s.items));
        }
        if let Some(d) = &source.downward_api {
            files(format!("{at}.downwardAPI"), file_paths(&d.items));
        }
    }
    errs
}

/// `ValidatePodUpdate`: only these spec fields may change on a live pod.
fn spec_without_mutable_fields(spec: &PodSpec) -> Value {
    let mut s = spec.clone();
    for c in s
        .containers
        .iter_mut()
        .chain(s.init_containers.iter_mut().flatten())
    {
        c.image = None;
    }
    s.active_deadline_seconds = None;
    s.tolerations = None;
    s.termination_grace_period_seconds = None;
    serde_json::to_value(s).expect("PodSpec serializes")
}

/// `ValidatePodSpec`'s checks this server makes, with field paths under
/// `path` (`spec` for a pod, `spec.template.spec` for a template).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    // Volume names become directory names on the node.
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("{path}.volumes[{i}].name");
        if v.name.is_empty() {
            errs.push(FieldError::required(field, ""));
        } else if !volumes.insert(v.name.clone()) {
            errs.push(FieldError::duplicate(field, &v.name));
        } else {
            errs.extend(dns1123_label(&field, &v.name));
        }
        errs.extend(volume_source_paths(v, &format!("{path}.volumes[{i}]")));
    }
    for field in kubelab_rules::host_users::forbidden_host_namespaces(spec) {
        errs.push(FieldError::forbidden(
            format!("{path}.{field}"),
            kubelab_rules::host_users::FORBIDDEN_DETAIL,
        ));
    }
    let mut names = BTreeSet::new();
    validate_containers(
        &spec.containers,
        &format!("{path}.containers"),
        &mut names,
        &mut errs,
    );
    if let Some(init) = &spec.init_containers {
        validate_containers(
            init,
            &format!("{path}.initContainers"),
            &mut names,
            &mut errs,
        );
    }
    if let Some(p) = &spec.restart_policy
        && !["Always", "OnFailure", "Never"].contains(&p.as_str())
    {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            p,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(p) = &spec.dns_policy
        && !["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"].contains(&p.as_str())
    {
        errs.push(FieldError::not_supported(
            format!("{path}.dnsPolicy"),
            p,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(FieldError::invalid_raw(
            format!("{path}.terminationGracePeriodSeconds"),
            g.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs
}

impl KindSpec for Pod {
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const FIELDS: &'static [&'static str] = &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];

    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        default_spec(spec);
        // Quantities are validated after defaulting: an unreadable one
        // fails the request, whatever class it would have given.
        let qos = kubelab_rules::qos::QosClass::from_pod(spec)
            .map_or("BestEffort", |q| q.as_str())
            .to_owned();
        self.status = Some(PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some(qos),
            ..Default::default()
        });
    }

    fn prepare_update(&mut self, _old: &Self) {
        if let Some(spec) = &mut self.spec {
            default_spec(spec);
        }
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        errs.extend(validate_pod_spec(spec, "spec"));
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            if old_spec.node_name.is_some() && old_spec.node_name != spec.node_name {
                errs.push(FieldError::forbidden(
                    "spec.nodeName",
                    "field is immutable once set",
                ));
            } else if spec_without_mutable_fields(old_spec)
                != spec_without_mutable_fields(&PodSpec {
                    node_name: old_spec.node_name.clone(),
                    ..spec.clone()
                })
            {
                errs.push(FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            age_col(),
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let p = PodPrint::from(self, now);
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            format!("{}/{}", p.ready, p.total).into(),
            p.reason.into(),
            p.restarts.into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            p.ip,
            p.node,
            p.nominated,
            p.gates,
        ]
    }
}

/// The values `printPod` derives from a pod's status.
struct PodPrint {
    ready: usize,
    total: usize,
    reason: String,
    restarts: String,
    ip: Value,
    node: Value,
    nominated: Value,
    gates: Value,
}

impl PodPrint {
    fn from(pod: &Pod, now: jiff::Timestamp) -> Self {
        let default_spec = PodSpec::default();
        let default_status = PodStatus::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let status = pod.status.as_ref().unwrap_or(&default_status);
        let phase = status.phase.clone().unwrap_or_default();
        let mut reason = status
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| phase.clone());
        let conditions = status.conditions.as_deref().unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
        {
            reason = "SchedulingGated".into();
        }
        let init_specs = spec.init_containers.as_deref().unwrap_or_default();
        let restartable = |name: &str| {
            init_specs
                .iter()
                .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
        };
        let total = spec.containers.len()
            + init_specs
                .iter()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .count();
        let mut ready = 0;
        let mut restarts = 0i64;
        let mut last_restart: Option<jiff::Timestamp> = None;
        let (mut sidecar_restarts, mut sidecar_last) = (0i64, None::<jiff::Timestamp>);
        let later = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let finished = |cs: &k8s_openapi::api::core::v1::ContainerStatus| {
            cs.last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
                .map(|t| t.0)
        };

        let mut initializing = false;
        let init_statuses = status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default();
        for (i, cs) in init_statuses.iter().enumerate() {
            restarts += i64::from(cs.restart_count);
            last_restart = later(last_restart, finished(cs));
            if restartable(&cs.name) {
                sidecar_restarts += i64::from(cs.restart_count);
                sidecar_last = later(sidecar_last, finished(cs));
            }
            let state = cs.state.clone().unwrap_or_default();
            match (&state.terminated, &state.waiting) {
                (Some(t), _) if t.exit_code == 0 => continue,
                _ if restartable(&cs.name) && cs.started == Some(true) => {
                    if cs.ready {
                        ready += 1;
                    }
                    continue;
                }
                (Some(t), _) => {
                    reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                        Some(r) => format!("Init:{r}"),
                        None => match t.signal.filter(|s| *s != 0) {
                            Some(s) => format!("Init:Signal:{s}"),
                            None => format!("Init:ExitCode:{}", t.exit_code),
                        },
                    };
                }
                (None, Some(w))
                    if w.reason
                        .as_deref()
                        .is_some_and(|r| !r.is_empty() && r != "PodInitializing") =>
                {
                    reason = format!("Init:{}", w.reason.as_deref().unwrap_or_default());
                }
                _ => reason = format!("Init:{i}/{}", init_specs.len()),
            }
            initializing = true;
            break;
        }
        let initialized = conditions
            .iter()
            .any(|c| c.type_ == "Initialized" && c.status == "True");
        if !initializing || initialized {
            restarts = sidecar_restarts;
            last_restart = sidecar_last;
            let mut has_running = false;
            for cs in status
                .container_statuses
                .as_deref()
                .unwrap_or_default()
                .iter()
                .rev()
            {
                restarts += i64::from(cs.restart_count);
                last_restart = later(last_restart, finished(cs));
                let state = cs.state.clone().unwrap_or_default();
                if let Some(r) = state
                    .waiting
                    .as_ref()
                    .and_then(|w| w.reason.clone())
                    .filter(|r| !r.is_empty())
                {
                    reason = r;
                } else if let Some(t) = &state.terminated {
                    reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                        Some(r) => r.to_owned(),
                        None => match t.signal.filter(|s| *s != 0) {
                            Some(s) => format!("Signal:{s}"),
                            None => format!("ExitCode:{}", t.exit_code),
                        },
                    };
                } else if cs.ready && state.running.is_some() {
                    has_running = true;
                    ready += 1;
                }
            }
            if reason == "Completed" && has_running {
                let pod_ready = conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                reason = if pod_ready {
                    "Running".into()
                } else {
                    "NotReady".into()
                };
            }
        }
        if pod.metadata.deletion_timestamp.is_some() {
            if status.reason.as_deref() == Some("NodeLost") {
                reason = "Unknown".into();
            } else if phase != "Succeeded" && phase != "Failed" {
                reason = "Terminating".into();
            }
        }
        let restarts = match last_restart {
            Some(t) if restarts != 0 => {
                format!(
                    "{restarts} ({} ago)",
                    super::table::human_duration(now.as_second() - t.as_second())
                )
            }
            _ => restarts.to_string(),
        };
        let ip = status
            .pod_ips
            .as_ref()
            .and_then(|ips| ips.first())
            .map(|ip| ip.ip.clone())
            .or_else(|| status.pod_ip.clone());
        let gates = match spec.readiness_gates.as_deref() {
            Some(g) if !g.is_empty() => {
                let ok = g
                    .iter()
                    .filter(|gate| {
                        conditions
                            .iter()
                            .find(|c| c.type_ == gate.condition_type)
                            .is_some_and(|c| c.status == "True")
                    })
                    .count();
                format!("{ok}/{}", g.len()).into()
            }
            _ => "<none>".into(),
        };
        Self {
            ready,
            total,
            reason,
            restarts,
            ip: none_if_empty(ip.unwrap_or_default()),
            node: none_if_empty(spec.node_name.clone().unwrap_or_default()),
            nominated: none_if_empty(status.nominated_node_name.clone().unwrap_or_default()),
            gates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn default_toleration_seconds_are_added_unless_a_toleration_covers_the_taint() {
        let keys = |p: &Pod| -> Vec<(String, Option<i64>)> {
            p.spec
                .as_ref()
                .unwrap()
                .tolerations
                .iter()
                .flatten()
                .map(|t| (t.key.clone().unwrap_or_default(), t.toleration_seconds))
                .collect()
        };
        let mut plain = pod(json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}}));
        plain.prepare_create();
        assert_eq!(
            keys(&plain),
            [
                ("node.kubernetes.io/not-ready".to_owned(), Some(300)),
                ("node.kubernetes.io/unreachable".to_owned(), Some(300))
            ]
        );
        // A wildcard NoExecute toleration already covers both.
        let mut wildcard = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "busybox"}],
            "tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}}),
        );
        wildcard.prepare_create();
        assert_eq!(keys(&wildcard), [(String::new(), None)]);
        // Its own not-ready toleration is kept; unreachable gets the default.
        let mut own = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "busybox"}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 10}]}}),
        );
        own.prepare_create();
        assert_eq!(
            keys(&own),
            [
                ("node.kubernetes.io/not-ready".to_owned(), Some(10)),
                ("node.kubernetes.io/unreachable".to_owned(), Some(300))
            ]
        );
    }

    fn status_cell(p: &Pod) -> String {
        p.cells(jiff::Timestamp::now())[2]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn defaults_match_the_apiserver() {
        let mut p = pod(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}, {"name": "d", "image": "busybox:1.35",
              "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}),
        );
        p.prepare_create();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(
            spec.containers[1].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(
            spec.containers[1]
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["cpu"]
                .0,
            "1"
        );
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
    }

    #[test]
    fn status_column_reads_like_kubectl() {
        let base = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Running"}});
        let with = |cs: Value| {
            let mut v = base.clone();
            v["status"]["containerStatuses"] = json!([cs]);
            pod(v)
        };
        let crash = with(
            json!({"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2020-01-01T00:00:00Z"}}}),
        );
        assert_eq!(status_cell(&crash), "CrashLoopBackOff");
        assert!(
            crash.cells(jiff::Timestamp::now())[3]
                .as_str()
                .unwrap()
                .starts_with("4 (")
        );
        let oom = with(
            json!({"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
        );
        assert_eq!(status_cell(&oom), "OOMKilled");
        let running = with(
            json!({"name": "c", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}}),
        );
        assert_eq!(running.cells(jiff::Timestamp::now())[1], "1/1");
        let mut terminating = running.clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert_eq!(status_cell(&terminating), "Terminating");
    }

    #[test]
    fn invalid_pod_names_each_field() {
        let p = pod(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "x", "resources": {"limits": {"cpu": "lots"}}}]}}),
        );
        let fields: Vec<String> = p.validate(None).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].resources.limits[cpu]"
            ]
        );
    }

    #[test]
    fn host_namespaces_are_forbidden_with_a_pod_user_namespace() {
        let p = pod(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"hostUsers": false, "hostNetwork": true, "hostIPC": true,
            "containers": [{"name": "c", "image": "x"}]}}),
        );
        let errs: Vec<String> = p.validate(None).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errs,
            vec![
                "spec.hostNetwork: Forbidden: when `hostUsers` is false",
                "spec.HostIPC: Forbidden: when `hostUsers` is false",
            ]
        );
    }

    #[test]
    fn volume_names_are_dns_labels_and_sub_paths_stay_inside() {
        let p = pod(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"volumes": [{"name": "../../tmp/victim", "emptyDir": {}}, {"name": "ok", "emptyDir": {}}, {"name": "ok", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "x", "volumeMounts": [
                {"name": "ok", "mountPath": "/a", "subPath": "../x"},
                {"name": "ok", "mountPath": "/b", "subPathExpr": "/$(POD)"}]}]}}),
        );
        let errs: Vec<String> = p.validate(None).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errs,
            vec![
                "spec.volumes[0].name: Invalid value: \"../../tmp/victim\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.volumes[2].name: Duplicate value: \"ok\"",
                "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../x\": must not contain '..'",
                "spec.containers[0].volumeMounts[1].subPathExpr: Invalid value: \"/$(POD)\": must be a relative path",
            ]
        );
    }
}
