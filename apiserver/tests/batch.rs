//! batch/v1 through the real kubectl: Jobs and CronJobs (columns,
//! defaults, validation) and the Job, CronJob and TTL-after-finished
//! controllers running in the apiserver. No agent here: the scheduler
//! binds pods to a fake node (whose kubelet API serves logs), and the
//! tests end pods through the status subresource as a kubelet would.

mod common;

use std::time::{Duration, Instant};

use common::fake_node::FakeNode;
use common::{ApiServer, rows};
use serde_json::{Value, json};

fn json_of(s: &ApiServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&a)).unwrap()
}

/// Polls `check` until it returns `Some`, or fails with `what` after `secs`.
fn eventually<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pods of job `job` that are neither finished nor being deleted.
fn running_pods(s: &ApiServer, job: &str) -> Vec<Value> {
    let pods = json_of(s, &["get", "pods", "-l", &format!("job-name={job}")]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .cloned()
        .collect()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap().to_owned()
}

/// Ends a pod's container with `exit_code`, as its kubelet reports it.
fn finish(s: &ApiServer, pod: &str, exit_code: i32) {
    let phase = if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let container = json_of(s, &["get", "pod", pod])["spec"]["containers"][0]["name"].clone();
    let patch = json!({"status": {"phase": phase, "containerStatuses": [{
        "name": container, "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "finishedAt": now.to_string()}}}]}});
    s.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

/// [`eventually`], showing the apiserver's log when it times out.
fn eventually_or_log<T>(
    s: &ApiServer,
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; apiserver log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn with_node() -> (ApiServer, FakeNode) {
    let s = ApiServer::start();
    let ca = std::fs::read_to_string(s.data_dir().join("ca.crt")).unwrap();
    let node = FakeNode::start("node1", &ca);
    s.ok(&[
        "create",
        "-f",
        &s.file("node.yaml", &node.node_yaml("node1")),
    ]);
    (s, node)
}

#[test]
fn a_job_runs_its_pod_to_completion_and_kubectl_waits_and_reads_its_logs() {
    let (s, _node) = with_node();
    s.ok(&["create", "job", "pi", "--image=busybox", "--", "echo", "hi"]);
    let job = json_of(&s, &["get", "job", "pi"]);
    let uid = job["metadata"]["uid"].as_str().unwrap().to_owned();
    assert_eq!(
        job["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    assert_eq!(job["spec"]["backoffLimit"], 6);
    assert_eq!(job["spec"]["completionMode"], "NonIndexed");
    assert_eq!(job["metadata"]["labels"]["job-name"], "pi");

    let pod = eventually("the job's pod", 60, || running_pods(&s, "pi").pop());
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["job-name"], "pi");
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["controller-uid"], uid.as_str());
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid.as_str());
    assert_eq!(
        pod["metadata"]["finalizers"],
        json!(["batch.kubernetes.io/job-tracking"])
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    let header = &rows(&s.ok(&["get", "jobs"]))[0];
    assert_eq!(
        header,
        &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    let row = &rows(&s.ok(&["get", "jobs"]))[1];
    assert_eq!(row[..3], ["pi", "Running", "0/1"]);

    // The scheduler puts the pod on the node; kubectl logs job/pi finds it.
    let pod_name = name(&pod);
    eventually("the pod bound to node1", 60, || {
        (json_of(&s, &["get", "pod", &pod_name])["spec"]["nodeName"] == "node1").then_some(())
    });
    assert_eq!(
        s.ok(&["logs", "job/pi"]),
        "pi line 1\npi line 2\npi line 3\n"
    );

    finish(&s, &pod_name, 0);
    s.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=60s",
    ]);
    let job = json_of(&s, &["get", "job", "pi"]);
    assert_eq!(job["status"]["succeeded"], 1);
    assert!(job["status"]["completionTime"].is_string());
    let complete = condition(&job, "Complete").unwrap();
    assert_eq!(complete["reason"], "CompletionsReached");
    assert!(condition(&job, "SuccessCriteriaMet").is_some());
    // Counted, so the pod's finalizer is gone.
    let pod = json_of(&s, &["get", "pod", &pod_name]);
    assert!(pod["metadata"]["finalizers"].is_null(), "{pod}");
    let row = &rows(&s.ok(&["get", "jobs"]))[1];
    assert_eq!(row[..3], ["pi", "Complete", "1/1"]);
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=pi",
    ]);
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(events.contains("Completed"), "{events}");

    // Deleting the Job takes its pods (kubectl asks for background cascading).
    s.ok(&["delete", "job", "pi"]);
    eventually("the job's pods to go", 60, || {
        json_of(&s, &["get", "pods", "-l", "job-name=pi"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
}

const JOB_FIVE: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: five
spec:
  completions: 5
  parallelism: 2
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 0
      containers:
      - name: work
        image: busybox
";

#[test]
fn completions_run_two_at_a_time_and_the_ttl_removes_the_finished_job() {
    let s = ApiServer::start();
    s.kubectl_stdin(&["create", "-f", "-"], JOB_FIVE);
    let mut finished = 0;
    while finished < 5 {
        let active = eventually("active pods", 60, || {
            let a = running_pods(&s, "five");
            let want = 2.min(5 - finished);
            (a.len() == want).then_some(a)
        });
        // Never more than parallelism at once.
        assert!(running_pods(&s, "five").len() <= 2);
        finish(&s, &name(&active[0]), 0);
        finished += 1;
        if finished == 5 {
            break;
        }
        eventually("the success counted", 60, || {
            (json_of(&s, &["get", "job", "five"])["status"]["succeeded"] == finished).then_some(())
        });
        let row = &rows(&s.ok(&["get", "job", "five"]))[1];
        assert_eq!(row[2], format!("{finished}/5"));
    }
    // It completed (the event outlives the Job)...
    eventually("the Completed event", 60, || {
        s.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=five,reason=Completed",
        ])
        .contains("Job completed")
        .then_some(())
    });
    // ttlSecondsAfterFinished: 0: the TTL controller deletes it once complete.
    eventually("the job deleted by its TTL", 60, || {
        let out = s.kubectl(&["get", "job", "five"]);
        (!out.status.success()).then_some(())
    });
}

#[test]
fn a_failing_job_backs_off_and_stops_at_its_backoff_limit() {
    let s = ApiServer::start();
    let job = JOB_FIVE.replace("name: five", "name: flaky").replace(
        "completions: 5\n  parallelism: 2\n  ttlSecondsAfterFinished: 0",
        "backoffLimit: 1",
    );
    s.kubectl_stdin(&["create", "-f", "-"], &job);
    let first = eventually("the first pod", 60, || running_pods(&s, "flaky").pop());
    finish(&s, &name(&first), 1);
    let failed_at = jiff::Timestamp::now();
    // The replacement waits out the 10 s back-off.
    let second = eventually("the replacement pod", 90, || {
        running_pods(&s, "flaky").pop()
    });
    let created: jiff::Timestamp = second["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        created.as_second() - failed_at.as_second() >= 8,
        "replacement created {created}, failure at {failed_at}"
    );
    finish(&s, &name(&second), 1);
    s.ok(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "--timeout=60s",
    ]);
    let job = json_of(&s, &["get", "job", "flaky"]);
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert_eq!(
        condition(&job, "FailureTarget").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(job["status"]["failed"], 2);
    let row = &rows(&s.ok(&["get", "job", "flaky"]))[1];
    assert_eq!(row[1], "Failed");
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=flaky",
    ]);
    assert!(events.contains("BackoffLimitExceeded"), "{events}");
}

const JOB_INDEXED: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: idx
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  activeDeadlineSeconds: 600
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox
";

#[test]
fn indexed_jobs_give_each_pod_its_index_and_a_stable_hostname() {
    let s = ApiServer::start();
    s.kubectl_stdin(&["create", "-f", "-"], JOB_INDEXED);
    let pods = eventually("three indexed pods", 60, || {
        let p = running_pods(&s, "idx");
        (p.len() == 3).then_some(p)
    });
    let mut indexes = Vec::new();
    for p in &pods {
        let i = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            i.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{i}"));
        assert!(name(p).starts_with(&format!("idx-{i}-")));
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        indexes.push(i);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    // Index 1 fails: a new pod for index 1 replaces it after the back-off.
    let one = pods
        .iter()
        .find(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1")
        .unwrap();
    let zero = pods
        .iter()
        .find(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0")
        .unwrap();
    finish(&s, &name(zero), 0);
    finish(&s, &name(one), 1);
    eventually("index 0 recorded", 60, || {
        (json_of(&s, &["get", "job", "idx"])["status"]["completedIndexes"] == "0").then_some(())
    });
    let replacement = eventually("a new pod for index 1", 90, || {
        running_pods(&s, "idx").into_iter().find(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"
                && name(p) != name(one)
        })
    });
    for p in running_pods(&s, "idx") {
        finish(&s, &name(&p), 0);
    }
    assert!(name(&replacement).starts_with("idx-1-"));
    s.ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=60s",
    ]);
    let job = json_of(&s, &["get", "job", "idx"]);
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(job["status"]["succeeded"], 3);
    assert_eq!(job["status"]["failed"], 1);
}

#[test]
fn suspended_jobs_start_nothing_until_resumed() {
    let s = ApiServer::start();
    let job = JOB_FIVE
        .replace("name: five", "name: later")
        .replace("ttlSecondsAfterFinished: 0", "suspend: true");
    s.kubectl_stdin(&["create", "-f", "-"], &job);
    eventually("the Suspended condition", 60, || {
        condition(&json_of(&s, &["get", "job", "later"]), "Suspended")
    });
    assert!(running_pods(&s, "later").is_empty());
    assert_eq!(rows(&s.ok(&["get", "job", "later"]))[1][1], "Suspended");
    s.ok(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    eventually("two pods after resuming", 60, || {
        (running_pods(&s, "later").len() == 2).then_some(())
    });
    let job = json_of(&s, &["get", "job", "later"]);
    let resumed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .unwrap()
        .clone();
    assert_eq!(
        (resumed["status"].as_str(), resumed["reason"].as_str()),
        (Some("False"), Some("JobResumed"))
    );
}

#[test]
fn job_validation_answers_with_kube_apiservers_messages() {
    let s = ApiServer::start();
    let always = JOB_FIVE.replace("restartPolicy: Never", "restartPolicy: Always");
    let out = s.kubectl_stdin(&["create", "-f", "-"], &always);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"The Job "five" is invalid: spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never""#),
        "{err}"
    );
    s.ok(&["create", "job", "pi", "--image=busybox"]);
    let err = s.fails(&[
        "patch",
        "job",
        "pi",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"busybox:1.36"}]"#,
    ]);
    assert!(err.contains("spec.template: Invalid value"), "{err}");
    assert!(err.contains("field is immutable"), "{err}");
}

#[test]
fn cronjobs_schedule_jobs_and_kubectl_creates_one_by_hand() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "cronjob",
        "hello",
        "--image=busybox",
        "--schedule=*/1 * * * *",
        "--",
        "echo",
        "hi",
    ]);
    let cj = json_of(&s, &["get", "cronjob", "hello"]);
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(cj["spec"]["suspend"], false);
    let table = s.ok(&["get", "cronjobs"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ]
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.contains("*/1 * * * *") && row.contains("<none>") && row.contains("False"),
        "{row}"
    );
    assert_eq!(
        s.ok(&["get", "cj", "-o", "name"]).trim(),
        "cronjob.batch/hello"
    );

    // kubectl create job --from: a Job from the template, owned by the CronJob.
    s.ok(&["create", "job", "manual", "--from=cronjob/hello"]);
    let manual = json_of(&s, &["get", "job", "manual"]);
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(manual["metadata"]["ownerReferences"][0]["kind"], "CronJob");

    // The next minute's start time makes a Job named by that minute.
    let scheduled = eventually_or_log(&s, "a scheduled job", 90, || {
        let cj = json_of(&s, &["get", "cronjob", "hello"]);
        let active = cj["status"]["active"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let job = active.iter().find(|r| r["name"] != "manual")?.clone();
        Some((cj, job))
    });
    let (cj, job_ref) = scheduled;
    let last: jiff::Timestamp = cj["status"]["lastScheduleTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(last.as_second() % 60, 0);
    let job_name = job_ref["name"].as_str().unwrap().to_owned();
    assert_eq!(job_name, format!("hello-{}", last.as_second() / 60));
    let job = json_of(&s, &["get", "job", &job_name]);
    assert!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .is_string()
    );
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hello",
    ]);
    assert!(events.contains("SuccessfulCreate"), "{events}");

    // A finished Job leaves the active list and becomes lastSuccessfulTime.
    let pod = eventually("the scheduled job's pod", 60, || {
        running_pods(&s, &job_name).pop()
    });
    finish(&s, &name(&pod), 0);
    eventually("lastSuccessfulTime", 60, || {
        let cj = json_of(&s, &["get", "cronjob", "hello"]);
        let still_active = cj["status"]["active"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["name"] == job_name.as_str()));
        (!still_active && cj["status"]["lastSuccessfulTime"].is_string()).then_some(())
    });
}

