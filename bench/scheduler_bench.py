#!/usr/bin/env python3
"""Scheduler throughput, as kube-scheduler's scheduler_perf measures it
(SchedulingBasic): N Node objects with no agents behind them (kept Ready
by a long --node-monitor-grace-period; scheduler_perf's node: 4 CPU,
32 GiB, 110 pods), then P pods (scheduler_perf's pod: 100m CPU, 500 MiB
requested) created as fast as the API takes them, and the in-process
scheduler binds them.

Pods are POSTed by --clients keep-alive HTTPS connections spread over
--processes client processes (as scheduler_perf creates pods from many
goroutines): one Python process tops out, GIL-bound, below what the
apiserver takes, so more processes measure the server rather than the
client; the client processes share the machine's cores with the apiserver.

Measured, per cluster size, in one run against one fresh apiserver:
1. The bare write ceiling: P pods created with spec.nodeName already set
   (nothing to schedule) by the same clients: creates/s.
2. Scheduling: P unassigned pods created; a watch records when each one
   shows spec.nodeName. Throughput = P / (first create sent -> last pod
   bound), pods/s, also as a share of the bare write rate; bind latency =
   create acknowledged -> binding seen on the watch, p50 and p99. This is
   bounded by the create rate when the scheduler keeps up.
3. Backlog drain (scheduler_perf's SchedulingThroughput once pods wait):
   P pods for `bench-scheduler`, a profile nothing runs yet, are created;
   then `kubelab-apiserver scheduler --kubeconfig` (its own process, as
   kube-scheduler runs) starts with that profile; drain rate = P / (first
   pod bound -> last pod bound), also as a share of the bare write rate.

With --hollow the nodes are not bare Node objects but hollow nodes of one
`kubelab-agent hollow` process (registered, heartbeating, and running the
pods bound to them with a runtime that only pretends: status writes from
the nodes compete with the scheduler's, as on a real cluster);
node_create_s is then the time until all are Ready.

Run from the repo root after `cargo build --release --workspace`:
    python3 bench/scheduler_bench.py [--nodes 500,5000] [--pods 1000] [--clients 8] [--processes 2] [--hollow]
Prints a table and writes bench/scheduler_results.json. Nothing is asserted.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from apiserver_bench import APISERVER, Client, free_port, rss_kib, stop, tls_context, wait_port

REPO = Path(__file__).resolve().parent.parent
# Another build (e.g. target/debug) to try the script quickly.
APISERVER = Path(os.environ.get("KUBELAB_APISERVER", APISERVER))
AGENT = Path(os.environ.get("KUBELAB_AGENT", REPO / "target/release/kubelab-agent"))


def node(name):
    alloc = {"cpu": "4", "memory": "32Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": alloc,
            "allocatable": alloc,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
        },
    }


def pod(name, node_name=None):
    spec = {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _create_worker(port, data_dir, path, chunks, ready, go, out):
    """One client process: a keep-alive connection per chunk, each in its
    own thread, POSTing once `go` is set; sends back {name: ack time}
    (CLOCK_MONOTONIC, the same clock in every process)."""
    ctx = ssl.create_default_context(cafile=str(data_dir / "bench-ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(data_dir / "bench-client.crt"), str(data_dir / "bench-client.key"))
    acks = {}
    lock = threading.Lock()
    conns = [Client(port, ctx) for _ in chunks]
    for c in conns:
        c.request("GET", "/version")

    def worker(c, chunk):
        for obj in chunk:
            c.request("POST", path, obj)
            t = time.monotonic()
            with lock:
                acks[obj["metadata"]["name"]] = t

    threads = [threading.Thread(target=worker, args=(c, ch)) for c, ch in zip(conns, chunks)]
    ready.release()
    go.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(acks)


def create_all(port, data_dir, clients, path, objects, processes=1):
    """POSTs every object over `clients` keep-alive connections spread over
    `processes` client processes (one Python process is GIL-bound well
    below what the server takes); returns (start, end, {name: ack time})."""
    chunks = [objects[i::clients] for i in range(clients)]
    mp = multiprocessing.get_context("spawn")
    ready, go, out = mp.Semaphore(0), mp.Event(), mp.Queue()
    procs = [mp.Process(target=_create_worker,
                        args=(port, data_dir, path, chunks[i::processes], ready, go, out))
             for i in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    start = time.monotonic()
    go.set()
    acks = {}
    for _ in procs:
        acks.update(out.get())
    for p in procs:
        p.join()
    return start, max(acks.values()), acks


class BindWatch:
    """Watches pods in a namespace from a resourceVersion; records when each
    pod first shows spec.nodeName."""

    def __init__(self, port, ctx, ns, rv):
        self.bound = {}
        self.done = threading.Event()
        self.want = None
        c = Client(port, ctx)
        c.conn.request("GET", f"/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}",
                       headers={"Accept": "application/json"})
        self.resp = c.conn.getresponse()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while True:
            line = self.resp.readline()
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            ev = json.loads(line)
            obj = ev.get("object", {})
            name = obj.get("metadata", {}).get("name")
            if obj.get("spec", {}).get("nodeName") and name not in self.bound:
                self.bound[name] = time.monotonic()
                if self.want is not None and len(self.bound) >= self.want:
                    self.done.set()


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def start_hollow(tmp, nodes, admin):
    """`kubelab-agent hollow --nodes N` on the bench's cluster; returns the
    process once every hollow node is Ready."""
    log = open(tmp / "hollow.log", "w")
    hollow = subprocess.Popen(
        [str(AGENT), "--root-dir", str(tmp / "hollow"), "hollow",
         "--kubeconfig", str(tmp / "data" / "admin.kubeconfig"), "--nodes", str(nodes),
         "--node-name-prefix", "node-", "--node-ip", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if hollow.poll() is not None:
            raise SystemExit(f"kubelab-agent hollow exited: see {tmp / 'hollow.log'}")
        items = json.loads(admin.request("GET", "/api/v1/nodes"))["items"]
        ready = sum(1 for n in items for c in n.get("status", {}).get("conditions", [])
                    if c["type"] == "Ready" and c["status"] == "True")
        if ready >= nodes:
            return hollow
        time.sleep(1.0)
    raise SystemExit(f"{nodes} hollow nodes were not Ready in time")


def cpu_ms(pid):
    """CPU time (user + system, all threads) the process has used, in ms:
    per-phase CPU per pod is a figure load on the machine hardly moves,
    unlike a rate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def run_size(nodes, pods, clients, processes, hollow_nodes=False):
    tmp = Path(tempfile.mkdtemp(prefix="kubelab-sched-bench-"))
    hollow = None
    port = free_port()
    log = open(tmp / "apiserver.log", "w")
    proc = subprocess.Popen(
        [str(APISERVER), "--data-dir", str(tmp / "data"), "--bind-address", "127.0.0.1",
         "--secure-port", str(port), "--node-monitor-grace-period", "24h",
         "--allocate-node-cidrs=false"],
        stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_port(port, proc, "kubelab-apiserver")
        time.sleep(0.5)
        ctx = tls_context(tmp / "data")
        admin = Client(port, ctx)
        for ns in ("bare", "sched"):
            admin.request("POST", "/api/v1/namespaces",
                          {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        t0 = time.monotonic()
        if hollow_nodes:
            hollow = start_hollow(tmp, nodes, admin)
        else:
            create_all(port, tmp / "data", 4, "/api/v1/nodes", [node(f"node-{i}") for i in range(nodes)])
        node_secs = time.monotonic() - t0
        time.sleep(1.0)

        # 1. The bare write ceiling: pods that need no scheduling.
        bare = [pod(f"bare-{i}", f"node-{i % nodes}") for i in range(pods)]
        cpu0 = cpu_ms(proc.pid)
        s, e, _ = create_all(port, tmp / "data", clients, "/api/v1/namespaces/bare/pods", bare, processes)
        bare_rate = pods / (e - s)
        bare_cpu = cpu_ms(proc.pid) - cpu0
        time.sleep(1.0)

        # 2. Scheduling.
        rv = json.loads(admin.request("GET", "/api/v1/namespaces/sched/pods"))["metadata"]["resourceVersion"]
        watch = BindWatch(port, ctx, "sched", rv)
        watch.want = pods
        todo = [pod(f"p-{i}") for i in range(pods)]
        cpu0 = cpu_ms(proc.pid)
        start, created, acks = create_all(port, tmp / "data", clients, "/api/v1/namespaces/sched/pods", todo, processes)
        finished = watch.done.wait(timeout=300)
        last = max(watch.bound.values()) if watch.bound else time.monotonic()
        sched_cpu = cpu_ms(proc.pid) - cpu0
        latencies = [(watch.bound[n] - acks[n]) * 1000 for n in acks if n in watch.bound]
        result = {
            "nodes": nodes,
            "node_kind": "hollow" if hollow_nodes else "bare Node objects",
            "pods": pods,
            "clients": clients,
            "client_processes": processes,
            "node_create_s": round(node_secs, 2),
            "bare_creates_per_s": round(bare_rate, 1),
            "create_rate_per_s": round(pods / (created - start), 1),
            "bound": len(watch.bound),
            "all_bound": finished,
            "scheduled_pods_per_s": round(len(watch.bound) / (last - start), 1),
            "share_of_bare_write_rate": round(len(watch.bound) / (last - start) / bare_rate, 3),
            "bind_latency_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
            "bind_latency_p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
            "apiserver_cpu_ms_per_bare_create": round(bare_cpu / pods, 3),
            "apiserver_cpu_ms_per_scheduled_pod": round(sched_cpu / max(len(watch.bound), 1), 3),
            "apiserver_rss_kib": rss_kib(proc.pid),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }

        # 3. Backlog drain by a scheduler process of its own.
        admin.request("POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "backlog"}})
        rv = json.loads(admin.request("GET", "/api/v1/namespaces/backlog/pods"))["metadata"]["resourceVersion"]
        watch = BindWatch(port, ctx, "backlog", rv)
        watch.want = pods
        waiting = [pod(f"b-{i}") for i in range(pods)]
        for p in waiting:
            p["spec"]["schedulerName"] = "bench-scheduler"
        create_all(port, tmp / "data", clients, "/api/v1/namespaces/backlog/pods", waiting, processes)
        cfg = tmp / "bench-scheduler.yaml"
        cfg.write_text("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
                       "leaderElection:\n  leaderElect: false\nprofiles:\n- schedulerName: bench-scheduler\n")
        sched_log = open(tmp / "scheduler.log", "w")
        started = time.monotonic()
        sched = subprocess.Popen(
            [str(APISERVER), "scheduler", "--kubeconfig", str(tmp / "data" / "admin.kubeconfig"),
             "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=sched_log)
        try:
            drained = watch.done.wait(timeout=300)
        finally:
            sched.terminate()
            sched.wait(timeout=10)
            sched_log.close()
        times = sorted(watch.bound.values())
        if len(times) > 1:
            drain_rate = (len(times) - 1) / (times[-1] - times[0])
            result["backlog_all_bound"] = drained
            result["backlog_drain_pods_per_s"] = round(drain_rate, 1)
            result["backlog_share_of_bare_write_rate"] = round(drain_rate / bare_rate, 3)
            result["backlog_start_to_first_bind_s"] = round(times[0] - started, 2)
        return result
    finally:
        if hollow is not None:
            stop(hollow, timeout=30)
        stop(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="500,5000")
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8,
                    help="keep-alive connections creating pods at once")
    ap.add_argument("--processes", type=int, default=2,
                    help="client processes the connections are spread over")
    ap.add_argument("--hollow", action="store_true",
                    help="hollow nodes (kubelab-agent hollow) instead of bare Node objects")
    args = ap.parse_args()
    for b in [APISERVER] + ([AGENT] if args.hollow else []):
        if not b.exists():
            raise SystemExit(f"{b} missing: cargo build --release --workspace")
    results = []
    for n in [int(x) for x in args.nodes.split(",")]:
        r = run_size(n, args.pods, args.clients, args.processes, args.hollow)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(f"{'nodes':>6} {'pods':>5} {'bare w/s':>9} {'create/s':>9} {'sched pods/s':>13} "
          f"{'share':>6} {'p50 ms':>8} {'p99 ms':>8} {'drain pods/s':>13} {'share':>6} {'cpu ms/pod':>10}")
    for r in results:
        print(f"{r['nodes']:>6} {r['pods']:>5} {r['bare_creates_per_s']:>9} {r['create_rate_per_s']:>9} "
              f"{r['scheduled_pods_per_s']:>13} {r['share_of_bare_write_rate']:>6} "
              f"{r['bind_latency_p50_ms']:>8} {r['bind_latency_p99_ms']:>8} "
              f"{r.get('backlog_drain_pods_per_s', '-'):>13} {r.get('backlog_share_of_bare_write_rate', '-'):>6} "
              f"{r['apiserver_cpu_ms_per_scheduled_pod']:>10}")
    out = "scheduler_hollow_results.json" if args.hollow else "scheduler_results.json"
    (REPO / "bench" / out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
