#!/usr/bin/env python3
"""CNI plugin benchmark: our kubelab-bridge + kubelab-host-local against the
reference bridge + host-local (Debian's containernetworking-plugins in
/usr/lib/cni), same host, same run, same config shape (the agent's default
network: bridge, isGateway, isDefaultGateway, ipMasq, hairpinMode, a /16
range; each set has its own bridge, network name and dataDir).

Everything happens in network namespaces this script creates: one "node"
namespace (the bridge, the masquerade rules) that the plugins run in, and one
namespace per pod (CNI_NETNS=/var/run/netns/NAME), created and deleted outside
the timed part.

1. Sequential: N iterations of ADD then DEL of one pod, the two plugin sets
   alternating (the order flips every iteration) to spread drift evenly.
2. Concurrent: R rounds of C pods ADDed at once, then DELed at once (wall time
   of each batch), the sets alternating by round.

Run as root from the repo root after `cargo build --release -p kubelab-cni --bins`:
    sudo python3 bench/cni_bench.py [--iterations 100] [--concurrency 8] [--rounds 10]
Prints a table and writes bench/cni_results.json. Nothing is asserted: the
figures go into notes, as ratios ours / reference.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OURS_DIR = REPO / "target/release"
REF_DIR = Path("/usr/lib/cni")
CLONE_NEWNET = 0x40000000
PREFIX = f"kl-cnibench-{os.getpid()}"

SETS = {
    "ours": {
        "dir": OURS_DIR,
        "bridge": "kubelab-bridge",
        "ipam": "kubelab-host-local",
        "bridge_name": "klbench-ours",
        "subnet": "10.231.0.0/16",
    },
    "reference": {
        "dir": REF_DIR,
        "bridge": "bridge",
        "ipam": "host-local",
        "bridge_name": "klbench-ref",
        "subnet": "10.232.0.0/16",
    },
}

created_ns = []


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def add_ns(name):
    sh("ip", "netns", "add", name)
    created_ns.append(name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    return f"/var/run/netns/{name}"


def del_ns(name):
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if name in created_ns:
        created_ns.remove(name)


def cleanup():
    for name in list(created_ns):
        del_ns(name)


def enter_netns(path):
    """Moves this process (single-threaded) into `path`: every plugin it
    spawns then runs in the node namespace, with no wrapper process timed."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def conf(s, data_dir):
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": f"klbench-{s['bridge_name'].split('-')[1]}",
        "type": s["bridge"],
        "bridge": s["bridge_name"],
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": s["ipam"],
            "ranges": [[{"subnet": s["subnet"]}]],
            "dataDir": str(data_dir),
        },
    }).encode()


def env(s, command, cid, netns):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e.update({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p",
        "CNI_PATH": str(s["dir"]),
    })
    return e


