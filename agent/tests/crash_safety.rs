//! `kill -9` of the agent while pods start: over many rounds the agent is
//! SIGKILLed at a random moment of pod start-up and started again. Every pod
//! must end with exactly one sandbox and one shim per container (a container
//! id is started once, a pod never gets a second sandbox), and once every pod
//! is deleted nothing may be left: no sandbox or shim process, cgroup, mount,
//! veth, netns, IP allocation, CNI cache entry or pod dir.
//!
//! The agent runs in a network namespace the test makes, with the kubelab
//! bridge and host-local plugins, so that networks are really attached.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestNode;
use common::node_net::*;
use serde_json::Value;

const ROUNDS: usize = 10;
const PODS_PER_ROUND: usize = 10;
/// The agent is killed this long (at most) after the round's manifests appear.
const KILL_WITHIN_MS: u64 = 500;

/// A small xorshift generator: the rounds' kill delays, reproducible from the
/// seed the test prints (`KUBELAB_CRASH_SEED` replays a run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One process of the node's runtime, found in /proc.
#[derive(Debug, Clone)]
enum RuntimeProcess {
    /// `kubelab-agent sandbox --hostname <pod name>`.
    Sandbox { pid: i32, pod_name: String },
    /// `kubelab-agent shim --bundle <state>/pods/<uid>/containers/<id>`.
    Shim {
        pid: i32,
        pod_uid: String,
        container_id: String,
    },
}

