//! The experiment pods, described (pure): a busy loop for CPU, a paced
//! allocator for memory. Both run on the busybox image: `sh` and `awk`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, Pod, PodSpec, Probe, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelab_rules::cpu_burst::CPU_BURST_ANNOTATION;

/// The label that finds an experiment's pod in `/pods`.
pub const RUN_LABEL: &str = "kubelab.dev/experiment";
/// The name of the experiment's one container.
pub const CONTAINER: &str = "workload";

/// What the pod asks for: quantities as the user wrote them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    /// CFS burst, set with the `kubelab.io/cpu-burst` annotation.
    pub cpu_burst: Option<String>,
}

/// `n` busy loops: enough of them that the demand exceeds the limit.
pub fn cpu_command(workers: u32) -> Vec<String> {
    let script = if workers <= 1 {
        "while :; do :; done".to_string()
    } else {
        format!("for i in $(seq {workers}); do (while :; do :; done) & done; wait")
    };
    vec!["sh".into(), "-c".into(), script]
}

/// A bursty workload's rhythm: spin for `spike`, once every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spikes {
    pub spike: Duration,
    pub every: Duration,
}

/// A bursty workload: `n` loops that each spin for the spike, then rest for
/// the rest of the interval. The spin runs in a child the loop kills when
/// `usleep` returns, so a spike lasts its wall-clock time whether or not the
/// quota throttles it: what burst changes is how much of it gets the CPU.
pub fn spiky_command(workers: u32, spikes: Spikes) -> Vec<String> {
    let spin = spikes.spike.as_micros().max(1);
    let rest = spikes.every.saturating_sub(spikes.spike).as_micros().max(1);
    let one = format!(
        "while :; do (while :; do :; done) & p=$!; usleep {spin}; kill $p; wait $p 2>/dev/null; \
         usleep {rest}; done"
    );
    let script = if workers <= 1 {
        one
    } else {
        format!("for i in $(seq {workers}); do ({one}) & done; wait")
    };
    vec!["sh".into(), "-c".into(), script]
}

/// Busy loops for a limit: one more than the whole cores in it (a 250m limit
/// gets 1, 1000m gets 2), at most `cpus`.
pub fn workers_for(limit_millis: i64, cpus: usize) -> u32 {
    let wanted = (limit_millis.max(0) / 1000 + 1) as usize;
    wanted.clamp(1, cpus.max(1)) as u32
}

/// Allocates and touches `total` bytes in chunks over `ramp_secs`, then sleeps.
/// awk keeps every chunk in an array element (a copy, so every page is
/// written), which makes the working set grow by exactly one chunk a step.
pub fn memory_command(total: u64, ramp_secs: f64) -> Vec<String> {
    const MIB: u64 = 1 << 20;
    let chunk = (total / 256).max(MIB).div_ceil(MIB) * MIB;
    let steps = total.div_ceil(chunk).max(1);
    let delay = (ramp_secs / steps as f64).max(0.0);
    let program = format!(
        "BEGIN {{ s = sprintf(\"%{chunk}s\", \"\"); \
         for (i = 0; i < {steps}; i++) {{ a[i] = s; system(\"sleep {delay:.3}\") }} \
         while (1) system(\"sleep 3600\") }}"
    );
    vec!["awk".into(), program]
}

/// Which probe the probe experiment watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeKind {
    /// Failing it restarts the container.
    Liveness,
    /// Failing it takes the container out of service (ready: false).
    Readiness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

/// The probe experiment's probe and when its workload turns unhealthy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub period_seconds: i32,
    pub failure_threshold: i32,
    /// Seconds after its start when the container turns unhealthy.
    pub fail_after: f64,
}

impl ProbeSpec {
    /// When the kubelet acts after health is lost: the first failing probe
    /// comes within one period, then `failureThreshold - 1` more are needed.
    pub fn expected_detection(&self) -> (f64, f64) {
        let p = f64::from(self.period_seconds);
        let f = f64::from(self.failure_threshold.max(1));
        ((f - 1.0) * p, f * p)
    }
}

const HEALTH_FILE: &str = "/tmp/healthy";

/// Healthy (its health file exists) for `fail_after` seconds, then not.
pub fn probe_command(fail_after: f64) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "touch {HEALTH_FILE}; sleep {fail_after:.1}; rm -f {HEALTH_FILE}; \
             echo health lost; exec sleep 3600"
        ),
    ]
}

/// Adds the spec's probe (`exec: cat /tmp/healthy`) to the pod's container.
pub fn with_probe(mut pod: Pod, spec: &ProbeSpec) -> Pod {
    let probe = Probe {
        exec: Some(ExecAction {
            command: Some(vec!["cat".into(), HEALTH_FILE.into()]),
        }),
        period_seconds: Some(spec.period_seconds),
        failure_threshold: Some(spec.failure_threshold),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        match spec.kind {
            ProbeKind::Liveness => c.liveness_probe = Some(probe),
            ProbeKind::Readiness => c.readiness_probe = Some(probe),
        }
    }
    pod
}