#[test]
fn cronjob_validation_and_the_removed_v1beta1_version() {
    let s = ApiServer::start();
    let v1beta1 = "apiVersion: batch/v1beta1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: \"*/1 * * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: hello
            image: busybox
";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], v1beta1);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"no matches for kind "CronJob" in version "batch/v1beta1""#),
        "{err}"
    );
    let bad = v1beta1
        .replace("batch/v1beta1", "batch/v1")
        .replace("\"*/1 * * * *\"", "\"*/1 * * *\"\n  timeZone: Mars/Olympus");
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"spec.schedule: Invalid value: "*/1 * * *": expected exactly 5 fields, found 4"#
        ),
        "{err}"
    );
    let bad = v1beta1
        .replace("batch/v1beta1", "batch/v1")
        .replace("\"*/1 * * * *\"", "\"@hourly\"\n  timeZone: Mars/Olympus");
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#
        ),
        "{err}"
    );
    let good = v1beta1.replace("batch/v1beta1", "batch/v1").replace(
        "\"*/1 * * * *\"",
        "\"@hourly\"\n  timeZone: Europe/Paris\n  suspend: true",
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &good);
    let table = s.ok(&["get", "cronjobs"]);
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.contains("@hourly") && row.contains("Europe/Paris") && row.contains("True"),
        "{row}"
    );
}

