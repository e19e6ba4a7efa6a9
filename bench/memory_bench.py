#!/usr/bin/env python3
"""Memory of the node: the agent with 100 pods from the API, and each
container's shim, against the peers that do the same job, in one run.

1. The agent: a fresh `kubelab-apiserver` and a `kubelab-agent` joined to it
   in a network namespace of their own (node_api_bench.py's cluster); its
   RSS idle and with 100 API pods (busybox `sleep`) once steady, with its
   thread count and what smaps_rollup says is private, anonymous or file.
2. Each shim (`kubelab-agent shim`, one per container): its private memory
   (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup: what it would
   free if it ended; binary pages shared with the other shims are not
   counted), median over the 100.
3. The peer shim, measured here: `runc run` in the foreground holding the
   same kind of container (a copy of the agent's own bundle): it stays the
   container's parent and supervisor as a shim does. CRI-O's conmon (a C
   shim, ~0.5-1 MiB private by its maintainers' figures) is not packaged
   for this Debian release, so it is not measured.

Run as root from the repo root after `cargo build --release --workspace --bins`:
    python3 bench/memory_bench.py [--pods 100] [--runc 10]
Prints the figures and writes bench/memory_results.json. Nothing is asserted.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import node_api_bench  # noqa: E402
from node_api_bench import REPO, Cluster, Watcher, delete_all, pod, rss_kib  # noqa: E402
from node_bench import peer_spec, remove_runc_cgroups  # noqa: E402

# Each process's figures from /proc/PID/smaps_rollup, in KiB.
ROLLUP_FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous")


def rollup(pid):
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ROLLUP_FIELDS:
            out[key] = int(rest.split()[0])
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def rss_by_mapping(pid):
    """Where a process's RSS is, from /proc/PID/smaps: per mapped file (its
    code and data) and for anonymous memory (heap, stacks, mmaps), in KiB,
    largest first."""
    where, current = {}, None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and ":" not in head[0]:
            path = head[5] if len(head) > 5 else "[anonymous]"
            current = Path(path).name if path.startswith("/") else path
        elif head[0] == "Rss:":
            where[current] = where.get(current, 0) + int(head[1])
    return dict(sorted(where.items(), key=lambda kv: -kv[1]))


def threads(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def processes_with(word, under):
    """PIDs whose command line has `word` and mentions the path `under`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if word.encode() in argv and any(str(under).encode() in a for a in argv):
            pids.append(int(proc.name))
    return pids


def summary(rollups, field):
    xs = [r[field] for r in rollups]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs else {}


