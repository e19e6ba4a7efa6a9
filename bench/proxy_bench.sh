#!/usr/bin/env bash
# Service proxy benchmarks, each against the plain tool in the same run, in
# throwaway network namespaces (never the host's tables).
#
#   1. iptables mode, N services x E endpoints, per backend (nf_tables and
#      legacy): the proxy's first full sync (iptables-save + one
#      iptables-restore --noflush + jump rules) and a one-service change
#      (partial sync), against a plain `iptables-restore --noflush` of the
#      same full kube-proxy-style ruleset (what kube-proxy writes every sync
#      before KEP-3453).
#   2. nftables mode, N and 10 x N services: full sync and a one-service
#      change, against a plain `nft -f` of the same full table.
#
# Run as root from the repo root after `cargo build --release`:
#     sudo bench/proxy_bench.sh [--services 1000] [--endpoints 5] [--nft-services 10000]
# Prints a table; nothing is asserted (the figures go into notes as ratios).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=1000
ENDPOINTS=5
NFT_SERVICES=10000
while [ $# -gt 0 ]; do
	case $1 in
	--services) SERVICES=$2; shift ;;
	--endpoints) ENDPOINTS=$2; shift ;;
	--nft-services) NFT_SERVICES=$2; shift ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

AGENT=target/release/kubelab-agent
[ -x "$AGENT" ] || { echo "$AGENT missing: cargo build --release" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

TMP=$(mktemp -d)
NAMESPACES=()
cleanup() {
	for n in "${NAMESPACES[@]}"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT

# Sets NS to a new namespace (not in a subshell: the list must see it).
fresh_ns() {
	NS="kl-pxbench-$$-${#NAMESPACES[@]}"
	ip netns add "$NS"
	NAMESPACES+=("$NS")
}

now() { date +%s.%N; }

# Sets PEER to the seconds a command takes in a fresh namespace, input from a file.
time_in_fresh_ns() {
	local input=$1 start end
	shift
	fresh_ns
	start=$(now)
	ip netns exec "$NS" "$@" <"$input"
	end=$(now)
	PEER=$(python3 -c "print(round($end - $start, 4))")
}

# Sets OURS to the proxy's own timings (JSON), measured in a fresh namespace.
proxy_bench() {
	fresh_ns
	OURS=$(ip netns exec "$NS" "$AGENT" proxy-bench "$@")
}

ROWS=$TMP/rows.jsonl
for backend in nft legacy; do
	"$AGENT" proxy-bench --mode iptables --backend "$backend" --services "$SERVICES" \
		--endpoints "$ENDPOINTS" --print-ruleset >"$TMP/rules-$backend.txt"
	time_in_fresh_ns "$TMP/rules-$backend.txt" "iptables-$backend-restore" --noflush -w
	proxy_bench --mode iptables --backend "$backend" --services "$SERVICES" --endpoints "$ENDPOINTS"
	echo "{\"peer\": \"iptables-$backend-restore\", \"peer_full_s\": $PEER, \"ours\": $OURS}" >>"$ROWS"
done
for n in "$SERVICES" "$NFT_SERVICES"; do
	"$AGENT" proxy-bench --mode nftables --services "$n" --endpoints "$ENDPOINTS" \
		--print-ruleset >"$TMP/table-$n.nft"
	time_in_fresh_ns "$TMP/table-$n.nft" nft -f -
	proxy_bench --mode nftables --services "$n" --endpoints "$ENDPOINTS" --changes 3
	echo "{\"peer\": \"nft -f\", \"peer_full_s\": $PEER, \"ours\": $OURS}" >>"$ROWS"
done

python3 - "$ROWS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'mode':9} {'backend':7} {'services':>8} {'peer':24} {'peer full':>10} "
      f"{'our full':>9} {'ratio':>6} {'our resync':>10} {'1-svc change':>12} {'(in tool)':>9} {'ratio':>8}")
for r in rows:
    o = r["ours"]; p = r["peer_full_s"]
    print(f"{o['mode']:9} {o['backend']:7} {o['services']:>8} {r['peer']:24} {p:>9.3f}s "
          f"{o['full_sync_s']:>8.3f}s {o['full_sync_s']/p:>6.2f} {o['full_resync_s']:>9.3f}s "
          f"{o['one_service_change_s']*1000:>10.1f}ms {o['one_service_change_tool_s']*1000:>7.1f}ms "
          f"{o['one_service_change_s']/p:>8.4f}")
print("ratio = ours / the plain tool's full restore of the same ruleset in a fresh namespace;"
      f" {rows[0]['ours']['endpoints_per_service']} endpoints per service.")
EOF
