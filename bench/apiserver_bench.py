#!/usr/bin/env python3
"""Apiserver benchmarks: the embedded store against etcd in the same run.

For each backend (embedded redb, then a real etcd from Debian's etcd-server on
loopback) a fresh `kubelab-apiserver` is started and measured:

1. Creates per second: POST of pods over keep-alive HTTPS connections, with
   one client and with 8 concurrent clients.
2. LIST of 1000 pods: `kubectl get pods` wall time (median of 10, kubectl's own
   start included), next to the floor `kubectl version --client` (kubectl
   starting and printing, no request) and a raw `GET /api/v1/.../pods` (JSON)
   from an open connection.
3. Watch latency: a label PATCH acknowledged -> its MODIFIED event read by a
   watcher on another connection; median and p95 of 200.
4. RSS of the apiserver with 10 000 pods stored (and of etcd beside it).

Run as root from the repo root after `cargo build --release -p kubelab-apiserver`:
    python3 bench/apiserver_bench.py [--pods 10000] [--backends embedded,etcd]
Prints a table and writes bench/apiserver_results.json. Nothing is asserted.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APISERVER = REPO / "target/release/kubelab-apiserver"


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


def stop(proc, timeout=10):
    """Ends a process this bench started: SIGTERM, then SIGKILL after `timeout` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Client:
    """One keep-alive HTTPS connection with the admin kubeconfig's client cert."""

    def __init__(self, port, ctx):
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)

    def request(self, method, path, body=None, ctype="application/json"):
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = ctype
            body = json.dumps(body)
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
        return data


def tls_context(data_dir):
    cfg = _kubeconfig(data_dir / "admin.kubeconfig")
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    files = {}
    for key in ("certificate-authority-data",):
        files[key] = data_dir / "bench-ca.pem"
        files[key].write_bytes(base64.b64decode(cluster[key]))
    crt = data_dir / "bench-client.crt"
    key = data_dir / "bench-client.key"
    crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    ctx = ssl.create_default_context(cafile=str(files["certificate-authority-data"]))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(crt), str(key))
    return ctx


def _kubeconfig(path):
    # The kubeconfig is YAML; kubectl can print it as JSON without a YAML parser here.
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(path), "config", "view", "--raw", "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def pod(name, i):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "shard": str(i % 10)}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
    }


def create_pods(port, ctx, names, clients):
    """Creates the named pods with `clients` concurrent connections; returns pods/s."""
    chunks = [names[i::clients] for i in range(clients)]
    errors = []

    def run(chunk):
        c = Client(port, ctx)
        try:
            for n in chunk:
                c.request("POST", "/api/v1/namespaces/default/pods", pod(n, hash(n)))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(ch,)) for ch in chunks]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        raise SystemExit(f"create failed: {errors[0]}")
    return len(names) / elapsed


def kubectl_ms(kubeconfig, cache, args, runs=10):
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
            check=True, stdout=subprocess.DEVNULL,
        )
        times.append((time.monotonic() - t0) * 1000)
    return statistics.median(times)


def watch_latency(port, ctx, name, samples=200):
    """PATCH acknowledged -> MODIFIED event read, per sample, in ms."""
    c = Client(port, ctx)
    got = json.loads(c.request("GET", f"/api/v1/namespaces/default/pods/{name}"))
    rv = got["metadata"]["resourceVersion"]
    sock = socket.create_connection(("127.0.0.1", port))
    w = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    w.sendall(
        (
            f"GET /api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
            f"&fieldSelector=metadata.name%3D{name} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n"
        ).encode()
    )
    reader = w.makefile("rb")
    while reader.readline() not in (b"\r\n", b""):
        pass  # response headers

    def next_event():
        # Chunked encoding: size line, then the JSON line(s), then CRLF.
        while True:
            size = int(reader.readline().strip() or b"0", 16)
            data = reader.read(size)
            reader.readline()
            if data.strip():
                return json.loads(data)

    lat = []
    for i in range(samples):
        body = {"metadata": {"labels": {"seq": str(i)}}}
        t0 = time.monotonic()
        c.request("PATCH", f"/api/v1/namespaces/default/pods/{name}", body,
                  ctype="application/merge-patch+json")
        t_ack = time.monotonic()
        while True:
            ev = next_event()
            if ev["object"]["metadata"].get("labels", {}).get("seq") == str(i):
                break
        t_ev = time.monotonic()
        lat.append(((t_ev - t_ack) * 1000, (t_ev - t0) * 1000))
    w.close()
    after_ack = sorted(x[0] for x in lat)
    from_write = sorted(x[1] for x in lat)
    return {
        "ack_to_event_median_ms": statistics.median(after_ack),
        "write_to_event_median_ms": statistics.median(from_write),
        "write_to_event_p95_ms": from_write[int(len(from_write) * 0.95) - 1],
    }


