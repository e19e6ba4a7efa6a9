//! Test fixtures: network namespaces this test owns (deleted on drop, even
//! when the test fails) and a way to run a CNI plugin inside one.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `ip netns add kl-test-<pid>-<n>`; `ip netns del` on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "kl-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside this namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ping(&self, ip: &str) -> bool {
        self.exec(&["busybox", "ping", "-c", "1", "-W", "3", ip])
            .status
            .success()
    }

    /// Names of veth interfaces in this namespace.
    pub fn veths(&self) -> Vec<String> {
        let out = self.exec_ok(&["ip", "-o", "link", "show", "type", "veth"]);
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

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The dir holding this package's plugin binaries.
pub fn our_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_kubelab-bridge"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub const REFERENCE_DIR: &str = "/usr/lib/cni";

pub fn reference_plugins_present() -> bool {
    Path::new(REFERENCE_DIR).join("bridge").exists()
        && Path::new(REFERENCE_DIR).join("host-local").exists()
}

/// What a plugin run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin output is not JSON ({e}): {self:?}"))
    }

    pub fn expect_ok(self) -> Run {
        assert!(self.ok, "plugin failed: {self:?}");
        self
    }
}

/// One invocation: the plugin binary, run inside `host` (the node's netns).
pub struct Invocation<'a> {
    pub plugin: PathBuf,
    pub host: Option<&'a Netns>,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub path: Vec<PathBuf>,
}

impl Invocation<'_> {
    pub fn run(&self, stdin: &str) -> Run {
        let mut cmd = match self.host {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.name]).arg(&self.plugin);
                c
            }
            None => Command::new(&self.plugin),
        };
        let mut child = cmd
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_ARGS", self.cni_args)
            .env("CNI_PATH", std::env::join_paths(&self.path).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A plugin that refuses its environment (a bad CNI_COMMAND or
        // version) may exit before it reads its config: that pipe is closed.
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