const JOB_PER_INDEX: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: per-index
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 3
  backoffLimitPerIndex: 1
  maxFailedIndexes: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: busybox
---
apiVersion: batch/v1
kind: Job
metadata:
  name: leader
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 3
  successPolicy:
    rules:
    - succeededIndexes: \"0\"
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: busybox
---
apiVersion: batch/v1
kind: Job
metadata:
  name: elsewhere
spec:
  managedBy: example.com/batch-controller
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
";

fn index_of(p: &Value) -> &str {
    p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        .as_str()
        .unwrap_or_default()
}

/// The running pod of `job`'s index `i` other than `not`.
fn pod_of_index(s: &ApiServer, job: &str, i: &str, not: &[String]) -> Option<Value> {
    running_pods(s, job)
        .into_iter()
        .find(|p| index_of(p) == i && !not.contains(&name(p)))
}

#[test]
fn indexes_fail_on_their_own_a_success_policy_ends_early_and_managed_jobs_are_left_alone() {
    let s = ApiServer::start();
    let out = s.kubectl_stdin(&["create", "-f", "-"], JOB_PER_INDEX);
    assert!(out.status.success(), "{out:?}");

    // backoffLimitPerIndex: 1. Index 2 succeeds; 0 and 1 fail once and
    // come back (after their own back-off) counting one failure.
    let first = eventually_or_log(&s, "three per-index pods", 60, || {
        let p = running_pods(&s, "per-index");
        (p.len() == 3).then_some(p)
    });
    for p in &first {
        assert_eq!(
            p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
            "0"
        );
        let exit = if index_of(p) == "2" { 0 } else { 1 };
        finish(&s, &name(p), exit);
    }
    let old: Vec<String> = first.iter().map(name).collect();
    let (zero, one) = eventually_or_log(&s, "second pods for indexes 0 and 1", 90, || {
        Some((
            pod_of_index(&s, "per-index", "0", &old)?,
            pod_of_index(&s, "per-index", "1", &old)?,
        ))
    });
    for p in [&zero, &one] {
        assert_eq!(
            p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
            "1"
        );
    }
    // A second failure of index 1 fails the index, not the Job (one
    // failed index is allowed); nothing replaces it.
    finish(&s, &name(&one), 1);
    let job = eventually_or_log(&s, "index 1 failed", 60, || {
        let j = json_of(&s, &["get", "job", "per-index"]);
        (j["status"]["failedIndexes"] == "1").then_some(j)
    });
    assert!(condition(&job, "Failed").is_none(), "{job}");
    // Once index 0 succeeds every index is done, one of them failed.
    finish(&s, &name(&zero), 0);
    let job = eventually_or_log(&s, "the Job to fail", 60, || {
        let j = json_of(&s, &["get", "job", "per-index"]);
        condition(&j, "Failed").map(|c| (j, c))
    });
    let (job, failed) = job;
    assert_eq!(failed["reason"], "FailedIndexes");
    assert_eq!(failed["message"], "Job has failed indexes");
    assert_eq!(job["status"]["completedIndexes"], "0,2");
    assert_eq!(job["status"]["failedIndexes"], "1");
    assert!(pod_of_index(&s, "per-index", "1", &[]).is_none());

    // successPolicy: index 0 succeeding is enough; the other pods go.
    let leader = eventually_or_log(&s, "the leader's pod for index 0", 60, || {
        pod_of_index(&s, "leader", "0", &[])
    });
    finish(&s, &name(&leader), 0);
    let met = eventually_or_log(&s, "SuccessCriteriaMet", 60, || {
        condition(
            &json_of(&s, &["get", "job", "leader"]),
            "SuccessCriteriaMet",
        )
    });
    assert_eq!(met["reason"], "SuccessPolicy");
    assert_eq!(met["message"], "Matched rules at index 0");
    // No kubelet here: the test removes the pods the Job terminated.
    let complete = eventually_or_log(&s, "the leader Job to complete", 60, || {
        let pods = json_of(&s, &["get", "pods", "-l", "job-name=leader"]);
        for p in pods["items"].as_array().into_iter().flatten() {
            if !p["metadata"]["deletionTimestamp"].is_null() {
                s.kubectl(&["delete", "pod", &name(p), "--grace-period=0", "--force"]);
            }
        }
        condition(&json_of(&s, &["get", "job", "leader"]), "Complete")
    });
    assert_eq!(complete["reason"], "SuccessPolicy");
    assert_eq!(complete["message"], "Matched rules at index 0");

    // Managed by another controller: no pods, no status from this one,
    // though it has long since seen and finished the Jobs made with it.
    let elsewhere = json_of(&s, &["get", "job", "elsewhere"]);
    assert!(
        elsewhere["status"].as_object().is_none_or(|o| o.is_empty()),
        "{elsewhere}"
    );
    assert!(running_pods(&s, "elsewhere").is_empty());
    let err = s.fails(&[
        "patch",
        "job",
        "elsewhere",
        "--type=merge",
        "-p",
        r#"{"spec":{"managedBy":"kubernetes.io/job-controller"}}"#,
    ]);
    assert!(
        err.contains(
            r#"spec.managedBy: Invalid value: "kubernetes.io/job-controller": field is immutable"#
        ),
        "{err}"
    );
    let non_indexed = JOB_FIVE.replace("ttlSecondsAfterFinished: 0", "backoffLimitPerIndex: 1");
    let out = s.kubectl_stdin(&["create", "-f", "-"], &non_indexed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"
        ),
        "{err}"
    );
}

#[test]
fn a_schedule_that_never_comes_is_reported_invalid() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "cronjob",
        "feb31",
        "--schedule=59 23 31 2 *",
        "--image=busybox",
    ]);
    let event = eventually("an InvalidSchedule event", 90, || {
        let events = s.ok(&["events", "--for=cronjob/feb31"]);
        events.contains("InvalidSchedule").then_some(events)
    });
    assert!(
        event.contains(
            "invalid schedule: 59 23 31 2 * : time difference between two schedules is less than 1 second"
        ),
        "{event}"
    );
}
