#!/usr/bin/env python3
"""The node as a cluster member: pods through the real apiserver and kubectl.

A fresh `kubelab-apiserver` and a `kubelab-agent` joined to it run in a
network namespace of their own (created here, deleted at the end, pods wired
by the project's bridge CNI plugin inside it); the agent's cgroups nest
under this process's own cgroup. Measured:

1. Pod start through the API: `kubectl create` of a pod with `nodeName` ->
   phase Running seen by a watcher (a `?watch=true` stream on its own
   connection), one pod after another; median and p99, counted from the
   kubectl invocation and from kubectl's return (the object stored).
2. Burst: 100 pods in one `kubectl create -f` -> all Running.
3. Memory: the agent's RSS idle and with the 100 API pods (steady state).

Run as root from the repo root after `cargo build --release --workspace`:
    python3 bench/node_api_bench.py [--runs 50] [--pods 100]
Prints the figures and writes bench/node_api_results.json. Nothing is asserted.
"""

import argparse
import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGENT = REPO / "target/release/kubelab-agent"
APISERVER = REPO / "target/release/kubelab-apiserver"
IMAGE = REPO / "target/test-images/busybox.tar"
CLONE_NEWNET = 0x40000000


def enter_netns(name):
    """Moves this process (and every child it starts) into netns `name`."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


def pod(name, node):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "node-api"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c",
                "image": "busybox",
                "command": ["sleep", "3600"],
                "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}},
            }],
        },
    }


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Cluster:
    def __init__(self, work):
        self.work = Path(work)
        self.netns = f"kubelab-bench-{os.getpid()}"
        self.cgroup_root = f"kubelab-node-api-bench-{os.getpid()}"
        self.node = "bench-node"
        self.api_proc = self.agent_proc = None
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        enter_netns(self.netns)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

        self.port = free_port()
        self.data = self.work / "apiserver"
        self.api_log = open(self.work / "apiserver.log", "w")
        self.api_proc = subprocess.Popen(
            [APISERVER, "--data-dir", self.data, "--bind-address", "127.0.0.1",
             "--secure-port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=self.api_log,
            env={**os.environ, "RUST_LOG": "warn"})
        wait_port(self.port, self.api_proc, "kubelab-apiserver")
        while not (self.data / "admin.kubeconfig").exists():
            time.sleep(0.05)
        self.kubeconfig = self.data / "admin.kubeconfig"
        self.ctx = self.tls_context()

        self.state = self.work / "state"
        subprocess.run([AGENT, "--root-dir", self.state, "image", "import", IMAGE],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "RUST_LOG": "warn"})
        self.agent_port = free_port()
        self.agent_log = open(self.work / "agent.log", "w")
        self.start_agent()

    def start_agent(self):
        """The agent, joined to the apiserver; again after it was stopped
        (its pods are still running: it adopts them)."""
        self.agent_proc = subprocess.Popen(
            [AGENT, "--root-dir", self.state, "--kubeconfig", self.kubeconfig,
             "--hostname-override", self.node, "--node-ip", "127.0.0.1",
             "--cgroup-root", self.cgroup_root,
             "--address", "127.0.0.1", "--port", "0", "--read-only-port", str(self.agent_port),
             # The agent's default network (from the Node's podCIDR) uses the
             # project's plugins; the reference ones are there for the rest.
             "--cni-conf-dir", self.work / "cni",
             "--cni-bin-dir", f"{REPO / 'target/release'},/usr/lib/cni",
             "--proxy-mode", "none",
             # What is measured is start-up and memory, not eviction: a
             # nearly full disk on the bench machine must not taint the node.
             "--eviction-hard", "memory.available<1Mi,nodefs.available<1%,imagefs.available<1%",
             "--image-gc-high-threshold", "100"],
            stdout=subprocess.DEVNULL, stderr=self.agent_log,
            env={**os.environ, "RUST_LOG": "warn"})
        wait_port(self.agent_port, self.agent_proc, "kubelab-agent")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.kubectl("get", "node", self.node, "-o",
                               "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                               check=False)
            if out == "True":
                break
            time.sleep(0.2)
        else:
            raise SystemExit("the node did not become Ready")

    def tls_context(self):
        cfg = json.loads(self.kubectl("config", "view", "--raw", "-o", "json"))
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        ca, crt, key = self.work / "ca.pem", self.work / "client.crt", self.work / "client.key"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(crt), str(key))
        return ctx

    def kubectl(self, *args, stdin=None, check=True):
        r = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig),
             "--cache-dir", str(self.work / "kube-cache"), *args],
            input=stdin, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)}: {r.stderr}")
        return r.stdout

    def stop(self):
        try:
            if self.api_proc and self.api_proc.poll() is None and self.agent_proc:
                self.kubectl("delete", "pods", "--all", "--wait=false", check=False)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    if not self.kubectl("get", "pods", "-o", "name", check=False).strip():
                        break
                    time.sleep(0.5)
        finally:
            for proc in (self.agent_proc, self.api_proc):
                if proc and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            self.remove_cgroups()
            subprocess.run(["ip", "netns", "del", self.netns], check=False)

    def remove_cgroups(self):
        """The agent's hierarchy, bottom up; whatever still runs there is killed."""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if not ctrls or ctrls.startswith("name="):
                continue
            base = Path("/sys/fs/cgroup") / ctrls / path.lstrip("/") / self.cgroup_root
            if not base.exists():
                continue
            dirs = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in dirs + [base]:
                for pid in (d / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for d in dirs + [base]:
                for _ in range(50):
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)


