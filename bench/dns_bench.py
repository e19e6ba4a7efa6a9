#!/usr/bin/env python3
"""Cluster DNS benchmark: the apiserver's in-process DNS against CoreDNS's
published figure (about 30 000 queries/s per core for cached service names,
CoreDNS' own scaling guide: https://github.com/coredns/deployment/blob/master/kubernetes/Scaling_CoreDNS.md).

A fresh release `kubelab-apiserver` serves its cluster DNS on a loopback
port; a Service `bench-web` is created, then:

1. Throughput: `dnsperf` (Debian's dnsperf) asking `bench-web.default.svc.cluster.local A`
   with 100 clients and 100 queries in flight for --seconds; queries/s,
   and queries/s per core of CPU the apiserver used meanwhile (utime+stime
   from /proc), which is what "per core" compares.
2. Latency at 100 concurrent clients: a closed loop of 100 asyncio UDP
   clients (each waits for its answer before the next query); p50 and p99.
3. The same dnsperf run against a peer measured in this run: Debian's
   `dnsmasq` (apt install dnsmasq-base) answering the same name from a
   `--host-record`, from memory, one thread, as CoreDNS answers a cached
   service name. CoreDNS itself is not packaged for this machine.
4. Service creation to its name resolving: POST a new Service over an open
   HTTPS connection; from the moment the apiserver acknowledged it, the name
   is asked every millisecond until it answers NOERROR; median and max of 20.

Run as root from the repo root after `cargo build --release -p kubelab-apiserver`:
    python3 bench/dns_bench.py [--seconds 10]
Prints a table and writes bench/dns_results.json. Nothing is asserted.
"""

import argparse
import asyncio
import base64
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APISERVER = REPO / "target/release/kubelab-apiserver"
COREDNS_QPS_PER_CORE = 30000
NAME = "bench-web.default.svc.cluster.local"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(name, qtype=1, qid=None):
    qid = random.randrange(65536) if qid is None else qid
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def rcode(reply):
    return reply[3] & 0x0F


def answers(reply):
    return struct.unpack(">H", reply[6:8])[0]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def tls_context(data_dir):
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(data_dir / "admin.kubeconfig"), "config", "view",
         "--raw", "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    cfg = json.loads(out)
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    ca, crt, key = (data_dir / n for n in ("bench-ca.pem", "bench.crt", "bench.key"))
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(crt), str(key))
    return ctx


def create_service(conn, name):
    body = json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": name}},
    })
    conn.request("POST", "/api/v1/namespaces/default/services", body=body,
                  headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"creating service {name}: {resp.status} {data[:200]!r}")


def resolves(sock, name):
    sock.send(query(name))
    try:
        reply = sock.recv(512)
    except (socket.timeout, ConnectionRefusedError):
        # Not listening yet (ICMP port unreachable): asked again.
        return False
    return rcode(reply) == 0 and answers(reply) > 0


def creation_to_resolution(conn, dns_port, n=20):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", dns_port))
    sock.settimeout(0.5)
    took = []
    for i in range(n):
        name = f"fresh-{i}"
        create_service(conn, name)
        t0 = time.monotonic()
        fqdn = f"{name}.default.svc.cluster.local"
        while not resolves(sock, fqdn):
            time.sleep(0.001)
        took.append((time.monotonic() - t0) * 1000)
    return took