/// The experiment's pod: one container, the run label, no grace period (a
/// busy loop ignores SIGTERM; the next run must not compete with it).
pub fn pod(
    name: &str,
    run_id: &str,
    image: &str,
    command: Vec<String>,
    resources: &Resources,
) -> Pod {
    let map = |pairs: [(&str, &Option<String>); 2]| {
        let m: BTreeMap<String, Quantity> = pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), Quantity(v.clone()?))))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                RUN_LABEL.to_string(),
                run_id.to_string(),
            )])),
            annotations: resources
                .cpu_burst
                .as_ref()
                .map(|b| BTreeMap::from([(CPU_BURST_ANNOTATION.to_string(), b.clone())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(0),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(image.to_string()),
                command: Some(command),
                resources: Some(ResourceRequirements {
                    requests: map([
                        ("cpu", &resources.cpu_request),
                        ("memory", &resources.memory_request),
                    ]),
                    limits: map([
                        ("cpu", &resources.cpu_limit),
                        ("memory", &resources.memory_limit),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// The manifest file's text.
pub fn manifest(pod: &Pod) -> String {
    let mut text = String::from("# Written by `kubelab experiment`; removed when it ends.\n");
    // (a k8s-openapi Pod writes its own apiVersion and kind)
    text.push_str(&serde_yaml::to_string(pod).expect("a pod serializes"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_pod_manifest() {
        let res = Resources {
            cpu_limit: Some("500m".into()),
            cpu_request: Some("250m".into()),
            ..Default::default()
        };
        let text = manifest(&pod("exp-cpu", "r1", "busybox", cpu_command(1), &res));
        let back: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back["kind"], "Pod");
        assert_eq!(back["metadata"]["labels"][RUN_LABEL], "r1");
        let c = &back["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        assert_eq!(c["resources"]["requests"]["cpu"], "250m");
        assert!(c["resources"]["limits"].get("memory").is_none());
        assert_eq!(c["command"][2], "while :; do :; done");
        assert_eq!(back["spec"]["terminationGracePeriodSeconds"], 0);
        // The agent's own manifest reader takes it.
        let parsed: Pod = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed.metadata.name.as_deref(), Some("exp-cpu"));
    }

    #[test]
    fn spiky_pod_with_burst() {
        let res = Resources {
            cpu_limit: Some("200m".into()),
            cpu_burst: Some("200m".into()),
            ..Default::default()
        };
        let spikes = Spikes {
            spike: Duration::from_millis(30),
            every: Duration::from_millis(500),
        };
        let cmd = spiky_command(1, spikes);
        assert_eq!(
            cmd[2],
            "while :; do (while :; do :; done) & p=$!; usleep 30000; kill $p; wait $p 2>/dev/null; \
             usleep 470000; done"
        );
        let two = spiky_command(2, spikes);
        assert!(
            two[2].starts_with("for i in $(seq 2); do (while :;"),
            "{}",
            two[2]
        );
        let back: serde_json::Value =
            serde_yaml::from_str(&manifest(&pod("exp", "r1", "busybox", cmd, &res))).unwrap();
        assert_eq!(
            back["metadata"]["annotations"][CPU_BURST_ANNOTATION],
            "200m"
        );
        let plain = pod(
            "exp",
            "r1",
            "busybox",
            cpu_command(1),
            &Resources::default(),
        );
        assert!(plain.metadata.annotations.is_none());
    }

    #[test]
    fn probe_pod() {
        let spec = ProbeSpec {
            kind: ProbeKind::Liveness,
            period_seconds: 2,
            failure_threshold: 3,
            fail_after: 1.5,
        };
        assert_eq!(spec.expected_detection(), (4.0, 6.0));
        let pod = with_probe(
            pod(
                "p",
                "r",
                "busybox",
                probe_command(1.5),
                &Resources::default(),
            ),
            &spec,
        );
        let back: serde_json::Value = serde_yaml::from_str(&manifest(&pod)).unwrap();
        let c = &back["spec"]["containers"][0];
        assert_eq!(c["livenessProbe"]["exec"]["command"][1], "/tmp/healthy");
        assert_eq!(c["livenessProbe"]["periodSeconds"], 2);
        assert_eq!(c["livenessProbe"]["failureThreshold"], 3);
        assert!(c.get("readinessProbe").is_none());
        assert!(
            c["command"][2]
                .as_str()
                .unwrap()
                .contains("sleep 1.5; rm -f /tmp/healthy")
        );
    }

    #[test]
    fn workers_exceed_the_limit() {
        assert_eq!(workers_for(100, 2), 1);
        assert_eq!(workers_for(999, 2), 1);
        assert_eq!(workers_for(1000, 2), 2);
        assert_eq!(workers_for(4000, 2), 2);
        assert!(cpu_command(3)[2].contains("seq 3"));
    }

    #[test]
    fn memory_allocator_steps() {
        let cmd = memory_command(128 << 20, 2.0);
        assert_eq!(cmd[0], "awk");
        assert!(cmd[1].contains("%1048576s"), "{}", cmd[1]);
        assert!(cmd[1].contains("i < 128;"), "{}", cmd[1]);
        assert!(cmd[1].contains("sleep 0.016"), "{}", cmd[1]);
        let big = memory_command(1 << 30, 1.0);
        assert!(big[1].contains("%4194304s"), "{}", big[1]);
        assert!(big[1].contains("i < 256;"), "{}", big[1]);
    }
}
