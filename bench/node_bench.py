#!/usr/bin/env python3
"""Node agent benchmarks, each against a peer measured in the same run.

1. Start latency: manifest written -> container process running, median of 20
   pods one after another, against `runc run -d` of the very same OCI bundle
   the agent generated (same rootfs, same namespaces and mounts).
2. Burst: 100 static pods dropped at once -> all Running.
3. Memory: the agent's RSS idle and with 100 pods (plus the per-container shims).

Run as root from the repo root after `cargo build --release -p kubelab-agent`:
    sudo python3 bench/node_bench.py [--pods 100] [--runs 20]
Prints a table and writes bench/results.json. Nothing is asserted: the figures
go into notes, as ratios against the peer.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGENT = REPO / "target/release/kubelab-agent"
IMAGE = REPO / "target/test-images/busybox.tar"


def own_cgroup(controller):
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return path
    return "/"


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def private_kib(pid):
    """USS: memory only this process holds (shared binary pages excluded)."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


def pod_yaml(name):
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    resources:
      limits:
        cpu: 100m
        memory: 16Mi
"""


class Node:
    def __init__(self, work):
        self.work = Path(work)
        self.state = self.work / "state"
        self.manifests = self.work / "manifests"
        self.manifests.mkdir(parents=True)
        self.cgroup_root = f"kubelab-bench-{os.getpid()}"
        self.port = 18000 + os.getpid() % 1000
        subprocess.run([AGENT, "--root-dir", self.state, "image", "import", IMAGE],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "RUST_LOG": "warn"})
        self.log = open(self.work / "agent.log", "w")
        self.proc = subprocess.Popen(
            [AGENT, "--root-dir", self.state, "--pod-manifest-path", self.manifests,
             "--cgroup-root", self.cgroup_root, "--hostname-override", "bench",
             "--address", "127.0.0.1", "--port", "0", "--read-only-port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "RUST_LOG": "warn"})
        for _ in range(200):
            try:
                get_json(self.port, "/pods")
                break
            except Exception:
                time.sleep(0.05)

    def write(self, name):
        tmp = self.work / f".{name}.tmp"
        tmp.write_text(pod_yaml(name))
        t = time.time_ns()
        os.rename(tmp, self.manifests / f"{name}.yaml")
        return t

    def running_containers(self):
        """bundle dir -> state.json mtime (ns): written right after exec succeeded."""
        out = {}
        for state in self.state.glob("pods/*/containers/*/state.json"):
            out[state.parent] = state.stat().st_mtime_ns
        return out

    def running_count(self):
        pods = get_json(self.port, "/pods")["items"]
        return sum(1 for p in pods
                   if all("running" in c.get("state", {}) for c in p["status"].get("containerStatuses", [])))

    def clear(self):
        for f in self.manifests.glob("*.yaml"):
            f.unlink()
        deadline = time.time() + 120
        while time.time() < deadline and get_json(self.port, "/pods")["items"]:
            time.sleep(0.1)

    def stop(self):
        self.clear()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()
        for ctrl in ("cpu", "cpuacct", "memory", "pids"):
            base = Path("/sys/fs/cgroup") / ctrl / own_cgroup(ctrl).lstrip("/") / self.cgroup_root
            if base.exists():
                for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    d.rmdir()
                base.rmdir()


def agent_start_latency(node, runs):
    samples = []
    bundles = []
    for i in range(runs):
        before = set(node.running_containers())
        t0 = node.write(f"lat{i}")
        deadline = time.time() + 20
        while time.time() < deadline:
            new = {b: m for b, m in node.running_containers().items() if b not in before}
            if new:
                bundle, mtime = next(iter(new.items()))
                samples.append((mtime - t0) / 1e6)
                bundles.append(bundle)
                break
            time.sleep(0.001)
    return samples, bundles


def peer_spec(spec, rootfs):
    """The agent's OCI spec made runnable by `runc` as a peer: re-rooted at a
    plain copy of the rootfs, in namespaces of its own, without the agent's
    bind mounts and host-specific settings."""
    spec["root"] = {"path": str(rootfs), "readonly": False}
    # Own namespaces instead of the agent sandbox's; same cgroup nesting rule.
    spec["linux"]["namespaces"] = [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network")]
    spec["mounts"] = [m for m in spec["mounts"] if m["type"] != "bind"]
    # runc makes the device nodes with mknod in /dev (the built-in runtime
    # bind-mounts them into a nodev /dev), as the agent's runc backend does.
    for m in spec["mounts"]:
        if m["destination"] == "/dev":
            m["options"] = [o for o in m.get("options", []) if o != "nodev"]
    # runc refuses to start when it may not lower the OOM score (this host);
    # the agent treats the score as best effort.
    spec["process"].pop("oomScoreAdj", None)
    # runc's device cgroup denies everything not listed; the agent sets none.
    spec["linux"].setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]
    return spec


def runc_start_latency(bundle_src, runs, work):
    """`runc run -d` + `runc delete -f` of the agent's own bundle, re-rooted."""
    spec = json.loads((bundle_src / "config.json").read_text())
    rootfs_src = Path(spec["root"]["path"])
    bundle = Path(work) / "runc-bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    # A plain copy of the container's rootfs (runc gets no head start from overlay).
    subprocess.run(["cp", "-a", f"{rootfs_src}/.", str(rootfs)], check=True)
    peer_spec(spec, rootfs)
    results = []
    for i in range(runs):
        cid = f"kubelab-bench-{os.getpid()}-{i}"
        # Relative: runc nests it under its own cgroup in each hierarchy, as the
        # agent does with a relative --cgroup-root.
        spec["linux"]["cgroupsPath"] = f"kubelab-bench-runc/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        # stdio to a file: a detached container keeps runc's stdio open.
        with open(Path(work) / "runc.log", "w") as log:
            t0 = time.perf_counter_ns()
            r = subprocess.run(["runc", "run", "-d", "--bundle", str(bundle), cid],
                               stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            results.append((time.perf_counter_ns() - t0) / 1e6)
        if r.returncode != 0:
            raise SystemExit(f"runc run failed: {(Path(work) / 'runc.log').read_text()}")
        subprocess.run(["runc", "delete", "-f", cid], check=True)
    return results


def remove_runc_cgroups(parent="kubelab-bench-runc"):
    """Removes the cgroups runc made under `parent` in this process's own cgroups."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        mount = ctrls.replace("name=", "") if ctrls else "unified"
        base = Path("/sys/fs/cgroup") / mount / path.lstrip("/") / parent
        if base.exists():
            for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            base.rmdir()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pods", type=int, default=100)
    args = ap.parse_args()
    if not AGENT.exists():
        raise SystemExit("build first: cargo build --release -p kubelab-agent")
    if not IMAGE.exists():
        subprocess.run([REPO / "scripts/build-test-image.sh", IMAGE], check=True)
    work = tempfile.mkdtemp(prefix="kubelab-bench-")
    node = Node(work)
    out = {}
    try:
        out["agent_idle_rss_kib"] = rss_kib(node.proc.pid)
        lat, bundles = agent_start_latency(node, args.runs)
        out["agent_start_ms"] = lat
        try:
            out["runc_start_ms"] = runc_start_latency(bundles[0], args.runs, work)
        finally:
            remove_runc_cgroups()
        node.clear()

        t0 = time.time()
        for i in range(args.pods):
            tmp = node.work / f".b{i}.tmp"
            tmp.write_text(pod_yaml(f"b{i}"))
            os.rename(tmp, node.manifests / f"b{i}.yaml")
        while node.running_count() < args.pods and time.time() - t0 < 300:
            time.sleep(0.05)
        out["burst_pods"] = args.pods
        out["burst_all_running_s"] = time.time() - t0
        out["agent_rss_after_burst_kib"] = rss_kib(node.proc.pid)
        # Steady state: the blocking threads of the burst have retired (10 s idle).
        time.sleep(15)
        out["agent_rss_with_pods_kib"] = rss_kib(node.proc.pid)
        shims = [int(p) for p in subprocess.run(["pgrep", "-f", "kubelab-agent shim"], capture_output=True, text=True).stdout.split()]
        out["shim_rss_kib_median"] = statistics.median([rss_kib(p) for p in shims]) if shims else 0
        out["shim_private_kib_median"] = statistics.median([private_kib(p) for p in shims]) if shims else 0
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)

    a, r = statistics.median(out["agent_start_ms"]), statistics.median(out["runc_start_ms"])
    print(f"start latency, median of {args.runs}: agent {a:.1f} ms (manifest written -> process running), "
          f"runc {r:.1f} ms (runc run -d), ratio {a / r:.2f}x")
    print(f"{args.pods} pods dropped at once -> all Running: {out['burst_all_running_s']:.2f} s")
    print(f"agent RSS: idle {out['agent_idle_rss_kib'] / 1024:.1f} MiB, with {args.pods} pods "
          f"{out['agent_rss_with_pods_kib'] / 1024:.1f} MiB steady "
          f"({out['agent_rss_after_burst_kib'] / 1024:.1f} MiB right after the burst); "
          f"shim RSS median {out['shim_rss_kib_median'] / 1024:.1f} MiB "
          f"(private {out['shim_private_kib_median'] / 1024:.1f} MiB)")
    (REPO / "bench/results.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
