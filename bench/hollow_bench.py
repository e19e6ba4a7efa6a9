#!/usr/bin/env python3
"""Hollow-node scale: how many simulated nodes one `kubelab-agent hollow`
process keeps alive, at what memory, and how punctual their heartbeats are.

Per size N, against one fresh apiserver (node IPAM on 10.0.0.0/8, /24 per
node, the default 40 s node leases renewed every 10 s):
1. `kubelab-agent hollow --nodes N` starts; time until all N Nodes are Ready.
2. A Deployment of N x --pods-per-node pods (100m CPU, 64 MiB requested, a
   readiness probe each) is created; time until every replica is ready.
3. For --window seconds the Leases in kube-node-lease are listed every
   second. Renewal lateness = the gap between two successive renewTimes of
   a Lease less the renew period (10 s), over every gap seen: max and p99.
   Lease age = list time - renewTime, the most any Lease was seen stale
   (the node lifecycle controller marks a node NotReady past 40 s).
4. The hollow process's RSS (VmRSS at the end, VmHWM its peak), per node.

The peer, in the same run: one real `kubelab-agent` joined to the same
apiserver (no pods, --port 0, --proxy-mode none, root; what a cluster of N
real agents would cost is N times its RSS). The ratio reported is that
extrapolation over the hollow process's RSS.

Run from the repo root after `cargo build --release --workspace` (or set
KUBELAB_APISERVER / KUBELAB_AGENT to a debug build, and say so):
    python3 bench/hollow_bench.py [--nodes 100,500,1000] [--pods-per-node 1] [--window 60]
Prints a table and writes bench/hollow_results.json. Nothing is asserted.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from apiserver_bench import APISERVER, Client, free_port, rss_kib, stop, tls_context, wait_port

REPO = Path(__file__).resolve().parent.parent
APISERVER = Path(os.environ.get("KUBELAB_APISERVER", APISERVER))
AGENT = Path(os.environ.get("KUBELAB_AGENT", REPO / "target/release/kubelab-agent"))
RENEW_S = 10.0


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def deployment(replicas):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "c", "image": "busybox", "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 10},
                }]},
            },
        },
    }


def wait_until(what, timeout, check, every=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def ready_nodes(admin, prefix):
    items = json.loads(admin.request("GET", "/api/v1/nodes"))["items"]
    n = 0
    for node in items:
        if not node["metadata"]["name"].startswith(prefix):
            continue
        for c in node.get("status", {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                n += 1
    return n


def observe_leases(admin, prefix, window):
    """Lists the Leases every second for `window` s; returns (lateness of
    every renewal gap, largest age seen), in seconds."""
    last = {}
    gaps = []
    max_age = 0.0
    end = time.monotonic() + window
    while time.monotonic() < end:
        t0 = time.monotonic()
        items = json.loads(admin.request(
            "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"))["items"]
        now = time.time()
        for lease in items:
            name = lease["metadata"]["name"]
            if not name.startswith(prefix):
                continue
            renew = parse_time(lease["spec"]["renewTime"])
            max_age = max(max_age, now - renew)
            prev = last.get(name)
            if prev is not None and renew > prev:
                gaps.append(renew - prev - RENEW_S)
            last[name] = renew
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    return gaps, max_age


def own_cgroup_dirs(name):
    """Where a relative --cgroup-root `name` of a child of this process lives."""
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else ["unified"]:
            c = c.replace("name=", "")
            d = Path("/sys/fs/cgroup") / c / path.lstrip("/") / name
            if d.is_dir():
                dirs.append(d)
    return dirs


def real_agent_rss(tmp, kubeconfig):
    """One real agent joined to the cluster, no pods: its RSS once settled."""
    cgroup_root = f"kubelab-bench-{os.getpid()}"
    log = open(tmp / "agent.log", "w")
    proc = subprocess.Popen(
        [str(AGENT), "--root-dir", str(tmp / "real"), "--kubeconfig", str(kubeconfig),
         "--hostname-override", "real-agent", "--node-ip", "127.0.0.1",
         "--cgroup-root", cgroup_root, "--port", "0", "--read-only-port", "0",
         "--proxy-mode", "none", "--eviction-hard", "memory.available<100Mi,nodefs.available<1%"],
        stdout=subprocess.DEVNULL, stderr=log)
    try:
        time.sleep(20)
        if proc.poll() is not None:
            raise SystemExit(f"the real agent exited: see {tmp / 'agent.log'}")
        return rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        for d in own_cgroup_dirs(cgroup_root):
            subprocess.run(["find", str(d), "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"],
                           check=False, stderr=subprocess.DEVNULL)


def run_size(nodes, pods_per_node, window):
    tmp = Path(tempfile.mkdtemp(prefix="kubelab-hollow-bench-"))
    port = free_port()
    log = open(tmp / "apiserver.log", "w")
    proc = subprocess.Popen(
        [str(APISERVER), "--data-dir", str(tmp / "data"), "--bind-address", "127.0.0.1",
         "--secure-port", str(port), "--cluster-cidr", "10.0.0.0/8", "--node-cidr-mask-size", "24"],
        stdout=subprocess.DEVNULL, stderr=log)
    hollow = None
    hollow_log = open(tmp / "hollow.log", "w")
    try:
        wait_port(port, proc, "kubelab-apiserver")
        time.sleep(0.5)
        ctx = tls_context(tmp / "data")
        admin = Client(port, ctx)
        kubeconfig = tmp / "data" / "admin.kubeconfig"
        real_kib = real_agent_rss(tmp, kubeconfig)
        # Its Node stays Ready until its lease expires: left there, the
        # scheduler may bind a replica to it, which then waits out the 300 s
        # not-ready toleration before it is replaced.
        admin.request("DELETE", "/api/v1/nodes/real-agent")

        t0 = time.monotonic()
        hollow = subprocess.Popen(
            [str(AGENT), "--root-dir", str(tmp / "hollow"), "hollow", "--kubeconfig", str(kubeconfig),
             "--nodes", str(nodes), "--node-name-prefix", "hollow-", "--node-ip", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=hollow_log, env={**os.environ, "RUST_LOG": "warn"})
        wait_until(f"{nodes} Ready hollow nodes", 600,
                   lambda: ready_nodes(admin, "hollow-") >= nodes)
        ready_s = time.monotonic() - t0

        replicas = nodes * pods_per_node
        t1 = time.monotonic()
        admin.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment(replicas))

        def all_ready():
            d = json.loads(admin.request("GET", "/apis/apps/v1/namespaces/default/deployments/bench"))
            return d.get("status", {}).get("readyReplicas", 0) >= replicas
        wait_until(f"{replicas} ready replicas", 900, all_ready)
        pods_s = time.monotonic() - t1

        gaps, max_age = observe_leases(admin, "hollow-", window)
        rss = rss_kib(hollow.pid)
        hwm = status_kib(hollow.pid, "VmHWM")
        return {
            "nodes": nodes,
            "pods": replicas,
            "nodes_ready_s": round(ready_s, 1),
            "pods_ready_s": round(pods_s, 1),
            "window_s": window,
            "renewals_seen": len(gaps),
            "renew_lateness_max_s": round(max(gaps), 3) if gaps else None,
            "renew_lateness_p99_s": round(percentile(gaps, 99), 3) if gaps else None,
            "lease_age_max_s": round(max_age, 2),
            "hollow_rss_kib": rss,
            "hollow_peak_rss_kib": hwm,
            "hollow_rss_kib_per_node": round(rss / nodes, 1),
            "peer_real_agent_rss_kib": real_kib,
            "peer_n_real_agents_kib": real_kib * nodes,
            "n_real_agents_over_hollow": round(real_kib * nodes / rss, 1),
            "apiserver_rss_kib": rss_kib(proc.pid),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "build": "release" if "release" in str(AGENT) else "debug",
        }
    finally:
        if hollow is not None:
            stop(hollow, timeout=30)
        hollow_log.close()
        stop(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="100,500,1000")
    ap.add_argument("--pods-per-node", type=int, default=1)
    ap.add_argument("--window", type=int, default=60)
    args = ap.parse_args()
    for b in (APISERVER, AGENT):
        if not b.exists():
            raise SystemExit(f"{b} missing: cargo build --release --workspace")
    results = []
    for n in [int(x) for x in args.nodes.split(",")]:
        r = run_size(n, args.pods_per_node, args.window)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(f"{'nodes':>6} {'pods':>6} {'ready s':>8} {'pods s':>7} {'late max':>9} {'late p99':>9} "
          f"{'age max':>8} {'RSS MiB':>8} {'KiB/node':>9} {'real agent MiB':>15} {'N real/hollow':>14}")
    for r in results:
        print(f"{r['nodes']:>6} {r['pods']:>6} {r['nodes_ready_s']:>8} {r['pods_ready_s']:>7} "
              f"{r['renew_lateness_max_s']!s:>9} {r['renew_lateness_p99_s']!s:>9} {r['lease_age_max_s']:>8} "
              f"{r['hollow_rss_kib'] / 1024:>8.1f} {r['hollow_rss_kib_per_node']:>9} "
              f"{r['peer_real_agent_rss_kib'] / 1024:>15.1f} {r['n_real_agents_over_hollow']:>14}")
    (REPO / "bench/hollow_results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