fn cmdline(pid: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The sandboxes (processes in the node's cgroups) and shims (their bundle is
/// under the node's state dir) of this node's agent.
fn runtime_processes(node: &TestNode) -> Vec<RuntimeProcess> {
    let pods_dir = node.state_dir().join("pods");
    let in_cgroups: BTreeSet<i32> = node.processes_in_cgroups().into_iter().collect();
    let agent = common::agent_bin();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        let args = cmdline(&name);
        if args.len() < 2 || Path::new(&args[0]) != agent {
            continue;
        }
        match args[1].as_str() {
            "sandbox" if in_cgroups.contains(&pid) => {
                if let Some(pod_name) = arg_after(&args, "--hostname") {
                    found.push(RuntimeProcess::Sandbox { pid, pod_name });
                }
            }
            "shim" => {
                let Some(bundle) = arg_after(&args, "--bundle").map(PathBuf::from) else {
                    continue;
                };
                let Ok(rel) = bundle.strip_prefix(&pods_dir) else {
                    continue;
                };
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if let [uid, _, id] = parts.as_slice() {
                    found.push(RuntimeProcess::Shim {
                        pid,
                        pod_uid: uid.clone(),
                        container_id: id.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    found
}

/// `/pods`, or `None` while the agent does not answer in time (a loaded
/// machine): a poll then tries again instead of failing.
fn try_pods(node: &TestNode) -> Option<Vec<Value>> {
    let body: Value = serde_json::from_str(&node.get("/pods").ok()?).ok()?;
    Some(body["items"].as_array().cloned().unwrap_or_default())
}

fn pod_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: a\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n  - name: b\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n"
    )
}

fn all_running(pods: &[Value], expected: usize) -> bool {
    pods.len() == expected
        && pods.iter().all(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["podIP"]
                    .as_str()
                    .is_some_and(|ip| !ip.is_empty())
                && p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.len() == 2 && cs.iter().all(|c| c["state"]["running"].is_object())
                    })
        })
}

/// What is wrong with the node's processes against its pods: pods without
/// exactly one sandbox, containers without exactly one shim, and processes
/// of no pod at all.
fn duplicates_and_strays(node: &TestNode, pods: &[Value]) -> Vec<String> {
    let procs = runtime_processes(node);
    let mut problems = Vec::new();
    let mut sandboxes: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut shims: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    for p in &procs {
        match p {
            RuntimeProcess::Sandbox { pid, pod_name } => {
                sandboxes.entry(pod_name.clone()).or_default().push(*pid)
            }
            RuntimeProcess::Shim {
                pid,
                pod_uid,
                container_id,
            } => shims
                .entry(pod_uid.clone())
                .or_default()
                .push((*pid, container_id.clone())),
        }
    }
    let mut known_names = BTreeSet::new();
    let mut known_uids = BTreeSet::new();
    for pod in pods {
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let n = sandboxes.get(&name).map_or(0, Vec::len);
        if n != 1 {
            problems.push(format!("pod {name}: {n} sandbox processes"));
        }
        let ids: Vec<String> = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["containerID"].as_str())
            .map(|id| id.rsplit("://").next().unwrap_or(id).to_string())
            .collect();
        let mine = shims.get(&uid).cloned().unwrap_or_default();
        if mine.len() != 2 {
            problems.push(format!(
                "pod {name}: {} shims for 2 containers: {mine:?}",
                mine.len()
            ));
        }
        for (pid, id) in &mine {
            if !ids.contains(id) {
                problems.push(format!(
                    "pod {name}: shim {pid} of container {id}, which the pod's status does not name ({ids:?})"
                ));
            }
        }
        known_names.insert(name);
        known_uids.insert(uid);
    }
    for (name, pids) in &sandboxes {
        if !known_names.contains(name) {
            problems.push(format!("sandbox of no pod: {name} {pids:?}"));
        }
    }
    for (uid, list) in &shims {
        if !known_uids.contains(uid) {
            problems.push(format!("shims of no pod: {uid} {list:?}"));
        }
    }
    problems
}

#[test]
fn kill_9_during_pod_start_leaves_no_duplicate_and_no_orphan() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, ipam_net) = start_node(&ns, tmp.path(), "10.134.0.0/24");
    let base = Baseline::of(&node, &ns);
    let (seed, mut rng) = seeded_rng();
    let started = Instant::now();
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..PODS_PER_ROUND {
            let name = format!("r{round}p{i}");
            node.write_manifest(&format!("{name}.yaml"), &pod_yaml(&name));
            names.push(name);
        }
        let delay = rng.next() % (KILL_WITHIN_MS + 1);
        std::thread::sleep(Duration::from_millis(delay));
        node.kill_agent();
        node.spawn_agent();
        let pods = node.wait_for(
            &format!("round {round}: all {} pods Running", names.len()),
            Duration::from_secs(300),
            |n| {
                let pods = try_pods(n)?;
                all_running(&pods, names.len()).then_some(pods)
            },
        );
        // A sandbox or shim on its way out is given a moment; a duplicate stays.
        let mut found = duplicates_and_strays(&node, &pods);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if let Some(pods) = try_pods(&node) {
                found = duplicates_and_strays(&node, &pods);
            }
        }
        eprintln!(
            "round {round}: killed after {delay} ms, {} pods Running, {} problems",
            pods.len(),
            found.len()
        );
        problems.extend(found.into_iter().map(|p| format!("round {round}: {p}")));
    }
    let total = names.len();
    let running = node.wait_for("/pods", Duration::from_secs(60), try_pods);
    let mut ips: Vec<String> = running
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect();
    ips.sort();
    ips.dedup();
    if ips.len() != total {
        problems.push(format!("{} distinct pod IPs for {total} pods", ips.len()));
    }
    let mut held = until_equal(Duration::from_secs(30), &ips, || {
        let mut h = ip_files(&ipam_net);
        h.sort();
        h
    });
    held.retain(|ip| !ips.contains(ip));
    if !held.is_empty() {
        problems.push(format!("IPs allocated to no pod: {held:?}"));
    }
    let veths = until_len(Duration::from_secs(60), total, || ns.veths());
    if veths.len() != total {
        problems.push(format!("{} veths for {total} pods", veths.len()));
    }

    for name in &names {
        node.remove_manifest(&format!("{name}.yaml"));
    }
    node.wait_for("all pods gone from /pods", Duration::from_secs(300), |n| {
        try_pods(n)?.is_empty().then_some(())
    });
    problems.extend(leftovers(&node, &ns, &ipam_net, &base));
    let pods_with_duplicates: BTreeSet<&str> = problems
        .iter()
        .filter_map(|p| p.split_once(": pod ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split(':').next())
        .collect();
    eprintln!(
        "{ROUNDS} rounds, {total} pods, {} with a second sandbox or container, {} problems, in {:?}",
        pods_with_duplicates.len(),
        problems.len(),
        started.elapsed()
    );
    assert_no_problems(&problems, seed, &node);
}

fn assert_no_problems(problems: &[String], seed: u64, node: &TestNode) {
    assert!(
        problems.is_empty(),
        "{} problems (seed {seed}):\n{}\nagent log (tail):\n{}",
        problems.len(),
        problems.join("\n"),
        common::tail(&node.agent_log(), 60)
    );
}

/// A node agent in `ns` with the kubelab bridge and host-local plugins on
/// `subnet`; also the host-local dir of its network.
fn start_node(ns: &Netns, tmp: &Path, subnet: &str) -> (TestNode, PathBuf) {
    let (conf_dir, ipam_dir) =
        write_bridge_conf(tmp, "kubelab-bridge", "kubelab-host-local", subnet);
    let node = TestNode::start_in_netns(
        &ns.name,
        &[
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
            "--cni-bin-dir",
            our_plugin_dir().to_str().unwrap(),
            "--proxy-mode",
            "none",
        ],
    );
    (node, ipam_dir.join("podnet"))
}

/// The kill delays' generator, seeded from `KUBELAB_CRASH_SEED` or the clock
/// (printed, so that a failing run can be replayed).
fn seeded_rng() -> (u64, Rng) {
    let seed = std::env::var("KUBELAB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("KUBELAB_CRASH_SEED={seed}");
    (seed, Rng(seed))
}

/// What the node had before any pod: what is left after them is compared to it.
struct Baseline {
    iptables: BTreeSet<String>,
    mounts: Vec<String>,
    cgroups: Vec<PathBuf>,
}

impl Baseline {
    fn of(node: &TestNode, ns: &Netns) -> Baseline {
        Baseline {
            iptables: iptables_rules(ns),
            mounts: mountinfo_naming(node.root.path()),
            cgroups: node.cgroup_dirs_below_root(),
        }
    }
}

/// Everything a gone pod may have left, once the node lists no pod: sandbox
/// and shim processes, veths, IP allocations, iptables rules, mounts,
/// cgroups, CNI result cache entries, pod dirs.
fn leftovers(node: &TestNode, ns: &Netns, ipam_net: &Path, base: &Baseline) -> Vec<String> {
    let mut problems = Vec::new();
    let procs = until_empty(Duration::from_secs(30), || runtime_processes(node));
    if !procs.is_empty() {
        problems.push(format!("processes left: {procs:?}"));
    }
    let veths = until_empty(Duration::from_secs(60), || ns.veths());
    if !veths.is_empty() {
        problems.push(format!("veths left: {veths:?}"));
    }
    let ip_left = ip_files(ipam_net);
    if !ip_left.is_empty() {
        problems.push(format!("IP allocations left: {ip_left:?}"));
    }
    let ipt_left: Vec<String> = iptables_rules(ns)
        .difference(&base.iptables)
        .cloned()
        .collect();
    if !ipt_left.is_empty() {
        problems.push(format!("iptables rules left: {ipt_left:?}"));
    }
    let mounts: Vec<String> = mountinfo_naming(node.root.path())
        .into_iter()
        .filter(|m| !base.mounts.contains(m))
        .collect();
    if !mounts.is_empty() {
        problems.push(format!("mounts left: {mounts:#?}"));
    }
    let cgroups = until_empty(Duration::from_secs(10), || pod_cgroups(node, &base.cgroups));
    if !cgroups.is_empty() {
        problems.push(format!("cgroups left: {cgroups:#?}"));
    }
    let cache: Vec<_> = std::fs::read_dir(node.state_dir().join("cni/results"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if !cache.is_empty() {
        problems.push(format!("CNI results cached for gone pods: {cache:?}"));
    }
    let pod_dirs: Vec<_> = std::fs::read_dir(node.state_dir().join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if !pod_dirs.is_empty() {
        problems.push(format!("pod dirs left: {pod_dirs:?}"));
    }
    problems
}

/// `kill -9` while pods terminate: in each round the node runs pods, their
/// manifests go, and the agent is SIGKILLed at a random moment of the
/// termination (grace period, container kill, CNI DEL, cgroup and dir
/// removal) and started again. Once the node lists no pod, nothing of them
/// may be left.
#[test]
fn kill_9_during_pod_termination_leaves_no_orphan() {
    const ROUNDS: usize = 8;
    const PODS: usize = 6;
    /// Past the 1 s grace period: the kill also lands in the clean-up after it.
    const KILL_WITHIN_MS: u64 = 2500;
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, ipam_net) = start_node(&ns, tmp.path(), "10.135.0.0/24");
    let base = Baseline::of(&node, &ns);
    let (seed, mut rng) = seeded_rng();
    let mut problems = Vec::new();
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..PODS).map(|i| format!("t{round}p{i}")).collect();
        for name in &names {
            node.write_manifest(&format!("{name}.yaml"), &pod_yaml(name));
        }
        node.wait_for(
            &format!("round {round}: {PODS} pods Running"),
            Duration::from_secs(300),
            |n| all_running(&try_pods(n)?, PODS).then_some(()),
        );
        for name in &names {
            node.remove_manifest(&format!("{name}.yaml"));
        }
        let delay = rng.next() % (KILL_WITHIN_MS + 1);
        std::thread::sleep(Duration::from_millis(delay));
        node.kill_agent();
        node.spawn_agent();
        node.wait_for(
            &format!("round {round}: no pod left in /pods"),
            Duration::from_secs(300),
            |n| try_pods(n)?.is_empty().then_some(()),
        );
        let found = leftovers(&node, &ns, &ipam_net, &base);
        eprintln!(
            "round {round}: killed {delay} ms into termination, {} problems",
            found.len()
        );
        problems.extend(found.into_iter().map(|p| format!("round {round}: {p}")));
    }
    assert_no_problems(&problems, seed, &node);
}

/// Polls `f` until it returns `want` or `timeout` passes; its last value.
fn until_equal<T: PartialEq>(timeout: Duration, want: &T, mut f: impl FnMut() -> T) -> T {
    let start = Instant::now();
    loop {
        let v = f();
        if v == *want || start.elapsed() > timeout {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `f` until it returns `n` items or `timeout` passes; its last value.
fn until_len<T>(timeout: Duration, n: usize, mut f: impl FnMut() -> Vec<T>) -> Vec<T> {
    let start = Instant::now();
    loop {
        let v = f();
        if v.len() == n || start.elapsed() > timeout {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
