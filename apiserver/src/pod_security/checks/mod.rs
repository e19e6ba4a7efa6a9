//! The Pod Security Standards' checks, each versioned by the Kubernetes
//! minor that introduced or changed it, and the evaluator that picks the
//! ones a level and version ask for (upstream's `policy` registry): the
//! baseline checks, plus for restricted the restricted checks, which
//! replace the baseline checks they override. Results come in upstream's
//! order (baseline check IDs sorted, then restricted ones), so messages
//! read the same.

mod app_armor;
mod capabilities;
mod host_namespaces;
mod host_path_volumes;
mod host_ports;
mod host_process;
mod privilege_escalation;
mod privileged;
mod proc_mount;
mod restricted_volumes;
mod run_as_non_root;
mod run_as_user;
mod se_linux;
mod seccomp;
mod sysctls;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::check::{CheckFn, Violations};
use super::level::{Level, LevelVersion};

/// One version of a check: from `since` (v1.`since`) on, until the next.
struct Versioned {
    since: u32,
    check: CheckFn,
    /// Baseline checks this restricted check replaces.
    overrides: &'static [&'static str],
}

struct Check {
    id: &'static str,
    level: Level,
    versions: &'static [Versioned],
}

const fn v(since: u32, check: CheckFn) -> Versioned {
    Versioned {
        since,
        check,
        overrides: &[],
    }
}

const fn overriding(since: u32, check: CheckFn, overrides: &'static [&'static str]) -> Versioned {
    Versioned {
        since,
        check,
        overrides,
    }
}

const CHECKS: &[Check] = &[
    Check {
        id: "appArmorProfile",
        level: Level::Baseline,
        versions: &[v(0, app_armor::app_armor_1_0)],
    },
    Check {
        id: "capabilities_baseline",
        level: Level::Baseline,
        versions: &[v(0, capabilities::baseline_1_0)],
    },
    Check {
        id: "hostNamespaces",
        level: Level::Baseline,
        versions: &[v(0, host_namespaces::host_namespaces_1_0)],
    },
    Check {
        id: "hostPathVolumes",
        level: Level::Baseline,
        versions: &[v(0, host_path_volumes::host_path_volumes_1_0)],
    },
    Check {
        id: "hostPorts",
        level: Level::Baseline,
        versions: &[v(0, host_ports::host_ports_1_0)],
    },
    Check {
        id: "privileged",
        level: Level::Baseline,
        versions: &[v(0, privileged::privileged_1_0)],
    },
    Check {
        id: "procMount",
        level: Level::Baseline,
        versions: &[v(0, proc_mount::proc_mount_1_0)],
    },
    Check {
        id: "seLinuxOptions",
        level: Level::Baseline,
        versions: &[v(0, se_linux::se_linux_1_0), v(31, se_linux::se_linux_1_31)],
    },
    Check {
        id: "seccompProfile_baseline",
        level: Level::Baseline,
        versions: &[v(0, seccomp::baseline_1_0), v(19, seccomp::baseline_1_19)],
    },
    Check {
        id: "sysctls",
        level: Level::Baseline,
        versions: &[
            v(0, sysctls::sysctls_1_0),
            v(27, sysctls::sysctls_1_27),
            v(29, sysctls::sysctls_1_29),
            v(32, sysctls::sysctls_1_32),
        ],
    },
    Check {
        id: "windowsHostProcess",
        level: Level::Baseline,
        versions: &[v(0, host_process::host_process_1_0)],
    },
    Check {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        versions: &[
            v(8, privilege_escalation::allow_privilege_escalation_1_8),
            v(25, privilege_escalation::allow_privilege_escalation_1_25),
        ],
    },
    Check {
        id: "capabilities_restricted",
        level: Level::Restricted,
        versions: &[
            overriding(
                22,
                capabilities::restricted_1_22,
                &["capabilities_baseline"],
            ),
            overriding(
                25,
                capabilities::restricted_1_25,
                &["capabilities_baseline"],
            ),
        ],
    },
    Check {
        id: "restrictedVolumes",
        level: Level::Restricted,
        versions: &[overriding(
            0,
            restricted_volumes::restricted_volumes_1_0,
            &["hostPathVolumes"],
        )],
    },
    Check {
        id: "runAsNonRoot",
        level: Level::Restricted,
        versions: &[v(0, run_as_non_root::run_as_non_root_1_0)],
    },
    Check {
        id: "runAsUser",
        level: Level::Restricted,
        versions: &[v(23, run_as_user::run_as_user_1_23)],
    },
    Check {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        versions: &[
            overriding(19, seccomp::restricted_1_19, &["seccompProfile_baseline"]),
            overriding(25, seccomp::restricted_1_25, &["seccompProfile_baseline"]),
        ],
    },
];

