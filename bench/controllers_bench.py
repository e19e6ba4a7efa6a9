#!/usr/bin/env python3
"""Controller benchmarks: the Deployment and ReplicaSet controllers against
the apiserver's bare write rate, in the same run.

A fresh release `kubelab-apiserver` (embedded store, controllers in-process)
gets Node objects without agents (the in-process scheduler, when there is
one, binds to them). Then:

1. Bare writes: 1000 pods POSTed by 8 concurrent keep-alive clients, the
   ceiling any controller's creates meet.
2. `kubectl create deployment bench --replicas=1000`: time until the
   ReplicaSet's 1000 pods exist (and until all are bound, when a scheduler
   binds them).
3. A readiness faker (one watch, 8 writers patching the status subresource
   as kubelets would) marks pods Ready; time until the Deployment is
   complete, then `kubectl set image` and time until that rollout is
   complete (all 1000 pods replaced under maxSurge/maxUnavailable 25%).

Anchor: kube-controller-manager's default client limits (20 QPS, burst 30)
alone make 1000 pod creates take at least (1000 - 30) / 20 = 48.5 s.

Run from the repo root after `cargo build --release --workspace`:
    python3 bench/controllers_bench.py [--replicas 1000] [--nodes 20]
Prints a table and writes bench/controllers_results.json. Nothing is asserted.
"""

import argparse
import json
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apiserver_bench import APISERVER, Client, free_port, tls_context, wait_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def node(name):
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
        },
    }


def kubectl(kubeconfig, cache, *args):
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
        check=True, capture_output=True, text=True,
    ).stdout


def get(c, path):
    return json.loads(c.request("GET", path))