def runc_peers(cluster, count, work):
    """`runc run` (foreground) of copies of one of the agent's bundles; the
    private memory of each runc process while its container runs."""
    bundles = sorted(cluster.state.glob("pods/*/containers/*/config.json"))
    if not bundles:
        raise SystemExit("no container bundle of the agent to copy")
    spec = json.loads(bundles[0].read_text())
    rootfs = Path(work) / "runc-rootfs"
    rootfs.mkdir()
    subprocess.run(["cp", "-a", f"{spec['root']['path']}/.", str(rootfs)], check=True)
    peer_spec(spec, rootfs)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "3600"]
    spec["linux"].pop("seccomp", None)
    procs, ids = [], []
    try:
        for i in range(count):
            cid = f"kubelab-membench-{os.getpid()}-{i}"
            bundle = Path(work) / f"runc-{i}"
            bundle.mkdir()
            spec["linux"]["cgroupsPath"] = f"kubelab-membench-runc/{cid}"
            (bundle / "config.json").write_text(json.dumps(spec))
            log = open(Path(work) / f"runc-{i}.log", "w")
            procs.append(subprocess.Popen(["runc", "run", "--bundle", str(bundle), cid],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            ids.append(cid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [subprocess.run(["runc", "state", c], capture_output=True, text=True)
                      for c in ids]
            if all(s.returncode == 0 and '"running"' in s.stdout for s in states):
                break
            time.sleep(0.2)
        else:
            raise SystemExit("runc containers did not start: "
                             + (Path(work) / "runc-0.log").read_text())
        time.sleep(2)
        return [rollup(p.pid) for p in procs]
    finally:
        for cid in ids:
            subprocess.run(["runc", "kill", cid, "KILL"], capture_output=True)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for cid in ids:
            subprocess.run(["runc", "delete", "-f", cid], capture_output=True)
        remove_runc_cgroups("kubelab-membench-runc")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--runc", type=int, default=10, help="runc peers to measure")
    ap.add_argument("--settle", type=float, default=20, help="seconds to let the agent settle")
    ap.add_argument("--apiserver", type=Path, default=node_api_bench.APISERVER,
                    help="the apiserver binary (only served from, not measured)")
    args = ap.parse_args()
    node_api_bench.APISERVER = args.apiserver
    agent = REPO / "target/release/kubelab-agent"
    if not agent.exists():
        raise SystemExit("build first: cargo build --release --workspace --bins")
    work = tempfile.mkdtemp(prefix="kubelab-memory-bench-")
    cluster = None
    out = {"pods": args.pods, "loadavg_at_start": os.getloadavg()}
    try:
        cluster = Cluster(work)
        time.sleep(5)
        pid = cluster.agent_proc.pid
        out["agent_idle"] = {**rollup(pid), "threads": threads(pid)}
        watcher = Watcher(cluster)
        names = [f"m{i}" for i in range(args.pods)]
        stream = "".join(f"---\n{json.dumps(pod(n, cluster.node))}\n" for n in names)
        cluster.kubectl("create", "-f", "-", stdin=stream)
        watcher.wait(names, 300)
        time.sleep(args.settle)
        out["agent_with_pods"] = {**rollup(pid), "threads": threads(pid)}
        out["agent_rss_by_mapping_kib"] = rss_by_mapping(pid)
        shims = [rollup(p) for p in processes_with("shim", cluster.state)]
        sandboxes = [rollup(p) for p in processes_with("sandbox", cluster.state)]
        out["shims"] = len(shims)
        out["shim_private_kib"] = summary(shims, "Private")
        out["shim_rss_kib"] = summary(shims, "Rss")
        out["sandbox_private_kib"] = summary(sandboxes, "Private")
        out["apiserver_rss_kib"] = rss_kib(cluster.api_proc.pid)
        runc = runc_peers(cluster, args.runc, work)
        out["runc_private_kib"] = summary(runc, "Private")
        out["runc_rss_kib"] = summary(runc, "Rss")
        out["loadavg_at_end"] = os.getloadavg()
        delete_all(cluster)
    except BaseException:
        node_api_bench.print_log_tails(work)
        raise
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    mib = lambda kib: f"{kib / 1024:.1f} MiB"  # noqa: E731
    a, i = out["agent_with_pods"], out["agent_idle"]
    print(f"agent: idle RSS {mib(i['Rss'])} ({i['threads']} threads); with {args.pods} API pods "
          f"RSS {mib(a['Rss'])}, PSS {mib(a['Pss'])}, private {mib(a['Private'])}, anonymous {mib(a['Anonymous'])} "
          f"({a['threads']} threads); target < 30 MiB")
    print("  where the agent's RSS is: " + ", ".join(
        f"{k} {mib(v)}" for k, v in list(out["agent_rss_by_mapping_kib"].items())[:6]))
    s, r = out["shim_private_kib"], out["runc_private_kib"]
    print(f"shim private memory, median of {out['shims']}: {mib(s['median'])} "
          f"(RSS {mib(out['shim_rss_kib']['median'])}); target < 0.5 MiB")
    print(f"peer: runc run (foreground supervisor), median of {args.runc}: {mib(r['median'])} "
          f"(RSS {mib(out['runc_rss_kib']['median'])}); shim/runc = {s['median'] / r['median']:.2f}")
    print("conmon (CRI-O's shim, ~0.5-1 MiB published) is not packaged here: not measured")
    print(f"load average at start {out['loadavg_at_start'][0]:.1f}, at end {out['loadavg_at_end'][0]:.1f}")
    (REPO / "bench/memory_results.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