class Watcher:
    """A `?watch=true` stream of the namespace's pods; records when each pod
    is first seen Running (monotonic clock)."""

    def __init__(self, cluster):
        self.running = {}
        self.cond = threading.Condition()
        sock = socket.create_connection(("127.0.0.1", cluster.port))
        self.sock = cluster.ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock.sendall(
            b"GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\n"
            b"Host: kubernetes\r\nAccept: application/json\r\n\r\n")
        self.reader = self.sock.makefile("rb")
        while self.reader.readline() not in (b"\r\n", b""):
            pass  # response headers
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        while True:
            # Chunked encoding: size line, the data, CRLF; a chunk may hold
            # several events or part of one.
            size_line = self.reader.readline()
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            data = self.reader.read(size)
            self.reader.readline()
            now = time.monotonic()
            for line in data.splitlines():
                if not line.strip():
                    continue
                ev = json.loads(line)
                obj = ev.get("object", {})
                name = obj.get("metadata", {}).get("name")
                if obj.get("status", {}).get("phase") == "Running":
                    with self.cond:
                        self.running.setdefault(name, now)
                        self.cond.notify_all()

    def wait(self, names, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(n in self.running for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.running]
                    raise SystemExit(f"not Running after {timeout}s: {missing[:5]}")
                self.cond.wait(left)
        return max(self.running[n] for n in names)


def delete_all(cluster):
    cluster.kubectl("delete", "pods", "--all", "--wait=false")
    deadline = time.monotonic() + 180
    while cluster.kubectl("get", "pods", "-o", "name").strip():
        if time.monotonic() > deadline:
            raise SystemExit("pods were not deleted")
        time.sleep(0.5)


def print_log_tails(work):
    """The last lines of the cluster's logs, when a run failed."""
    for log in ("agent.log", "apiserver.log"):
        text = (Path(work) / log).read_text(errors="replace").splitlines()
        print(f"--- {log} (tail) ---", *text[-15:], sep="\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--pods", type=int, default=100)
    args = ap.parse_args()
    for b in (AGENT, APISERVER):
        if not b.exists():
            raise SystemExit("build first: cargo build --release --workspace")
    if not IMAGE.exists():
        subprocess.run([REPO / "scripts/build-test-image.sh", IMAGE], check=True)
    work = tempfile.mkdtemp(prefix="kubelab-node-api-bench-")
    cluster = None
    out = {}
    try:
        cluster = Cluster(work)
        time.sleep(5)
        out["agent_idle_rss_kib"] = rss_kib(cluster.agent_proc.pid)
        watcher = Watcher(cluster)

        from_invocation, from_stored, create_ms = [], [], []
        for i in range(args.runs):
            name = f"lat{i}"
            t0 = time.monotonic()
            cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod(name, cluster.node)))
            t1 = time.monotonic()
            running = watcher.wait([name], 60)
            from_invocation.append((running - t0) * 1000)
            from_stored.append((running - t1) * 1000)
            create_ms.append((t1 - t0) * 1000)
        out["start_from_kubectl_ms"] = from_invocation
        out["start_from_stored_ms"] = from_stored
        out["kubectl_create_ms"] = create_ms
        delete_all(cluster)

        names = [f"b{i}" for i in range(args.pods)]
        # One stream of documents (JSON is YAML), as `kubectl create -f dir/` reads them.
        stream = "".join(f"---\n{json.dumps(pod(n, cluster.node))}\n" for n in names)
        t0 = time.monotonic()
        cluster.kubectl("create", "-f", "-", stdin=stream)
        t_created = time.monotonic()
        t_all = watcher.wait(names, 300)
        out["burst_pods"] = args.pods
        out["burst_create_s"] = t_created - t0
        out["burst_all_running_s"] = t_all - t0
        out["agent_rss_after_burst_kib"] = rss_kib(cluster.agent_proc.pid)
        time.sleep(15)
        out["agent_rss_with_pods_kib"] = rss_kib(cluster.agent_proc.pid)
        out["apiserver_rss_with_pods_kib"] = rss_kib(cluster.api_proc.pid)
    except BaseException:
        print_log_tails(work)
        raise
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    def stats(xs):
        return f"median {statistics.median(xs):.0f} ms, p99 {percentile(xs, 99):.0f} ms"

    print(f"pod start through the API ({args.runs} pods, one after another):")
    print(f"  kubectl create -> Running seen by a watcher: {stats(out['start_from_kubectl_ms'])}")
    print(f"  stored (kubectl returned) -> Running:        {stats(out['start_from_stored_ms'])}")
    print(f"  kubectl create itself:                       {stats(out['kubectl_create_ms'])}")
    print(f"{args.pods} pods in one kubectl create -> all Running: {out['burst_all_running_s']:.2f} s "
          f"(kubectl create took {out['burst_create_s']:.2f} s)")
    print(f"agent RSS: idle {out['agent_idle_rss_kib'] / 1024:.1f} MiB, with {args.pods} API pods "
          f"{out['agent_rss_with_pods_kib'] / 1024:.1f} MiB steady "
          f"({out['agent_rss_after_burst_kib'] / 1024:.1f} MiB right after the burst); "
          f"apiserver {out['apiserver_rss_with_pods_kib'] / 1024:.1f} MiB")
    (REPO / "bench/node_api_results.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