def wait_until(what, check, timeout=300, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v:
            return time.monotonic()
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


class ReadinessFaker:
    """Watches the benchmark's pods and marks each new one Running/Ready."""

    def __init__(self, port, ctx, selector, writers=8):
        self.port, self.ctx, self.selector = port, ctx, selector
        self.todo = queue.Queue()
        self.stop = threading.Event()
        self.patched = 0
        self.threads = [threading.Thread(target=self.watch, daemon=True)]
        self.threads += [threading.Thread(target=self.write, daemon=True) for _ in range(writers)]
        for t in self.threads:
            t.start()

    def watch(self):
        sock = socket.create_connection(("127.0.0.1", self.port))
        w = self.ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        w.sendall(
            (f"GET /api/v1/namespaces/default/pods?watch=true&labelSelector={self.selector} HTTP/1.1\r\n"
             "Host: x\r\nAccept: application/json\r\n\r\n").encode()
        )
        reader = w.makefile("rb")
        while reader.readline() not in (b"\r\n", b""):
            pass
        seen = set()
        while not self.stop.is_set():
            size = int(reader.readline().strip() or b"0", 16)
            data = reader.read(size)
            reader.readline()
            for line in data.splitlines():
                if not line.strip():
                    continue
                ev = json.loads(line)
                p = ev["object"]
                m = p["metadata"]
                if ev["type"] == "DELETED" or m.get("deletionTimestamp"):
                    continue
                ready = any(c["type"] == "Ready" and c["status"] == "True"
                            for c in p.get("status", {}).get("conditions", []))
                if not ready and m["uid"] not in seen:
                    seen.add(m["uid"])
                    self.todo.put(m["name"])

    def write(self):
        c = Client(self.port, self.ctx)
        while not self.stop.is_set():
            try:
                name = self.todo.get(timeout=0.2)
            except queue.Empty:
                continue
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            body = {"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now}]}}
            try:
                c.request("PATCH", f"/api/v1/namespaces/default/pods/{name}/status", body,
                          ctype="application/merge-patch+json")
                self.patched += 1
            except RuntimeError:
                pass  # deleted meanwhile


def deployment_done(c, generation_at_least=1):
    d = get(c, "/apis/apps/v1/namespaces/default/deployments/bench")
    s, want = d.get("status", {}), d["spec"]["replicas"]
    return (d["metadata"]["generation"] >= generation_at_least
            and s.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and s.get("updatedReplicas") == want and s.get("replicas") == want
            and s.get("availableReplicas") == want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=30)
    args = ap.parse_args()
    n = args.replicas
    tmp = Path(tempfile.mkdtemp(prefix="controllers-bench-"))
    port = free_port()
    log = open(tmp / "apiserver.log", "w")
    proc = subprocess.Popen(
        [str(APISERVER), "--data-dir", str(tmp), "--bind-address", "127.0.0.1", "--secure-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    r = {"replicas": n, "nodes": args.nodes}
    try:
        wait_port(port, proc, "apiserver")
        kubeconfig, cache = tmp / "admin.kubeconfig", tmp / "kube-cache"
        ctx = tls_context(tmp)
        c = Client(port, ctx)
        for i in range(args.nodes):
            c.request("POST", "/api/v1/nodes", node(f"bench-node-{i}"))

        # 1. The apiserver's bare write rate (8 clients), in its own namespace.
        c.request("POST", "/api/v1/namespaces",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bare"}})
        names = [f"bare-{i}" for i in range(n)]
        errors = []

        def bare(chunk):
            cl = Client(port, ctx)
            try:
                for name in chunk:
                    cl.request("POST", "/api/v1/namespaces/bare/pods", {
                        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=bare, args=(names[i::8],)) for i in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        r["bare_creates_s"] = time.monotonic() - t0
        if errors:
            raise SystemExit(f"bare creates failed: {errors[0]}")
        c.request("DELETE", "/api/v1/namespaces/bare/pods?gracePeriodSeconds=0")
        wait_until("bare pods gone", lambda: not get(c, "/api/v1/namespaces/bare/pods?limit=1")["items"])

        # 2. A Deployment of n replicas: pods created (and bound, with a scheduler).
        faker = ReadinessFaker(port, ctx, "app%3Dbench")
        time.sleep(0.2)
        t0 = time.monotonic()
        kubectl(kubeconfig, cache, "create", "deployment", "bench", "--image=busybox:1.35", f"--replicas={n}")

        def pods():
            return get(c, "/api/v1/namespaces/default/pods?labelSelector=app%3Dbench")["items"]

        t_created = wait_until(f"{n} pods", lambda: len(pods()) >= n, interval=0.05)
        r["deployment_pods_created_s"] = t_created - t0
        scheduled = bool(pods() and any(p["spec"].get("nodeName") for p in pods()))
        if scheduled:
            t_bound = wait_until(f"{n} pods bound", lambda: sum(
                1 for p in pods() if p["spec"].get("nodeName")) >= n, interval=0.05)
            r["deployment_pods_bound_s"] = t_bound - t0
        t_ready = wait_until("the deployment complete", lambda: deployment_done(c), interval=0.05)
        r["deployment_available_s"] = t_ready - t0

        # 3. A rolling update of all n pods, readiness faked.
        gen = get(c, "/apis/apps/v1/namespaces/default/deployments/bench")["metadata"]["generation"]
        t0 = time.monotonic()
        kubectl(kubeconfig, cache, "set", "image", "deploy/bench", "busybox=busybox:1.36")
        t_done = wait_until("the rollout complete", lambda: deployment_done(c, gen + 1), interval=0.05)
        r["rollout_s"] = t_done - t0
        r["ready_patches"] = faker.patched
        faker.stop.set()
        rss = get(c, "/apis/apps/v1/namespaces/default/replicasets")["items"]
        r["replica_sets"] = {x["metadata"]["name"]: x["spec"]["replicas"] for x in rss}
        r["pods_after_rollout"] = len(pods())
    finally:
        proc.terminate()
        proc.wait()
        log.close()

    # kube-controller-manager's client: burst 30, then 20 QPS.
    r["kcm_client_limit_floor_s"] = (n - 30) / 20
    print(f"bare apiserver writes : {n} pod creates in {r['bare_creates_s']:.2f} s "
          f"({n / r['bare_creates_s']:.0f}/s, 8 clients)")
    print(f"deployment, {n} pods  : created in {r['deployment_pods_created_s']:.2f} s"
          + (f", bound in {r['deployment_pods_bound_s']:.2f} s" if "deployment_pods_bound_s" in r else " (no scheduler)")
          + f", all available in {r['deployment_available_s']:.2f} s")
    print(f"set image rollout     : complete in {r['rollout_s']:.2f} s ({r['ready_patches']} readiness patches)")
    print(f"anchor                : KCM client limits alone >= {r['kcm_client_limit_floor_s']:.1f} s for {n} creates")
    out = REPO / "bench/controllers_results.json"
    out.write_text(json.dumps(r, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