def start_etcd(tmp):
    cport, pport = free_port(), free_port()
    c, p = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    proc = subprocess.Popen(
        ["etcd", "--name", "bench", "--data-dir", str(tmp / "etcd"),
         "--listen-client-urls", c, "--advertise-client-urls", c,
         "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
         "--initial-cluster", f"bench={p}", "--quota-backend-bytes", str(8 << 30)],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "etcd.log", "w"),
    )
    wait_port(cport, proc, "etcd")
    return proc, c


def bench_backend(backend, total_pods):
    tmp = Path(tempfile.mkdtemp(prefix=f"kubelab-apibench-{backend}-"))
    procs = []
    try:
        args = []
        etcd = None
        if backend == "etcd":
            etcd, url = start_etcd(tmp)
            procs.append(etcd)
            args = ["--etcd-servers", url]
        port = free_port()
        data = tmp / "data"
        api = subprocess.Popen(
            [str(APISERVER), "--data-dir", str(data), "--bind-address", "127.0.0.1",
             "--secure-port", str(port), *args],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "apiserver.log", "w"),
            env={**os.environ, "RUST_LOG": "warn"},
        )
        procs.append(api)
        wait_port(port, api, "apiserver")
        ctx = tls_context(data)
        kubeconfig = data / "admin.kubeconfig"
        cache = tmp / "kube-cache"
        r = {"backend": backend, "idle_rss_kib": rss_kib(api.pid)}

        names = [f"bench-{i:05d}" for i in range(total_pods)]
        r["creates_per_s_1_client"] = create_pods(port, ctx, names[:500], 1)
        r["creates_per_s_8_clients"] = create_pods(port, ctx, names[500:1000], 8)

        # LIST of exactly 1000 pods.
        kubectl_ms(kubeconfig, cache, ["get", "pods", "--no-headers"], runs=2)  # warm the discovery cache
        r["kubectl_get_1000_pods_ms"] = kubectl_ms(kubeconfig, cache, ["get", "pods", "--no-headers"])
        r["kubectl_version_client_ms"] = kubectl_ms(kubeconfig, cache, ["version", "--client"])
        c = Client(port, ctx)
        times = []
        for _ in range(10):
            t0 = time.monotonic()
            items = json.loads(c.request("GET", "/api/v1/namespaces/default/pods"))["items"]
            times.append((time.monotonic() - t0) * 1000)
        assert len(items) == 1000, len(items)
        r["raw_list_1000_pods_ms"] = statistics.median(times)

        r.update(watch_latency(port, ctx, names[0]))

        if total_pods > 1000:
            t0 = time.monotonic()
            create_pods(port, ctx, names[1000:], 8)
            r["fill_seconds"] = time.monotonic() - t0
        time.sleep(1)
        r["pods_stored"] = total_pods
        r["rss_kib_with_pods"] = rss_kib(api.pid)
        if etcd:
            r["etcd_rss_kib"] = rss_kib(etcd.pid)
        return r
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--backends", default="embedded,etcd")
    a = ap.parse_args()
    if not APISERVER.exists():
        raise SystemExit(f"{APISERVER} is missing: cargo build --release -p kubelab-apiserver")
    results = [bench_backend(b, a.pods) for b in a.backends.split(",")]
    keys = [k for k in results[0] if k != "backend"]
    print(f"{'':32}" + "".join(f"{r['backend']:>14}" for r in results))
    for k in keys:
        cells = ""
        for r in results:
            v = r.get(k, "")
            cells += f"{v:>14.1f}" if isinstance(v, float) else f"{v!s:>14}"
        print(f"{k:32}{cells}")
    (REPO / "bench/apiserver_results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
