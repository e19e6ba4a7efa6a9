//! Pod Security admission through the real kubectl: namespace labels pick
//! a level per mode; `enforce` refuses pods in kube-apiserver's words,
//! `warn` prints kubectl's `Warning:` lines (for workloads too), a stricter
//! enforce label warns about the pods a namespace already has (with
//! `--dry-run=server` as well, storing nothing), invalid labels are
//! refused, and an AdmissionConfiguration sets defaults and exemptions.

mod common;

use common::ApiServer;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Applies a namespace with these Pod Security labels; returns kubectl's stderr.
fn namespace(s: &ApiServer, name: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    pod-security.kubernetes.io/{k}: {v}\n"))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    team: a\n{labels}"
    );
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &yaml);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stderr)
}

/// A pod with one container `c`, and `security` as its securityContext.
fn pod(
    s: &ApiServer,
    ns: &str,
    name: &str,
    pod_security: &str,
    security: &str,
) -> std::process::Output {
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  securityContext: {pod_security}
  containers:
  - name: c
    image: busybox
    securityContext: {security}
"
    );
    s.kubectl_stdin(&["create", "-n", ns, "-f", "-"], &yaml)
}

const PRIVILEGED: &str = "{privileged: true}";
const RESTRICTED_POD: &str =
    "{runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}";
const RESTRICTED_CONTAINER: &str = "{allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}";

#[test]
fn namespace_labels_enforce_and_warn_pod_security() {
    let s = ApiServer::start();

    namespace(&s, "base", &[("enforce", "baseline")]);
    let out = pod(&s, "base", "priv", "{}", PRIVILEGED);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"priv\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );

    namespace(&s, "strict", &[("enforce", "restricted")]);
    let out = pod(&s, "strict", "good", RESTRICTED_POD, RESTRICTED_CONTAINER);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "a compliant pod gets no warning");
    let out = pod(&s, "strict", "plain", "{}", "{}");
    assert!(
        text(&out.stderr).contains("pods \"plain\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"),
        "{}",
        text(&out.stderr)
    );

    namespace(&s, "warned", &[("warn", "restricted")]);
    let out = s.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "-n",
        "warned",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim(),
        "Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"busybox\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"busybox\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"busybox\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"busybox\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
    assert_eq!(
        s.ok(&["get", "deployment", "web", "-n", "warned", "-o", "name"])
            .trim(),
        "deployment.apps/web"
    );

    // Two privileged pods and a harmless one, in a namespace without labels.
    namespace(&s, "legacy", &[]);
    for name in ["old-b", "old-a"] {
        let out = pod(&s, "legacy", name, "{}", PRIVILEGED);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert!(pod(&s, "legacy", "fine", "{}", "{}").status.success());
    let label = [
        "label",
        "ns",
        "legacy",
        "pod-security.kubernetes.io/enforce=baseline",
    ];
    let expected = "Warning: existing pods in namespace \"legacy\" violate the new PodSecurity enforce level \"baseline:latest\"\nWarning: old-a (and 1 other pod): privileged";
    let out = s.kubectl(&[&label[..], &["--dry-run=server"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), expected);
    let labels =
        |s: &ApiServer| s.ok(&["get", "ns", "legacy", "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        !labels(&s).contains("pod-security"),
        "a dry run stores nothing: {}",
        labels(&s)
    );
    let out = s.kubectl(&label);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), expected);
    assert!(labels(&s).contains("\"pod-security.kubernetes.io/enforce\":\"baseline\""));
    // Relabelling a pod that is already in breach is not a significant update.
    s.ok(&["label", "pod", "old-a", "-n", "legacy", "tier=db"]);

    let err = s.fails(&[
        "label",
        "ns",
        "legacy",
        "--overwrite",
        "pod-security.kubernetes.io/enforce=strict",
    ]);
    assert_eq!(
        err.trim(),
        "The Namespace \"legacy\" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"
    );
    let err = s.fails(&[
        "label",
        "ns",
        "base",
        "pod-security.kubernetes.io/warn-version=1.30",
    ]);
    assert!(
        err.contains("Invalid value: \"1.30\": must be \"latest\" or \"v1.x\""),
        "{err}"
    );
}

#[test]
fn an_admission_configuration_sets_defaults_and_exemptions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("admission.yaml");
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
    exemptions:
      namespaces: [trusted]
",
    )
    .unwrap();
    let s = ApiServer::start_with(&["--admission-control-config-file", config.to_str().unwrap()]);
    namespace(&s, "plain", &[]);
    let out = pod(&s, "plain", "priv", "{}", PRIVILEGED);
    assert!(
        text(&out.stderr).contains("violates PodSecurity \"baseline:latest\""),
        "unlabelled namespaces get the configured default: {}",
        text(&out.stderr)
    );
    assert_eq!(
        namespace(&s, "trusted", &[("enforce", "restricted")]).trim(),
        "Warning: namespace \"trusted\" is exempt from Pod Security, and the policy (enforce=restricted:latest) will be ignored"
    );
    let out = pod(&s, "trusted", "priv", "{}", PRIVILEGED);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