def spawn(s, command, cid, netns):
    p = subprocess.Popen([str(s["dir"] / s["bridge"])], env=env(s, command, cid, netns),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(s["conf"])
    p.stdin.close()
    return p


def finish(p, what):
    out = p.stdout.read()
    err = p.stderr.read()
    if p.wait() != 0:
        raise RuntimeError(f"{what} failed: {out.decode()} {err.decode()}")
    return out


def check_add(out, s, what):
    r = json.loads(out)
    if not r.get("ips"):
        raise RuntimeError(f"{what}: no address in {r}")


def run_one(s, command, cid, netns):
    """Seconds for one plugin invocation, from spawn to exit."""
    t0 = time.perf_counter()
    p = spawn(s, command, cid, netns)
    out = finish(p, f"{s['bridge']} {command} {cid}")
    dt = time.perf_counter() - t0
    if command == "ADD":
        check_add(out, s, f"{s['bridge']} ADD {cid}")
    return dt


def run_batch(s, command, pods):
    """Wall seconds for C invocations started together."""
    t0 = time.perf_counter()
    procs = [(spawn(s, command, cid, netns), cid) for cid, netns in pods]
    outs = [(finish(p, f"{s['bridge']} {command} {cid}"), cid) for p, cid in procs]
    dt = time.perf_counter() - t0
    if command == "ADD":
        for out, cid in outs:
            check_add(out, s, f"{s['bridge']} ADD {cid}")
    return dt


def stats(xs):
    xs = sorted(xs)
    return {
        "median_ms": round(statistics.median(xs) * 1000, 2),
        "p90_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.9))] * 1000, 2),
        "n": len(xs),
    }


def sequential(n, warmup):
    times = {k: {"add": [], "del": [], "add_del": []} for k in SETS}
    for i in range(-warmup, n):
        order = list(SETS) if i % 2 == 0 else list(SETS)[::-1]
        for key in order:
            s = SETS[key]
            name = f"{PREFIX}-{key[:3]}-{i + warmup}"
            netns = add_ns(name)
            cid = f"bench-{key}-{i + warmup:05d}"
            a = run_one(s, "ADD", cid, netns)
            d = run_one(s, "DEL", cid, netns)
            del_ns(name)
            if i >= 0:
                times[key]["add"].append(a)
                times[key]["del"].append(d)
                times[key]["add_del"].append(a + d)
    return times


def concurrent(c, rounds):
    times = {k: {"add": [], "del": [], "add_del": []} for k in SETS}
    for r in range(rounds):
        order = list(SETS) if r % 2 == 0 else list(SETS)[::-1]
        for key in order:
            s = SETS[key]
            pods = []
            for j in range(c):
                name = f"{PREFIX}-c{key[:3]}-{r}-{j}"
                pods.append((f"bench-c-{key}-{r}-{j}", add_ns(name)))
            a = run_batch(s, "ADD", pods)
            d = run_batch(s, "DEL", pods)
            for cid, netns in pods:
                del_ns(Path(netns).name)
            times[key]["add"].append(a)
            times[key]["del"].append(d)
            times[key]["add_del"].append(a + d)
    return times


def leftovers():
    """Veths and masquerade rules still in the node namespace (this process is in it)."""
    veths = sh("ip", "-o", "link", "show", "type", "veth").strip()
    nat = sh("iptables", "-w", "-t", "nat", "-S")
    rules = [l for l in nat.splitlines() if "CNI-" in l]
    return veths, rules


def summarize(times):
    out = {}
    for key, t in times.items():
        out[key] = {op: stats(xs) for op, xs in t.items()}
    out["ratio_median"] = {
        op: round(out["ours"][op]["median_ms"] / out["reference"][op]["median_ms"], 3)
        for op in ("add", "del", "add_del")
    }
    return out


def print_table(title, s, unit):
    print(f"\n{title}")
    print(f"{'':12} {'ours med':>9} {'p90':>8} {'ref med':>9} {'p90':>8} {'ratio':>6}")
    for op in ("add", "del", "add_del"):
        o, r = s["ours"][op], s["reference"][op]
        print(f"{op.upper().replace('_', '+'):12} {o['median_ms']:>7.2f}ms {o['p90_ms']:>6.2f}ms "
              f"{r['median_ms']:>7.2f}ms {r['p90_ms']:>6.2f}ms {s['ratio_median'][op]:>6.2f}")
    print(f"({unit}; ratio = ours median / reference median)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8, help="pods per batch (0: skip)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "bench/cni_results.json"))
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    for s in SETS.values():
        for b in (s["bridge"], s["ipam"]):
            if not os.access(s["dir"] / b, os.X_OK):
                sys.exit(f"{s['dir'] / b} missing (cargo build --release -p kubelab-cni --bins; "
                         "apt-get install containernetworking-plugins)")

    # SIGTERM/SIGHUP unwind through `finally` like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))
    tmp = Path(tempfile.mkdtemp(prefix="kl-cnibench-"))
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    left = []
    try:
        for key, s in SETS.items():
            s["conf"] = conf(s, tmp / key)
        enter_netns(add_ns(f"{PREFIX}-node"))
        seq = summarize(sequential(args.iterations, args.warmup))
        conc = None
        if args.concurrency > 0 and args.rounds > 0:
            conc = summarize(concurrent(args.concurrency, args.rounds))
        veths, rules = leftovers()
        held = sorted(p.name for p in tmp.glob("*/*/*") if p.name[0].isdigit())
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(host_ns, CLONE_NEWNET)
        os.close(host_ns)
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        left = [l for l in sh("ip", "netns", "list").splitlines() if l.startswith(PREFIX)]

    print_table(f"Sequential: {args.iterations} x (ADD, DEL) of one pod, per invocation", seq,
                "per invocation")
    if conc:
        print_table(f"Concurrent: {args.rounds} rounds of {args.concurrency} pods ADDed at once, "
                    "then DELed at once", conc, "wall time of a batch")
    clean = not veths and not rules and not held and not left
    print(f"\nafter DEL: veths {'none' if not veths else veths!r}, CNI- rules {len(rules)}, "
          f"IPAM allocations {len(held)}; namespaces left: {left or 'none'}")
    results = {
        "bench": "cni",
        "ours": f"{OURS_DIR.relative_to(REPO)}/kubelab-bridge + kubelab-host-local",
        "reference": "/usr/lib/cni bridge + host-local (containernetworking-plugins "
                     + sh("dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins")
                     + ")",
        "config": "bridge, isGateway, isDefaultGateway, ipMasq, hairpinMode, /16 range",
        "iterations": args.iterations,
        "sequential": seq,
        "concurrent": conc and {"pods": args.concurrency, "rounds": args.rounds, **conc},
        "clean_after_del": clean,
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {Path(args.out).relative_to(REPO) if Path(args.out).is_relative_to(REPO) else args.out}")
    if not clean:
        sys.exit("DEL left state behind")


if __name__ == "__main__":
    main()
