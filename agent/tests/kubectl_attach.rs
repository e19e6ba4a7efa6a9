//! `kubectl attach` and `kubectl run -i --tty --rm` end to end: the real
//! kubectl (the oldest installed speaks SPDY/3.1, the newest WebSocket) →
//! the apiserver's `pods/attach` (an upgrade-aware proxy) → the agent's
//! `/attach/...` → the container's shim, which holds its stdin (a pipe, or
//! the terminal it was started on) and keeps writing its output to the log.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::{ApiServer, api_pod, row, wait_for};

/// The oldest and the newest kubectl installed.
const KUBECTLS: [&str; 2] = ["1.27", "1.33"];

fn kubectl_bin(version: &str) -> String {
    format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A container that answers each line of its stdin, and says when its
/// stdin ends (`stdinOnce`: when the attached client's does).
fn reader_pod(name: &str, node: &str) -> String {
    api_pod(
        name,
        node,
        "  containers:
  - name: main
    image: busybox
    stdin: true
    stdinOnce: true
    command: [\"sh\", \"-c\", \"while read line; do echo \\\"got $line\\\"; done; echo stdin ended\"]
  restartPolicy: Never
",
    )
}

#[test]
fn kubectl_attach_and_run_interactively() {
    let api = ApiServer::start();
    let node = api.join();
    let node_name = node.node_name.clone();

    for version in KUBECTLS {
        let pod = format!("reader-{}", version.replace('.', "-"));
        api.apply(&reader_pod(&pod, &node_name));
        wait_for(
            &node,
            &format!("{pod} running"),
            Duration::from_secs(60),
            || {
                let cells = row(&api.try_kubectl(&["get", "pods"])?, &pod)?;
                (cells[2] == "Running").then_some(())
            },
        );
        let mut child = Command::new(kubectl_bin(version))
            .env("KUBECONFIG", api.kubeconfig())
            .env("HOME", api.dir.path())
            .arg("--cache-dir")
            .arg(api.dir.path().join(format!("kube-cache-{version}")))
            .args(["attach", "-i", &pod])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl attach");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"one\ntwo\n").unwrap();
            // kubectl reads stdin as soon as it attaches; its end closes
            // the container's stdin (stdinOnce) and the loop ends.
        }
        let out = child.wait_with_output().unwrap();
        let said = text(&out.stdout);
        assert!(
            said.contains("got one\ngot two\nstdin ended"),
            "kubectl {version} attach: stdout {said:?}, stderr {:?}\nagent:\n{}",
            text(&out.stderr),
            common::tail(&node.agent_log(), 30)
        );
        // The output went to the container's log as well.
        wait_for(&node, "the log", Duration::from_secs(30), || {
            let log = api.try_kubectl(&["logs", &pod])?;
            log.contains("got two\nstdin ended").then_some(())
        });
        // Its stdin is gone: the container has completed.
        wait_for(
            &node,
            &format!("{pod} completed"),
            Duration::from_secs(60),
            || {
                let cells = row(&api.try_kubectl(&["get", "pods"])?, &pod)?;
                (cells[2] == "Completed").then_some(())
            },
        );
    }

    // A completed pod is refused in words.
    let done = format!("reader-{}", KUBECTLS[1].replace('.', "-"));
    let refused = api.kubectl_with(&["attach", &done], None);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("cannot attach a container in a completed pod"),
        "{}",
        text(&refused.stderr)
    );

    // `kubectl run -i --tty --rm` (bound to this node, as every pod here
    // is): a terminal in the container, the
    // client's size on it (30 rows, 100 columns under `script`), typed input
    // reaching it, and the pod gone afterwards.
    for version in KUBECTLS {
        let pod = format!("tty-{}", version.replace('.', "-"));
        let cmd = format!(
            "stty rows 30 cols 100; {} --cache-dir {} run {pod} --image=busybox --restart=Never --overrides='{{\"spec\":{{\"nodeName\":\"{node_name}\"}}}}' -i --tty --rm -- sh -c 'read line; tty; stty size; echo \"got $line\"'",
            kubectl_bin(version),
            api.dir
                .path()
                .join(format!("kube-cache-{version}"))
                .display()
        );
        let mut script = Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .env("KUBECONFIG", api.kubeconfig())
            .env("HOME", api.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        {
            use std::io::Write;
            let mut stdin = script.stdin.take().unwrap();
            // Typed once kubectl has attached (it says so on the screen).
            let start = std::time::Instant::now();
            while row(&api.try_kubectl(&["get", "pods"]).unwrap_or_default(), &pod)
                .is_none_or(|cells| cells[2] != "Running")
            {
                if start.elapsed() > Duration::from_secs(60) {
                    drop(stdin);
                    let _ = script.kill();
                    let out = script.wait_with_output().unwrap();
                    panic!(
                        "kubectl {version} run: {pod} never ran: {}{}\n{}",
                        text(&out.stdout),
                        text(&out.stderr),
                        api.kubectl(&["get", "pods", "-o", "wide"])
                    );
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            std::thread::sleep(Duration::from_secs(3));
            stdin.write_all(b"typed\r").unwrap();
            std::thread::sleep(Duration::from_secs(2));
        }
        let out = script.wait_with_output().unwrap();
        let screen = text(&out.stdout);
        assert!(
            screen.contains("/dev/pts/0"),
            "kubectl {version}: a terminal of the container's own devpts: {screen:?}\nagent:\n{}",
            common::tail(&node.agent_log(), 30)
        );
        assert!(
            screen.contains("30 100"),
            "kubectl {version}: the client's size: {screen:?}"
        );
        assert!(
            screen.contains("got typed"),
            "kubectl {version}: typed input: {screen:?}"
        );
        wait_for(
            &node,
            &format!("{pod} deleted"),
            Duration::from_secs(60),
            || {
                let pods = api.try_kubectl(&["get", "pods"])?;
                row(&pods, &pod).is_none().then_some(())
            },
        );
    }

    // A shell on a terminal with `stdinOnce`: when its attached client
    // leaves (the user's terminal closes under kubectl), the terminal is
    // hung up and the shell ends, instead of waiting on a terminal nobody
    // can type into any more.
    for version in KUBECTLS {
        let pod = format!("once-{}", version.replace('.', "-"));
        api.apply(&api_pod(
            &pod,
            &node_name,
            "  containers:
  - name: main
    image: busybox
    stdin: true
    stdinOnce: true
    tty: true
    command: [\"sh\"]
  restartPolicy: Never
",
        ));
        wait_for(
            &node,
            &format!("{pod} running"),
            Duration::from_secs(60),
            || {
                let cells = row(&api.try_kubectl(&["get", "pods"])?, &pod)?;
                (cells[2] == "Running").then_some(())
            },
        );
        let cmd = format!(
            "exec {} --cache-dir {} attach -it {pod}",
            kubectl_bin(version),
            api.dir
                .path()
                .join(format!("kube-cache-{version}"))
                .display()
        );
        let mut script = Command::new("script")
            .args(["-qfc", &cmd, "/dev/null"])
            .env("KUBECONFIG", api.kubeconfig())
            .env("HOME", api.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run script");
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let screen = screen.clone();
            let mut out = script.stdout.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        {
            use std::io::Write;
            let mut stdin = script.stdin.take().unwrap();
            // Typed until the shell has answered (kubectl attaches first).
            wait_for(
                &node,
                &format!("kubectl {version} attach to {pod} to answer"),
                Duration::from_secs(60),
                || {
                    let _ = stdin.write_all(b"echo attached-$((6*7))\r");
                    std::thread::sleep(Duration::from_secs(1));
                    screen.lock().unwrap().contains("attached-42").then_some(())
                },
            );
            // The client leaves: its terminal goes, and kubectl with it.
            let _ = script.kill();
            let _ = script.wait();
            drop(stdin);
        }
        let _ = reader.join();
        wait_for(
            &node,
            &format!("{pod}'s shell to end once kubectl {version} left"),
            Duration::from_secs(60),
            || {
                let cells = row(&api.try_kubectl(&["get", "pods"])?, &pod)?;
                (cells[2] == "Completed").then_some(())
            },
        );
    }

    api.delete_all_pods();
}
