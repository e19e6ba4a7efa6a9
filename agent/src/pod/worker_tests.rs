//! The pod worker driven end to end against a runtime that only pretends:
//! its restart policy, back-off, hook order, image changes and termination
//! sequence, as the status and the runtime calls show them. No root, no
//! process.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use tokio::sync::mpsc;

use crate::context::AgentContext;
use crate::pod::worker::{PersistedState, PodWorker, WorkerMsg};
use crate::runtime::fake::FakeRuntime;

struct Harness {
    ctx: Arc<AgentContext>,
    runtime: Arc<FakeRuntime>,
    tx: mpsc::UnboundedSender<WorkerMsg>,
    task: tokio::task::JoinHandle<()>,
    pod: Pod,
    _root: tempfile::TempDir,
}

fn pod(spec: &str) -> Pod {
    serde_yaml::from_str(&format!(
        "metadata: {{name: web, namespace: default, uid: uid-1}}\n\
         spec:\n  terminationGracePeriodSeconds: 1\n{spec}"
    ))
    .unwrap()
}

fn start(pod: Pod, runtime: FakeRuntime) -> Harness {
    start_adopting(pod, runtime, None)
}

/// A worker that takes over what a previous agent process recorded.
fn start_adopting(pod: Pod, runtime: FakeRuntime, adopted: Option<PersistedState>) -> Harness {
    let root = tempfile::tempdir().unwrap();
    let ctx = Arc::new(AgentContext::detached("node-a", root.path()).unwrap());
    if adopted.is_some() {
        // The pod dir the previous process made.
        std::fs::create_dir_all(ctx.pods_dir().join("uid-1")).unwrap();
    }
    let runtime = Arc::new(runtime);
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = PodWorker::new(ctx.clone(), runtime.clone(), Arc::new(pod.clone()));
    let task = tokio::spawn(worker.run(rx, adopted));
    Harness {
        ctx,
        runtime,
        tx,
        task,
        pod,
        _root: root,
    }
}

impl Harness {
    fn status(&self) -> Option<PodStatus> {
        Some(self.ctx.status.find("default", "web")?.status.clone())
    }

    fn container(&self, name: &str) -> Option<ContainerStatus> {
        self.status()?
            .container_statuses?
            .into_iter()
            .chain(self.status()?.init_container_statuses.unwrap_or_default())
            .find(|c| c.name == name)
    }

    fn running(&self, name: &str, restarts: i32) -> Option<ContainerStatus> {
        self.container(name).filter(|c| {
            c.restart_count == restarts && c.state.as_ref().is_some_and(|s| s.running.is_some())
        })
    }

    fn waiting_reason(&self, name: &str) -> Option<String> {
        self.container(name)?.state?.waiting?.reason
    }

    fn events(&self) -> Vec<(String, String)> {
        self.ctx
            .events
            .list()
            .into_iter()
            .map(|e| (e.reason, e.message))
            .collect()
    }

    /// Polls `check` until it yields; fails naming `what` with the calls so far.
    async fn until<T>(&self, what: &str, check: impl Fn(&Self) -> Option<T>) -> T {
        for _ in 0..1000 {
            if let Some(v) = check(self) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {what}\ncalls: {:?}\nstatus: {:?}",
            self.runtime.calls(),
            self.status()
        );
    }

    fn update(&self, change: impl FnOnce(&mut Pod)) {
        let mut pod = self.pod.clone();
        change(&mut pod);
        self.tx.send(WorkerMsg::Update(Arc::new(pod))).unwrap();
    }

    async fn stop(self, grace: Duration) -> Vec<String> {
        self.tx
            .send(WorkerMsg::Stop { grace: Some(grace) })
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the worker ends after a stop")
            .unwrap();
        self.runtime.calls()
    }
}

fn starts(calls: &[String], name: &str) -> usize {
    calls
        .iter()
        .filter(|c| c.starts_with(&format!("start {name} ")))
        .count()
}

fn position(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("no {call:?} in {calls:?}"))
}

const WEB: &str = "  containers:\n  - {name: web, image: busybox}\n";

#[tokio::test]
async fn always_restarts_at_once_then_backs_off() {
    let h = start(pod(WEB), FakeRuntime::default());
    h.until("web running", |h| h.running("web", 0)).await;
    assert_eq!(h.runtime.calls(), ["run_pod_sandbox", "start web busybox"]);

    assert!(h.runtime.exit("web", 0));
    h.until("web restarted", |h| h.running("web", 1)).await;

    assert!(h.runtime.exit("web", 1));
    h.until("web in back-off", |h| {
        (h.waiting_reason("web")? == "CrashLoopBackOff").then_some(())
    })
    .await;
    let web = h.container("web").unwrap();
    assert_eq!(web.restart_count, 1);
    assert_eq!(
        web.state.unwrap().waiting.unwrap().message.as_deref(),
        Some("back-off 10s restarting failed container=web")
    );
    assert_eq!(
        web.last_state.unwrap().terminated.unwrap().exit_code,
        1,
        "the run that failed"
    );
    assert!(h.events().contains(&(
        "BackOff".into(),
        "Back-off restarting failed container".into()
    )));
    let calls = h.stop(Duration::from_secs(1)).await;
    assert_eq!(starts(&calls, "web"), 2, "{calls:?}");
}

