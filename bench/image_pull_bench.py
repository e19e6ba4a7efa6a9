#!/usr/bin/env python3
"""Image pull time against skopeo, from the same registry in the same run.

Debian's `docker-registry` serves the test image on a free loopback port
(pushed there with `skopeo copy`). Then, alternating, each run:

- peer: `skopeo copy docker://127.0.0.1:PORT/busybox:1 dir:FRESH` (manifest,
  config and layer blobs fetched and verified into a directory);
- agent, cold: `kubelab-agent --root-dir FRESH image pull ...` (the same
  fetches and checks, plus unpacking the layer and the store's index);
- agent, warm: the same pull again into the now filled store (the manifest
  is asked for, no blob is fetched again).

Run as root from the repo root after `cargo build --release -p kubelab-agent`
(or point KUBELAB_AGENT at a binary):
    python3 bench/image_pull_bench.py [--runs 20]
Prints medians and the ratio agent/skopeo, and writes
bench/image_pull_results.json. Nothing is asserted.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGENT = Path(os.environ.get("KUBELAB_AGENT", REPO / "target/release/kubelab-agent")).resolve()
IMAGE = REPO / "target/test-images/busybox.tar"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not IMAGE.exists():
        subprocess.run(["bash", "scripts/build-test-image.sh", str(IMAGE)], check=True, cwd=REPO)
    work = Path(tempfile.mkdtemp(prefix="kubelab-pull-bench-"))
    port = free_port()
    (work / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(work / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("docker-registry did not start")
                time.sleep(0.05)
        ref = f"127.0.0.1:{port}/busybox:1"
        subprocess.run(
            ["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{IMAGE}", f"docker://{ref}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        skopeo, cold, warm = [], [], []
        for i in range(args.runs):
            out = work / f"skopeo-{i}"
            skopeo.append(
                timed(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}"])
            )
            shutil.rmtree(out)
            root = work / f"agent-{i}"
            pull = [str(AGENT), "--root-dir", str(root), "image", "pull", ref]
            cold.append(timed(pull))
            warm.append(timed(pull))
            shutil.rmtree(root)
        size = sum(f.stat().st_size for f in (work / "data").rglob("*") if f.is_file() and "blobs" in f.parts)
    finally:
        registry.terminate()
        registry.wait()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) * 1000 for k, v in [("skopeo", skopeo), ("cold", cold), ("warm", warm)]}
    load = os.getloadavg()[0]
    result = {
        "image": "target/test-images/busybox.tar as 127.0.0.1:PORT/busybox:1",
        "agent": str(AGENT.relative_to(REPO) if AGENT.is_relative_to(REPO) else AGENT),
        "registry_bytes": size,
        "runs": args.runs,
        "skopeo_copy_to_dir_ms": round(med["skopeo"], 1),
        "agent_pull_cold_ms": round(med["cold"], 1),
        "agent_pull_warm_ms": round(med["warm"], 1),
        "ratio_cold_to_skopeo": round(med["cold"] / med["skopeo"], 2),
        "ratio_warm_to_skopeo": round(med["warm"] / med["skopeo"], 2),
        "loadavg_1m": round(load, 2),
    }
    print(f"{'':32}{'median ms':>10}")
    print(f"{'skopeo copy docker:// dir:':32}{med['skopeo']:>10.1f}")
    print(f"{'kubelab-agent image pull (cold)':32}{med['cold']:>10.1f}  x{result['ratio_cold_to_skopeo']}")
    print(f"{'kubelab-agent image pull (warm)':32}{med['warm']:>10.1f}  x{result['ratio_warm_to_skopeo']}")
    print(f"load average (1 min): {load:.2f}")
    (REPO / "bench/image_pull_results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
