#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a share of a time budget:
#   scripts/fuzz.sh [SECONDS_IN_ALL] [TARGET...]
# Seeds come from fuzz/corpus/<target> and fuzz/regressions/<target> (kept in
# the repo, never written to); what the fuzzer finds goes to
# target/fuzz-corpus/<target>, and a crashing input to fuzz/artifacts/<target>/
# (the run then fails, naming it). Fix the bug and copy the input into
# fuzz/regressions/<target>/: `cargo test` replays it from then on, with the
# same check (fuzz/checks/<target>.rs) over the corpus and its mutations
# (agent/tests/fuzz_corpus.rs, apiserver/tests/fuzz_corpus.rs).
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain builds
# the targets with RUSTC_BOOTSTRAP=1 (libFuzzer's coverage flags are -Z
# flags); fuzz/ has its own target dir, so the workspace build is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-120}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(manifest quantity selector layer cni api_body)
fi
per=$(( budget / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1

export RUSTC_BOOTSTRAP=1
# No sanitizer: the targets are safe Rust, where the finds are panics and
# broken properties; without ASan each target runs about twice the inputs.
# FUZZ_PROFILE=dev builds unoptimised (CI: a third of the build time, fewer
# inputs per second), without debuginfo (the build is 16 GB with it).
flags=(-s none --debug-assertions)
if [ "${FUZZ_PROFILE:-release}" = dev ]; then
  flags+=(--dev)
  export CARGO_PROFILE_DEV_DEBUG=0
fi
cargo fuzz build "${flags[@]}"
mkdir -p target/fuzz-logs
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz-corpus/$t" "fuzz/regressions/$t"
  log="target/fuzz-logs/$t.log"
  echo "== fuzz $t for ${per}s"
  rc=0
  cargo fuzz run "${flags[@]}" "$t" "target/fuzz-corpus/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
    -max_total_time="$per" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz target $t failed (exit $rc): the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