#[tokio::test]
async fn on_failure_and_never_leave_a_finished_container_down() {
    for (policy, code, phase) in [
        ("OnFailure", 0, "Succeeded"),
        ("Never", 0, "Succeeded"),
        ("Never", 1, "Failed"),
    ] {
        let h = start(
            pod(&format!("  restartPolicy: {policy}\n{WEB}")),
            FakeRuntime::default(),
        );
        h.until("web running", |h| h.running("web", 0)).await;
        assert!(h.runtime.exit("web", code));
        h.until(phase, |h| {
            (h.status()?.phase.as_deref() == Some(phase)).then_some(())
        })
        .await;
        let calls = h.stop(Duration::from_secs(1)).await;
        assert_eq!(starts(&calls, "web"), 1, "{policy} exit {code}: {calls:?}");
    }
    // OnFailure restarts a failed one.
    let h = start(
        pod(&format!("  restartPolicy: OnFailure\n{WEB}")),
        FakeRuntime::default(),
    );
    h.until("web running", |h| h.running("web", 0)).await;
    h.runtime.exit("web", 3);
    h.until("web restarted", |h| h.running("web", 1)).await;
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_new_image_kills_and_restarts_only_that_container() {
    let h = start(
        pod("  containers:\n  - {name: web, image: busybox}\n  - {name: side, image: busybox}\n"),
        FakeRuntime::default(),
    );
    h.until("both running", |h| {
        h.running("web", 0).and(h.running("side", 0))
    })
    .await;
    h.update(|p| p.spec.as_mut().unwrap().containers[0].image = Some("busybox:v2".into()));
    let web = h
        .until("web running busybox:v2", |h| {
            h.running("web", 1).filter(|c| c.image == "busybox:v2")
        })
        .await;
    assert_eq!(web.image_id, "fake://busybox:v2");
    assert!(h.events().contains(&(
        "Killing".into(),
        "Container web definition changed, will be restarted".into()
    )));
    let calls = h.runtime.calls();
    assert!(
        position(&calls, "signal web SIGTERM") < position(&calls, "start web busybox:v2"),
        "the old run stops before the new one starts: {calls:?}"
    );
    assert_eq!(starts(&calls, "side"), 1, "side is left alone: {calls:?}");
    assert_eq!(h.container("side").unwrap().restart_count, 0);
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_new_image_ends_a_back_off_and_a_failed_pull() {
    let runtime = FakeRuntime::default();
    runtime.set_image_missing("busybox:nope");
    let h = start(
        pod("  containers:\n  - {name: web, image: busybox:nope}\n"),
        runtime,
    );
    h.until("ErrImagePull", |h| {
        (h.waiting_reason("web")? == "ErrImagePull").then_some(())
    })
    .await;
    h.update(|p| p.spec.as_mut().unwrap().containers[0].image = Some("busybox".into()));
    h.until("web running busybox", |h| {
        h.running("web", 0).filter(|c| c.image == "busybox")
    })
    .await;
    // In CrashLoopBackOff (10 s to wait), a new image starts at once.
    h.runtime.exit("web", 1);
    h.until("web restarted", |h| h.running("web", 1)).await;
    h.runtime.exit("web", 1);
    h.until("web in back-off", |h| {
        (h.waiting_reason("web")? == "CrashLoopBackOff").then_some(())
    })
    .await;
    h.update(|p| p.spec.as_mut().unwrap().containers[0].image = Some("busybox:v2".into()));
    h.until("web running busybox:v2", |h| {
        h.running("web", 2).filter(|c| c.image == "busybox:v2")
    })
    .await;
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn hooks_run_in_the_kubelets_order() {
    let h = start(
        pod("  containers:
  - name: a
    image: busybox
    lifecycle:
      postStart: {exec: {command: [echo, post-a]}}
      preStop: {exec: {command: [echo, pre-a]}}
  - {name: b, image: busybox}
"),
        FakeRuntime::default(),
    );
    h.until("both running", |h| h.running("a", 0).and(h.running("b", 0)))
        .await;
    // postStart right after its container starts, before the next one.
    assert_eq!(
        h.runtime.calls(),
        [
            "run_pod_sandbox",
            "start a busybox",
            "exec a echo post-a",
            "start b busybox"
        ]
    );
    let calls = h.stop(Duration::from_secs(1)).await;
    // preStop before SIGTERM; the sandbox goes last.
    assert!(position(&calls, "exec a echo pre-a") < position(&calls, "signal a SIGTERM"));
    assert_eq!(calls.last().unwrap(), "remove_pod_sandbox");
}

#[tokio::test]
async fn a_failed_exec_hook_reads_as_the_kubelets_handler_runner_words_it() {
    let runtime = FakeRuntime::default();
    runtime.answer_execs_in(
        "web",
        crate::runtime::cri::ExecSyncResponse {
            stdout: b"cannot configure\n".to_vec(),
            stderr: b"no such file".to_vec(),
            exit_code: 3,
        },
    );
    let h = start(
        pod("  restartPolicy: Never
  containers:
  - name: web
    image: busybox
    lifecycle:
      postStart: {exec: {command: [sh, -c, configure]}}
      preStop: {exec: {command: [sh, -c, drain]}}
"),
        runtime,
    );
    let terminated = h
        .until("web terminated", |h| h.container("web")?.state?.terminated)
        .await;
    assert_eq!(
        terminated.message.as_deref(),
        Some(
            "Exec lifecycle hook ([sh -c configure]) for Container \"web\" in Pod \"web_default(uid-1)\" \
             failed - error: command 'sh -c configure' exited with 3: no such file, \
             message: \"cannot configure\\nno such file\""
        )
    );
    // The Events leave the hooks' output out, as the kubelet's do.
    let events = h.events();
    assert!(
        events.contains(&("FailedPostStartHook".into(), "PostStartHook failed".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("FailedPreStopHook".into(), "PreStopHook failed".into())),
        "{events:?}"
    );
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_restarted_agent_asks_the_runtime_what_is_left_and_removes_the_rest() {
    use crate::pod::slot::{ContainerSlot, CurrentRun};
    use crate::runtime::sandbox::SandboxState;
    use crate::runtime::shim::ContainerStarted;
    let mut slot = ContainerSlot::new("web", "busybox");
    slot.current = Some(CurrentRun {
        container_id: "old-run".into(),
        started: ContainerStarted {
            pid: 4242,
            shim_pid: 4242,
            started_at: jiff::Timestamp::now(),
        },
        image_id: "fake://busybox".into(),
    });
    slot.creating = Some("half-made-run".into());
    let recorded = PersistedState {
        sandbox: Some(SandboxState {
            id: "old-sandbox".into(),
            pid: 0,
            start_ticks: 0,
            host_network: false,
            share_pid: false,
            user_namespace: None,
        }),
        slots: vec![slot],
        start_time: None,
        pod_ip: None,
        sandbox_intent: None,
    };
    let h = start_adopting(pod(WEB), FakeRuntime::default(), Some(recorded));
    // Nothing a pretending runtime ran survives: the run is adopted and
    // found lost, then started again in a new sandbox.
    let web = h
        .until("web running again", |h| {
            h.container("web").filter(|c| {
                c.state.as_ref().is_some_and(|s| s.running.is_some())
                    && c.last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .is_some_and(|t| t.reason.as_deref() == Some("ContainerStatusUnknown"))
            })
        })
        .await;
    assert_ne!(web.container_id.as_deref(), Some("kubelab://old-run"));
    let calls = h.stop(Duration::from_secs(1)).await;
    // The sandbox and the run that never started go first.
    assert_eq!(
        calls[..2],
        [
            "remove_leftover half-made-run",
            "remove_leftover old-sandbox"
        ]
    );
    assert!(position(&calls, "start web busybox") > position(&calls, "run_pod_sandbox"));
}

#[tokio::test]
async fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let runtime = FakeRuntime::default();
    runtime.ignore_sigterm("web");
    let h = start(pod(WEB), runtime);
    h.until("web running", |h| h.running("web", 0)).await;
    let calls = h.stop(Duration::from_millis(100)).await;
    let term = position(&calls, "signal web SIGTERM");
    let kill = position(&calls, "kill web");
    assert!(term < kill, "{calls:?}");
    assert!(kill < position(&calls, "remove_pod_sandbox"), "{calls:?}");
}

#[tokio::test]
async fn a_shorter_active_deadline_fails_the_pod() {
    let h = start(pod(WEB), FakeRuntime::default());
    h.until("web running", |h| h.running("web", 0)).await;
    h.update(|p| p.spec.as_mut().unwrap().active_deadline_seconds = Some(1));
    h.until("DeadlineExceeded", |h| {
        let status = h.status()?;
        (status.phase.as_deref() == Some("Failed")
            && status.reason.as_deref() == Some("DeadlineExceeded"))
        .then_some(())
    })
    .await;
    let calls = h.stop(Duration::from_secs(1)).await;
    assert_eq!(starts(&calls, "web"), 1, "{calls:?}");
}