/// The newest policy version this server knows: its own minor, as
/// kube-apiserver caps `latest` at its (emulated) version.
pub fn newest_minor() -> u32 {
    kubelab_rules::version::MINOR.parse().unwrap_or(0)
}

/// The version of `check` in force at v1.`minor`, if it exists yet.
fn active(check: &Check, minor: u32) -> Option<&Versioned> {
    check.versions.iter().rev().find(|v| v.since <= minor)
}

/// The checks of `lv`, in upstream's order.
fn checks_for(lv: LevelVersion) -> Vec<CheckFn> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    let minor = lv.version.effective_minor(newest_minor());
    let of_level = |level: Level| {
        let mut found: Vec<(&str, &Versioned)> = CHECKS
            .iter()
            .filter(|c| c.level == level)
            .filter_map(|c| active(c, minor).map(|v| (c.id, v)))
            .collect();
        found.sort_by_key(|(id, _)| *id);
        found
    };
    let restricted = if lv.level == Level::Restricted {
        of_level(Level::Restricted)
    } else {
        Vec::new()
    };
    let overridden: Vec<&str> = restricted
        .iter()
        .flat_map(|(_, v)| v.overrides.iter().copied())
        .collect();
    of_level(Level::Baseline)
        .into_iter()
        .filter(|(id, _)| !overridden.contains(id))
        .chain(restricted)
        .map(|(_, v)| v.check)
        .collect()
}

/// What `meta` and `spec` fail at `lv`.
pub fn evaluate(lv: LevelVersion, meta: &ObjectMeta, spec: &PodSpec) -> Violations {
    Violations(
        checks_for(lv)
            .into_iter()
            .filter_map(|check| check(meta, spec))
            .collect(),
    )
}

/// A pod's metadata and spec from the JSON of its spec.
#[cfg(test)]
pub(crate) fn test_pod(spec: serde_json::Value) -> (ObjectMeta, PodSpec) {
    (
        ObjectMeta::default(),
        serde_json::from_value(spec).expect("a pod spec"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::level::Version;

    fn lv(level: Level, version: Version) -> LevelVersion {
        LevelVersion { level, version }
    }

    /// A pod that breaks one baseline and every restricted rule.
    fn privileged_pod() -> (ObjectMeta, PodSpec) {
        test_pod(serde_json::json!({"containers": [
            {"name": "c", "image": "busybox", "securityContext": {"privileged": true}},
        ]}))
    }

    #[test]
    fn privileged_allows_everything() {
        let (m, s) = privileged_pod();
        assert!(evaluate(LevelVersion::PRIVILEGED, &m, &s).allowed());
    }

    #[test]
    fn baseline_reports_the_baseline_checks_only() {
        let (m, s) = privileged_pod();
        let v = evaluate(lv(Level::Baseline, Version::Latest), &m, &s);
        assert_eq!(
            v.details(),
            "privileged (container \"c\" must not set securityContext.privileged=true)"
        );
    }

    #[test]
    fn restricted_adds_its_checks_after_the_baseline_ones() {
        let (m, s) = privileged_pod();
        let v = evaluate(lv(Level::Restricted, Version::Latest), &m, &s);
        assert_eq!(
            v.reasons(),
            "privileged, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
        );
        assert_eq!(
            v.details(),
            "privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn older_versions_run_older_checks() {
        let (m, s) = privileged_pod();
        // Before v1.19 seccomp was not required, before v1.22 nor dropping
        // capabilities, before v1.8 nor allowPrivilegeEscalation.
        let v = evaluate(lv(Level::Restricted, Version::Minor(18)), &m, &s);
        assert_eq!(
            v.reasons(),
            "privileged, allowPrivilegeEscalation != false, runAsNonRoot != true"
        );
        let v = evaluate(lv(Level::Restricted, Version::Minor(7)), &m, &s);
        assert_eq!(v.reasons(), "privileged, runAsNonRoot != true");
        // A version newer than this server is evaluated as its newest.
        let future = evaluate(lv(Level::Restricted, Version::Minor(99)), &m, &s);
        assert_eq!(
            future,
            evaluate(lv(Level::Restricted, Version::Latest), &m, &s)
        );
    }

    #[test]
    fn restricted_checks_replace_the_baseline_checks_they_override() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            }}],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        }));
        let v = evaluate(lv(Level::Restricted, Version::Latest), &m, &s);
        assert_eq!(
            v.reasons(),
            "unrestricted capabilities, restricted volume types"
        );
        let v = evaluate(lv(Level::Baseline, Version::Latest), &m, &s);
        assert_eq!(v.reasons(), "non-default capabilities, hostPath volumes");
    }

    #[test]
    fn a_restricted_pod_passes() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            }}],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        }));
        assert!(evaluate(lv(Level::Restricted, Version::Latest), &m, &s).allowed());
    }
}
