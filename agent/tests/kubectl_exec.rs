//! `kubectl exec` end to end: the real kubectl (WebSocket, v5.channel.k8s.io,
//! from 1.30; SPDY/3.1 streams before) → the real apiserver's `pods/exec` →
//! the agent's `/exec/...` → a process inside the container's namespaces and
//! cgroup.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cluster::{ApiServer, api_pod, row, wait_for};

const SHELL: &str = "  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
  - name: done
    image: busybox
    command: [\"true\"]
  restartPolicy: Never
";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn exec(api: &ApiServer, args: &[&str], stdin: Option<&str>) -> Output {
    let mut full = vec!["exec"];
    full.extend_from_slice(args);
    api.kubectl_with(&full, stdin)
}

/// The oldest kubectl installed (SPDY) and the newest (WebSocket).
const KUBECTLS: [&str; 2] = ["1.27", "1.33"];

/// `kubectl exec ARGS` with kubectl `version`.
fn exec_with(api: &ApiServer, version: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut full = vec!["exec"];
    full.extend_from_slice(args);
    api.kubectl_version_with(version, &full, stdin)
}

/// The `<controller>` line of a /proc/<pid>/cgroup text.
#[test]
fn kubectl_exec_runs_commands_inside_the_container() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    api.apply(&api_pod("shell", &name, SHELL));
    wait_for(&node, "shell running", Duration::from_secs(40), || {
        let cells = row(&api.try_kubectl(&["get", "pods"])?, "shell")?;
        // One container runs, the other has completed: 1/2, and kubectl
        // calls that NotReady.
        (cells[1] == "1/2"
            && api.try_kubectl(&[
                "get",
                "pod",
                "shell",
                "-o",
                "jsonpath={.status.containerStatuses[?(@.name==\"done\")].state.terminated.reason}",
            ])? == "Completed")
            .then_some(())
    });

    // Both streams, and kubectl exits with the command's code; stdin reaches
    // the command, and its end (a v5 close, or the SPDY stream's FIN) ends
    // `cat`: over both protocols.
    for version in KUBECTLS {
        let out = exec_with(
            &api,
            version,
            &[
                "shell",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            None,
        );
        assert_eq!(
            text(&out.stdout),
            "out\n",
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).starts_with("err\n"),
            "kubectl {version}: {:?}",
            text(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        let ok = exec_with(&api, version, &["shell", "-c", "main", "--", "true"], None);
        assert_eq!(
            ok.status.code(),
            Some(0),
            "kubectl {version}: {}",
            text(&ok.stderr)
        );
        let input = "hello\nfrom stdin\n";
        let out = exec_with(
            &api,
            version,
            &["-i", "shell", "-c", "main", "--", "cat"],
            Some(input),
        );
        assert_eq!(
            text(&out.stdout),
            input,
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        assert!(out.status.success(), "kubectl {version}");
    }

    // The container's cgroup namespace (every path its root, as its PID 1
    // sees them) and its cgroups: the exec'd shell is listed in the
    // container's own cgroup.procs, read through its /sys/fs/cgroup view.
    let own = api.kubectl(&[
        "exec",
        "shell",
        "-c",
        "main",
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    let init = api.kubectl(&["exec", "shell", "-c", "main", "--", "cat", "/proc/1/cgroup"]);
    assert_eq!(own, init);
    assert!(own.lines().all(|l| l.ends_with(":/")), "{own}");
    let procs_files = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec!["/sys/fs/cgroup/cgroup.procs".to_string()]
    } else {
        ["memory", "pids", "cpu"]
            .map(|c| format!("/sys/fs/cgroup/{c}/cgroup.procs"))
            .to_vec()
    };
    for file in procs_files {
        let listed = api.kubectl(&[
            "exec",
            "shell",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            &format!("grep -qx $$ {file} && echo listed || echo missing"),
        ]);
        assert_eq!(listed.trim(), "listed", "exec runs in {file}'s cgroup");
    }
    assert_eq!(
        api.kubectl(&["exec", "shell", "-c", "main", "--", "hostname"])
            .trim(),
        "shell"
    );
    let ps = api.kubectl(&["exec", "shell", "-c", "main", "--", "ps", "-o", "pid,args"]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sleep", "3600"]),
        "the container's PID namespace: {ps}"
    );

    // Errors a user can cause, in words.
    let missing = exec(&api, &["shell", "-c", "nope", "--", "true"], None);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("container nope is not valid for pod shell"),
        "{}",
        text(&missing.stderr)
    );
    let stopped = exec(&api, &["shell", "-c", "done", "--", "true"], None);
    assert!(!stopped.status.success());
    assert!(
        text(&stopped.stderr).contains("container done in pod default/shell is not running"),
        "{}",
        text(&stopped.stderr)
    );
    let ghost = exec(&api, &["ghost", "--", "true"], None);
    assert!(!ghost.status.success());
    assert!(
        text(&ghost.stderr).contains("pods \"ghost\" not found"),
        "{}",
        text(&ghost.stderr)
    );
    let not_found = exec(&api, &["shell", "-c", "main", "--", "no-such-tool"], None);
    assert_eq!(not_found.status.code(), Some(127));
    assert!(
        text(&not_found.stderr).contains("\"no-such-tool\": executable file not found in $PATH"),
        "{}",
        text(&not_found.stderr)
    );

    // A terminal: `script` gives kubectl one (30 rows, 100 columns); the
    // command gets a pty of the same size, and what is typed reaches it.
    let cmd = format!(
        "stty rows 30 cols 100; kubectl --cache-dir {} exec -it shell -c main -- sh -c 'tty; stty size; read line; echo \"got $line\"; exit 4'",
        api.dir.path().join("kube-cache").display()
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
        // Typed once the shell is up: it reads a line from the terminal.
        std::thread::sleep(Duration::from_secs(3));
        stdin.write_all(b"typed\r").unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    let out = script.wait_with_output().unwrap();
    let screen = text(&out.stdout);
    assert!(
        screen.contains("/dev/pts/0"),
        "a terminal of the container's own devpts: {screen:?}"
    );
    assert!(screen.contains("30 100"), "the client's size: {screen:?}");
    assert!(screen.contains("got typed"), "typed input: {screen:?}");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{screen:?} {}",
        text(&out.stderr)
    );

    // The base64 channel protocol (`v4.base64.channel.k8s.io`, for clients
    // that only send text): a WebSocket client asking for it alone gets it,
    // its text frames reach stdin, and every channel comes back as text,
    // base64 after an ASCII channel digit.
    if let Some(out) = base64_exec(&api) {
        let said = text(&out.stdout);
        assert!(
            out.status.success(),
            "base64 exec: {said}{}",
            text(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
        assert_eq!(got["protocol"], "v4.base64.channel.k8s.io", "{got}");
        assert_eq!(got["opcodes"], serde_json::json!(["text"]), "{got}");
        assert_eq!(got["1"], "got hello\n", "{got}");
        assert_eq!(got["2"], "oops\n", "{got}");
        let status: serde_json::Value = serde_json::from_str(got["3"].as_str().unwrap()).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "4", "{status}");
    }

    api.kubectl(&["delete", "pod", "shell", "--timeout=30s"]);
}

/// `kubectl cp` both ways: it runs `tar` in the container through exec,
/// the archive on stdin (in) or stdout (out).
#[test]
fn kubectl_cp_copies_files_into_and_out_of_a_container() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    api.apply(&api_pod(
        "box",
        &name,
        "  containers:\n  - name: main\n    image: busybox\n    command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n",
    ));
    wait_for(&node, "box running", Duration::from_secs(40), || {
        let cells = row(&api.try_kubectl(&["get", "pods"])?, "box")?;
        (cells[2] == "Running").then_some(())
    });
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("notes.txt");
    let content = "line one\nline two: copied with kubectl cp\n".repeat(500);
    std::fs::write(&local, &content).unwrap();
    let to = api.kubectl_with(&["cp", local.to_str().unwrap(), "box:/tmp/notes.txt"], None);
    assert!(to.status.success(), "kubectl cp in: {}", text(&to.stderr));
    let inside = exec(&api, &["box", "--", "md5sum", "/tmp/notes.txt"], None);
    let local_sum = Command::new("md5sum").arg(&local).output().unwrap();
    assert_eq!(
        text(&inside.stdout).split_whitespace().next(),
        text(&local_sum.stdout).split_whitespace().next(),
        "the copy in the container differs"
    );
    let back = dir.path().join("back.txt");
    let from = api.kubectl_with(&["cp", "box:/tmp/notes.txt", back.to_str().unwrap()], None);
    assert!(
        from.status.success(),
        "kubectl cp out: {}",
        text(&from.stderr)
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), content);
    api.delete_all_pods();
}

/// A WebSocket client of `pods/exec` speaking `v4.base64.channel.k8s.io`
/// (Python's websocket-client, with the credentials of the kubeconfig as
/// the Kubernetes Python client loads them): sends `hello` on stdin, prints
/// what each channel said and the kinds of frames that came.
const BASE64_EXEC: &str = r#"
import base64, json, sys, websocket
from urllib.parse import urlencode
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
c = client.Configuration.get_default_copy()
query = urlencode([("container", "main"), ("command", "sh"), ("command", "-c"),
                   ("command", "read l; echo got $l; echo oops >&2; exit 4"),
                   ("stdin", "true"), ("stdout", "true"), ("stderr", "true")])
url = c.host.replace("https://", "wss://") + "/api/v1/namespaces/default/pods/shell/exec?" + query
headers = [f"authorization: {c.api_key['authorization']}"] if "authorization" in c.api_key else []
ws = websocket.create_connection(url, subprotocols=["v4.base64.channel.k8s.io"], header=headers,
    sslopt={"ca_certs": c.ssl_ca_cert, "certfile": c.cert_file, "keyfile": c.key_file}, timeout=60)
ws.send("0" + base64.b64encode(b"hello\n").decode())
got, opcodes = {}, set()
while True:
    op, data = ws.recv_data()
    if op == websocket.ABNF.OPCODE_CLOSE:
        break
    opcodes.add("text" if op == websocket.ABNF.OPCODE_TEXT else "binary")
    channel = chr(data[0])
    got[channel] = got.get(channel, "") + base64.b64decode(data[1:]).decode()
got["protocol"] = ws.subprotocol
got["opcodes"] = sorted(opcodes)
print(json.dumps(got))
"#;

/// Runs [`BASE64_EXEC`] when Debian's python3-kubernetes (with its
/// websocket-client) is installed; `None` otherwise, said on stderr.
fn base64_exec(api: &ApiServer) -> Option<Output> {
    let has_client = Command::new("/usr/bin/python3")
        .args(["-c", "import kubernetes, websocket"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        eprintln!("python3-kubernetes is not installed: skipping the base64 channel client");
        return None;
    }
    Some(
        Command::new("timeout")
            .arg("90")
            .arg("/usr/bin/python3")
            .args(["-c", BASE64_EXEC])
            .arg(api.kubeconfig())
            .output()
            .expect("run python3"),
    )
}
