#!/usr/bin/env bash
# Approve the kubelet-serving certificate requests of the named nodes, as an
# administrator of a kubeadm cluster does with serverTLSBootstrap: the
# csrapproving controller approves node client certificates by itself, but a
# kubelet's serving certificate waits for `kubectl certificate approve`.
# Only a pending request of signer kubernetes.io/kubelet-serving made by the
# node it is for (system:node:<name>) is approved; each approval is printed.
# Until then the apiserver cannot reach the node's port 10250 (logs, exec).
#
# usage: approve-kubelet-serving.sh KUBECONFIG NODE... (waits up to
#        KUBELAB_CSR_TIMEOUT seconds, default 300, for each node's request)
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
KUBECONFIG_IN=$1
shift
TIMEOUT=${KUBELAB_CSR_TIMEOUT:-300}

k() { kubectl --kubeconfig "$KUBECONFIG_IN" --request-timeout=60s "$@"; }

# serving_csrs: `name requestor condition` of every kubelet-serving request
serving_csrs() {
	k get csr -o jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.metadata.name} {.spec.username} {.status.conditions[0].type}{"\n"}{end}'
}

# pending NODE: the names of the node's requests nobody approved or denied
# yet (an agent restarted meanwhile asks again)
pending() { serving_csrs | awk -v user="system:node:$1" '$2 == user && $3 == "" { print $1 }'; }

# approved NODE: the name of the node's approved request, if one is
approved() { serving_csrs | awk -v user="system:node:$1" '$2 == user && $3 == "Approved" { print $1; exit }'; }

for node in "$@"; do
	deadline=$((SECONDS + TIMEOUT))
	until names=$(pending "$node" 2>/dev/null) && [ -n "$names" ]; do
		# Provisioned again: the node serves with the certificate it has.
		if name=$(approved "$node" 2>/dev/null) && [ -n "$name" ]; then
			echo "$node: $name was approved before"
			continue 2
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "approve-kubelet-serving: $node asked for no kubelet-serving certificate within ${TIMEOUT}s" >&2
			exit 1
		fi
		sleep 2
	done
	# Again when a loaded host timed kubectl out; approving twice is harmless.
	for try in 1 2 3; do
		# shellcheck disable=SC2086 # one name a word
		out=$(k certificate approve $names 2>&1) && break
		[ "$try" != 3 ] || { echo "approve-kubelet-serving: kubectl certificate approve $names: $out" >&2; exit 1; }
		sleep 2
	done
	while read -r line; do echo "$node: $line"; done <<<"$out"
done
