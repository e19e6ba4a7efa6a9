//! A "node" network for tests: a network namespace the test creates (the
//! agent runs inside it with `nsenter --net`), the bridge config for the
//! kubelab CNI plugins, and what to look at for leftovers (veths, IPAM files,
//! iptables/nftables rules, mounts, netns, pod cgroups). Never the host's own
//! interfaces; the namespace is deleted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{TestNode, agent_bin};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `ip netns add kl-test-<pid>-<n>`; `ip netns del` on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "kl-test-{}-n{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    pub fn veths(&self) -> Vec<String> {
        let (_, out) = self.exec(&["ip", "-o", "link", "show", "type", "veth"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Where `cargo build --workspace` puts the kubelab-cni plugins (next to the agent).
pub fn our_plugin_dir() -> PathBuf {
    let dir = agent_bin().parent().unwrap().to_path_buf();
    assert!(
        dir.join("kubelab-bridge").exists() && dir.join("kubelab-host-local").exists(),
        "the kubelab-cni plugins are not built in {}: run cargo build --workspace",
        dir.display()
    );
    dir
}

pub fn bridge_conflist(plugin: &str, ipam: &str, subnet: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "podnet",
        "plugins": [{
            "type": plugin,
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": { "type": ipam, "ranges": [[{ "subnet": subnet }]], "dataDir": data_dir }
        }]
    })
}

/// `<tmp>/net.d/10-podnet.conflist` with [`bridge_conflist`], its IPAM data
/// in `<tmp>/ipam`; returns (conf dir, IPAM data dir).
pub fn write_bridge_conf(tmp: &Path, plugin: &str, ipam: &str, subnet: &str) -> (PathBuf, PathBuf) {
    let conf_dir = tmp.join("net.d");
    let ipam_dir = tmp.join("ipam");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = bridge_conflist(plugin, ipam, subnet, &ipam_dir);
    std::fs::write(conf_dir.join("10-podnet.conflist"), conf.to_string()).unwrap();
    (conf_dir, ipam_dir)
}

pub fn ip_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn iptables_rules(ns: &Netns) -> std::collections::BTreeSet<String> {
    let (ok, out) = ns.exec(&["iptables-save"]);
    assert!(ok, "iptables-save: {out}");
    let mut table = String::new();
    let mut rules = std::collections::BTreeSet::new();
    for line in out.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if line.starts_with("-A ") {
            rules.insert(format!("{table} {line}"));
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let (chain, policy) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if policy == "-" {
                rules.insert(format!("{table} :{chain}"));
            }
        }
    }
    rules
}

/// `nft list ruleset` of the namespace, the same way: rules and base-less
/// chains as `table chain rule` lines, counters dropped.
pub fn nft_rules(ns: &Netns) -> std::collections::BTreeSet<String> {
    // stdout only: nft warns on stderr about tables iptables-nft manages.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout);
    let (mut table, mut chain) = (String::new(), String::new());
    let mut rules = std::collections::BTreeSet::new();
    for line in out.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("table ") {
            table = t.trim_end_matches(" {").to_string();
        } else if let Some(c) = line.strip_prefix("chain ") {
            chain = c.trim_end_matches(" {").to_string();
            rules.insert(format!("{table} {chain}"));
        } else if line.starts_with("type ") && line.contains(" hook ") {
            // A base chain: only its rules count.
            rules.remove(&format!("{table} {chain}"));
        } else if !line.is_empty() && line != "}" && !line.starts_with('#') {
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut kept = Vec::new();
            let mut i = 0;
            while i < words.len() {
                if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
                    i += 5; // counter packets N bytes N
                } else {
                    kept.push(words[i]);
                    i += 1;
                }
            }
            rules.insert(format!("{table} {chain} {}", kept.join(" ")));
        }
    }
    rules
}

/// Lines of /proc/self/mountinfo that name `dir` (as mount point, source or
/// option, e.g. an overlay's lowerdir).
pub fn mountinfo_naming(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.as_ref()))
        .map(String::from)
        .collect()
}

/// The network namespaces (`net:[inode]`) of the node's pod processes (those
/// in its cgroups) other than the node's own.
pub fn pod_netns(node: &TestNode, ns: &Netns) -> std::collections::BTreeSet<String> {
    use std::os::unix::fs::MetadataExt;
    // /var/run/netns/<name> is a bind mount of the namespace's nsfs file.
    let ino = std::fs::metadata(format!("/var/run/netns/{}", ns.name))
        .unwrap()
        .ino();
    let node_ns = format!("net:[{ino}]");
    node.processes_in_cgroups()
        .into_iter()
        .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|n| *n != node_ns)
        .collect()
}

/// Which of `netns` something still holds: a bind mount of it, or a process in it.
pub fn netns_still_held(netns: &std::collections::BTreeSet<String>) -> Vec<String> {
    let mut held = Vec::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && netns.contains(f[3]) {
            held.push(format!("mount of {} on {}", f[3], f[4]));
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(l) = std::fs::read_link(e.path().join("ns/net")) {
            let l = l.to_string_lossy().into_owned();
            if netns.contains(&l) {
                held.push(format!(
                    "process {} in {l}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    held
}

/// The node's cgroup dirs, not there at `baseline`, of a pod (`pod<uid>`
/// and below). Its kubepods/<qos> levels appear with the first pod and stay,
/// as kubelet's do.
pub fn pod_cgroups(node: &TestNode, baseline: &[PathBuf]) -> Vec<PathBuf> {
    let roots = node.cgroup_root_dirs();
    node.cgroup_dirs_below_root()
        .into_iter()
        .filter(|d| !baseline.contains(d))
        .filter(|d| {
            roots
                .iter()
                .filter_map(|r| d.strip_prefix(r).ok())
                .any(|rel| {
                    rel.components()
                        .any(|c| c.as_os_str().to_string_lossy().starts_with("pod"))
                })
        })
        .collect()
}

/// Polls `f` until it finds nothing left or `timeout` passes; what was left.
pub fn until_empty<T>(timeout: Duration, mut f: impl FnMut() -> Vec<T>) -> Vec<T> {
    let start = std::time::Instant::now();
    loop {
        let left = f();
        if left.is_empty() || start.elapsed() > timeout {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
