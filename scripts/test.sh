#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it. Needs root: the tests run real
# containers (namespaces, mounts, cgroups nested under the test's own cgroup).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "the tests run real containers: run as root (sudo scripts/test.sh)" >&2
  exit 1
fi

echo "== build"
cargo build --workspace --all-targets

echo "== static checks of the lab, units and Vagrantfile"
vm-tests/lab-test.sh --static

echo "== test image"
scripts/build-test-image.sh target/test-images/busybox.tar

echo "== unit and integration tests"
# One test at a time: the CPU-limit tests measure 0.2 cores on a 2-core
# machine and must not compete with other tests' busy loops.
cargo test --workspace -- --test-threads=1

echo "== the apiserver's API tests again, on a real etcd"
# The same suite judges both storage backends: the fixture starts an etcd
# (Debian's etcd-server) per apiserver on loopback.
# The targets are named with --workspace (not -p kubelab-apiserver): the same
# package selection as above keeps cargo's feature set, so nothing rebuilds.
apiserver_tests=()
for t in apiserver/tests/*.rs; do apiserver_tests+=(--test "$(basename "$t" .rs)"); done
KUBELAB_TEST_STORE=etcd cargo test --workspace "${apiserver_tests[@]}" -- --test-threads=1

if [ "${KUBELAB_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz targets, a short run each on the corpus kept in fuzz/"
  # Unoptimised build (a third of the build time); a crash fails the suite
  # and leaves its input in fuzz/artifacts/<target>/.
  FUZZ_PROFILE=dev scripts/fuzz.sh 120
fi

if [ -x vm-tests/run.sh ] && [ "${KUBELAB_SKIP_VM_TESTS:-0}" != 1 ]; then
  echo "== VM tests (cgroup v2 guest under QEMU)"
  start=$(date +%s)
  vm-tests/run.sh
  vm-tests/lab-test.sh --smoke
  echo "VM tests took $(( $(date +%s) - start )) s"
fi