def run_dnsmasq(tmp):
    """dnsmasq on a loopback port with the benchmark's name as a host record."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--port", str(port),
         "--listen-address", "127.0.0.1", "--bind-interfaces", "--no-resolv",
         "--no-hosts", "--user=root", "--pid-file=" + str(tmp / "dnsmasq.pid"),
         f"--host-record={NAME},10.96.0.50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("127.0.0.1", port))
    probe.settimeout(0.5)
    deadline = time.monotonic() + 10
    while not resolves(probe, NAME):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("dnsmasq did not answer")
        time.sleep(0.05)
    return proc, port


def dnsperf(dns_port, seconds, pid, tmp):
    qfile = tmp / "queries.txt"
    qfile.write_text(f"{NAME} A\n" * 100)
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(dns_port), "-d", str(qfile),
         "-c", "100", "-q", "100", "-l", str(seconds)],
        check=True, capture_output=True, text=True,
    ).stdout
    cpu = cpu_seconds(pid) - cpu0
    result = {"raw": out, "server_cpu_seconds": round(cpu, 2)}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Queries per second:"):
            result["qps"] = float(line.split(":")[1])
        elif line.startswith("Queries completed:"):
            result["completed"] = int(line.split(":")[1].split()[0])
        elif line.startswith("Queries lost:"):
            result["lost"] = int(line.split(":")[1].split()[0])
        elif line.startswith("Average Latency"):
            result["avg_latency_ms"] = float(line.split(":")[1].split()[0]) * 1000
    if cpu > 0 and "completed" in result:
        result["qps_per_core"] = round(result["completed"] / cpu)
    return result


class Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.waiter = None

    def datagram_received(self, data, addr):
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(data)


async def closed_loop(dns_port, clients, seconds):
    loop = asyncio.get_running_loop()
    latencies = []
    deadline = time.monotonic() + seconds
    packet = query(NAME, qid=7)

    async def one():
        transport, proto = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", dns_port))
        try:
            while time.monotonic() < deadline:
                proto.waiter = loop.create_future()
                t0 = time.perf_counter()
                transport.sendto(packet)
                try:
                    await asyncio.wait_for(proto.waiter, 1.0)
                except asyncio.TimeoutError:
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            transport.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return latencies


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--apiserver", type=Path, default=APISERVER,
                    help="the binary to measure (default: the release build)")
    args = ap.parse_args()
    apiserver = args.apiserver
    if not apiserver.exists():
        raise SystemExit(f"{apiserver} missing: cargo build --release -p kubelab-apiserver")
    tmp = Path(tempfile.mkdtemp(prefix="kubelab-dns-bench-"))
    api_port, dns_port = free_port(), free_port(socket.SOCK_DGRAM)
    log = open(tmp / "apiserver.log", "w")
    proc = subprocess.Popen(
        [str(apiserver), "--data-dir", str(tmp), "--bind-address", "127.0.0.1",
         "--secure-port", str(api_port), "--allocate-node-cidrs=false",
         "--cluster-dns-listen", f"127.0.0.1:{dns_port}", "--upstream", "127.0.0.1:9"],
        stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not (tmp / "admin.kubeconfig").exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("apiserver did not start")
            time.sleep(0.05)
        time.sleep(0.5)
        ctx = tls_context(tmp)
        conn = http.client.HTTPSConnection("127.0.0.1", api_port, context=ctx, timeout=30)
        create_service(conn, "bench-web")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("127.0.0.1", dns_port))
        probe.settimeout(0.5)
        while not resolves(probe, NAME):
            time.sleep(0.01)

        creation = creation_to_resolution(conn, dns_port)
        perf = dnsperf(dns_port, args.seconds, proc.pid, tmp)
        latencies = asyncio.run(closed_loop(dns_port, 100, args.seconds))
        peer = None
        if shutil.which("dnsmasq"):
            dnsmasq, peer_port = run_dnsmasq(tmp)
            try:
                peer = dnsperf(peer_port, args.seconds, dnsmasq.pid, tmp)
                peer_latencies = asyncio.run(closed_loop(peer_port, 100, args.seconds))
            finally:
                dnsmasq.terminate()
                dnsmasq.wait()
        results = {
            "binary": str(apiserver.relative_to(REPO) if apiserver.is_relative_to(REPO) else apiserver),
            "cores": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
            "coredns_published_qps_per_core": COREDNS_QPS_PER_CORE,
            "dnsperf_100_clients": {k: v for k, v in perf.items() if k != "raw"},
            "closed_loop_100_clients": {
                "queries": len(latencies),
                "qps": round(len(latencies) / args.seconds),
                "p50_ms": round(pct(latencies, 0.50), 3),
                "p99_ms": round(pct(latencies, 0.99), 3),
            },
            "peer_dnsmasq": None if peer is None else {
                "dnsperf_100_clients": {k: v for k, v in peer.items() if k != "raw"},
                "closed_loop_100_clients": {
                    "qps": round(len(peer_latencies) / args.seconds),
                    "p50_ms": round(pct(peer_latencies, 0.50), 3),
                    "p99_ms": round(pct(peer_latencies, 0.99), 3),
                },
                "ratio_qps": round(perf.get("qps", 0) / peer["qps"], 2) if peer.get("qps") else None,
                "ratio_qps_per_core": round(perf.get("qps_per_core", 0) / peer["qps_per_core"], 2)
                if peer.get("qps_per_core") else None,
            },
            "service_created_to_resolving_ms": {
                "median": round(statistics.median(creation), 2),
                "max": round(max(creation), 2),
                "samples": len(creation),
            },
        }
    finally:
        proc.terminate()
        proc.wait()
    print(f"dnsperf, 100 clients:   {perf.get('qps', 0):10.0f} queries/s "
          f"({perf.get('qps_per_core', 0)} per core of server CPU; "
          f"CoreDNS published ~{COREDNS_QPS_PER_CORE}/core), lost {perf.get('lost')}, "
          f"avg latency {perf.get('avg_latency_ms', 0):.3f} ms")
    cl = results["closed_loop_100_clients"]
    print(f"closed loop, 100 clients: {cl['qps']:8d} queries/s, "
          f"p50 {cl['p50_ms']} ms, p99 {cl['p99_ms']} ms")
    if peer is not None:
        pd = results["peer_dnsmasq"]
        print(f"dnsmasq (same run):     {peer.get('qps', 0):10.0f} queries/s "
              f"({peer.get('qps_per_core', 0)} per core), closed loop "
              f"p50 {pd['closed_loop_100_clients']['p50_ms']} ms; kubelab/dnsmasq: "
              f"{pd['ratio_qps']}x queries/s, {pd['ratio_qps_per_core']}x per core")
    else:
        print("dnsmasq not installed (apt install dnsmasq-base): no same-run peer")
    cr = results["service_created_to_resolving_ms"]
    print(f"Service created -> name resolves: median {cr['median']} ms, max {cr['max']} ms "
          f"({cr['samples']} services)")
    (REPO / "bench/dns_results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
