#!/usr/bin/env bash
# Tests of the user-facing lab: scripts/lab (QEMU), scripts/provision.sh, the
# Vagrantfile and deploy/systemd/.
#
#   vm-tests/lab-test.sh --static   shellcheck, systemd-analyze verify, vagrant
#                                   validate (seconds; no root needed)
#   sudo vm-tests/lab-test.sh --smoke
#                                   scripts/lab up (one node under QEMU), then
#                                   kubectl, the agent's API (the examples: CPU
#                                   limit, OOM kill, liveness probe) and the
#                                   units from the outside, then scripts/lab
#                                   down (≈ 2 min warm under TCG)
#   sudo vm-tests/lab-test.sh       both
#   sudo vm-tests/lab-test.sh --cluster
#                                   scripts/lab up --nodes 3 (its default pod
#                                   network, vxlan): a pod on node2 reaches a
#                                   pod on node3 by IP, a ClusterIP Service with
#                                   endpoints on two nodes answers from both, a
#                                   NodePort answers on every node; then down
#                                   (slow under TCG: three guests on one host)
#
# Each check prints `PASS name`, `FAIL name: why` or `SKIP name: why`; the exit
# status is 1 when a check failed. The smoke run uses its own state dir and
# ports (KUBELAB_LAB_PORT_BASE=27400), so a user's lab can stay up meanwhile;
# it shares target/ binaries as they are (build first: cargo build --workspace).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATIC=0
SMOKE=0
CLUSTER=0
case "${1:-}" in
--static) STATIC=1 ;;
--smoke) SMOKE=1 ;;
--cluster) CLUSTER=1 ;;
"") STATIC=1 SMOKE=1 ;;
*) echo "usage: vm-tests/lab-test.sh [--static|--smoke|--cluster]" >&2; exit 2 ;;
esac

PASSED=0 FAILED=0 SKIPPED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "SKIP $1: $2"; }
TMP=$(mktemp -d)
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

# ---------------------------------------------------------------- static
SHELL_SCRIPTS=(scripts/lab scripts/provision.sh scripts/lab-guest-init.sh vm-tests/lab-test.sh)

check_shellcheck() {
	if ! command -v shellcheck >/dev/null; then
		skip shellcheck "shellcheck is not installed (apt install shellcheck)"
		return
	fi
	local out
	if out=$(cd "$REPO" && shellcheck "${SHELL_SCRIPTS[@]}" 2>&1); then
		pass shellcheck
	else
		fail shellcheck "$(echo "$out" | head -20)"
	fi
}

# systemd-analyze verify wants the ExecStart binaries to exist: check copies
# of the units whose /usr/local/bin points at a stand-in directory.
check_units() {
	if ! command -v systemd-analyze >/dev/null; then
		skip systemd-units "systemd-analyze is not installed"
		return
	fi
	local d="$TMP/units" u out rc=0
	mkdir -p "$d/bin"
	ln -s /bin/true "$d/bin/kubelab-agent"
	ln -s /bin/true "$d/bin/kubelab-apiserver"
	for u in "$REPO"/deploy/systemd/*.service; do
		sed "s#/usr/local/bin/#$d/bin/#g" "$u" >"$d/$(basename "$u")"
	done
	out=$(systemd-analyze verify "$d"/*.service 2>&1) || rc=$?
	if [ "$rc" != 0 ] || [ -n "$out" ]; then
		fail systemd-units "systemd-analyze verify: $out"
		return
	fi
	# The settings that make the agent a node service (see the unit's comments).
	local want
	for want in Restart=always Delegate=yes KillMode=process; do
		grep -qx "$want" "$REPO/deploy/systemd/kubelab-agent.service" ||
			{ fail systemd-units "kubelab-agent.service lacks $want"; return; }
	done
	grep -qx Restart=always "$REPO/deploy/systemd/kubelab-apiserver.service" ||
		{ fail systemd-units "kubelab-apiserver.service lacks Restart=always"; return; }
	pass systemd-units
}

# vagrant validate, in a scratch copy (it writes .vagrant/ next to the
# Vagrantfile), with 1 and 3 nodes, with and without built binaries. Provider
# settings are checked for libvirt when the vagrant-libvirt plugin is there,
# and for VirtualBox through a stand-in VBoxManage (VirtualBox is not in
# Debian; Vagrant only asks it for its version before validating).
check_vagrant() {
	if ! command -v vagrant >/dev/null; then
		skip vagrant-validate "vagrant is not installed (apt install vagrant vagrant-libvirt)"
		return
	fi
	local d="$TMP/vagrant" nodes bins provider out checked=""
	mkdir -p "$d/stub"
	cp "$REPO/Vagrantfile" "$d/"
	cat >"$d/stub/VBoxManage" <<'EOF'
#!/bin/sh
[ "$1" != --version ] || echo 7.0.14r161095
EOF
	chmod +x "$d/stub/VBoxManage"
	export VAGRANT_HOME="$TMP/vagrant-home" VAGRANT_CHECKPOINT_DISABLE=1
	for bins in with without; do
		rm -f "$d/target"
		[ "$bins" = without ] || [ ! -d "$REPO/target" ] || ln -s "$REPO/target" "$d/target"
		for nodes in 1 3; do
			for provider in libvirt virtualbox; do
				if [ "$provider" = libvirt ] && ! vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt; then
					out=$(cd "$d" && KUBELAB_NODES=$nodes vagrant validate --ignore-provider 2>&1) ||
						{ fail vagrant-validate "$nodes node(s), $bins binaries: $out"; return; }
					continue
				fi
				out=$(cd "$d" && PATH="$d/stub:$PATH" VAGRANT_DEFAULT_PROVIDER=$provider \
					KUBELAB_NODES=$nodes vagrant validate 2>&1) ||
					{ fail vagrant-validate "$provider, $nodes node(s), $bins binaries: $out"; return; }
				case " $checked " in *" $provider "*) ;; *) checked+=" $provider" ;; esac
			done
		done
	done
	out=$(cd "$d" && KUBELAB_NODES=2 vagrant validate --ignore-provider 2>&1) &&
		{ fail vagrant-validate "KUBELAB_NODES=2 was accepted"; return; }
	pass vagrant-validate
	echo "  .. providers checked:${checked:- none (vagrant-libvirt missing)}"
}

# ---------------------------------------------------------------- smoke
LAB_DIR=$REPO/target/lab-test
PORT_BASE=27400
lab() {
	KUBELAB_LAB_DIR=$LAB_DIR KUBELAB_LAB_PORT_BASE=$PORT_BASE \
		KUBELAB_LAB_KUBECONFIG=$LAB_DIR/kubeconfig KUBELAB_LAB_MCAST=239.255.77.1:27490 \
		"$REPO/scripts/lab" "$@"
}
AGENT=http://127.0.0.1:$((PORT_BASE + 15))
pods() { curl -fsS --max-time 10 "$AGENT/pods"; }
# pod NAME JQ: a field of the pod whose name starts with NAME
pod() { pods | jq -r --arg n "$1" ".items[] | select(.metadata.name | startswith(\$n)) | $2"; }

# pod_is NAME JQ VALUE: that field of that pod has that value now
pod_is() { [ "$(pod "$1" "$2")" = "$3" ]; }

# until_ok SECONDS COMMAND...: retry COMMAND each 2 s until it succeeds
until_ok() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 2
	done
}

# kubectl against the lab's apiserver (the kubeconfig scripts/lab wrote)
lkubectl() { kubectl --kubeconfig "$LAB_DIR/kubeconfig" --request-timeout=30s "$@"; }
node_ready() {
	[ "$(lkubectl get node node1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
		[ -n "$(lkubectl get node node1 -o jsonpath='{.spec.podCIDR}')" ]
}
two_ready_endpoints() {
	[ "$(lkubectl get endpointslices -l kubernetes.io/service-name=smoke-web \
		-o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}')" = xx ]
}

# Two httpd pods behind a ClusterIP Service, created with kubectl; from node1,
# the ClusterIP answers from both (the agent's kube-proxy-style rules).
lab_service() {
	local out cip
	if until_ok 120 node_ready; then
		pass lab-node-joined
		echo "  .. $(lkubectl get nodes -o wide --no-headers 2>&1 | head -1)"
	else
		fail lab-node-joined "$(lkubectl get nodes -o wide 2>&1 | tr '\n' ' ')"
		return
	fi
	if ! out=$(lkubectl apply -f - 2>&1 <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: smoke-web}
spec:
  selector: {app: smoke-web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: smoke-web}}
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, labels: {app: smoke-web}}
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www"]
EOF
	); then
		fail lab-clusterip-service "kubectl apply: $out"
		return
	fi
	cip=$(lkubectl get service smoke-web -o jsonpath='{.spec.clusterIP}')
	if ! until_ok 180 two_ready_endpoints; then
		fail lab-clusterip-service "smoke-web has not 2 ready endpoints: $(lkubectl get pods,endpointslices -o wide 2>&1 | tr '\n' ' ')"
		return
	fi
	# One ssh session asks up to 40 times (random balancing) and prints what answered.
	out=$(lab ssh 1 "for i in \$(seq 40); do curl -s --max-time 3 http://$cip/; done | sort | uniq -c" 2>&1)
	if grep -q web-1 <<<"$out" && grep -q web-2 <<<"$out"; then
		pass lab-clusterip-service
		echo "  .. http://$cip/ from node1: $(echo "$out" | tr -s ' \n' ' ')"
	else
		fail lab-clusterip-service "40 requests to http://$cip/ from node1 got: $out"
	fi
	lkubectl delete pod,service -l app=smoke-web --grace-period=1 --wait=false >/dev/null 2>&1
}

smoke() {
	if [ "$(id -u)" != 0 ]; then
		skip lab-smoke "needs root (sudo vm-tests/lab-test.sh --smoke)"
		return
	fi
	local t0=$SECONDS out
	trap 'lab down >/dev/null 2>&1; cleanup' EXIT
	if ! lab up --no-build --nodes 1; then
		fail lab-up "scripts/lab up failed (console: $LAB_DIR/node1.console.log)"
		lab down >/dev/null 2>&1
		return
	fi
	pass lab-up
	echo "  .. scripts/lab up took $((SECONDS - t0)) s"

	# kubectl from the host through the forwarded port and the written kubeconfig.
	if [ ! -x "$REPO/target/debug/kubelab-apiserver" ]; then
		skip lab-kubectl "no kubelab-apiserver binary"
	elif ! command -v kubectl >/dev/null; then
		skip lab-kubectl "kubectl is not installed"
	else
		local kc=(kubectl --kubeconfig "$LAB_DIR/kubeconfig" --request-timeout=30s)
		if out=$("${kc[@]}" get namespace default -o name 2>&1) && [ "$out" = namespace/default ] &&
			"${kc[@]}" create configmap lab-smoke --from-literal=hello=world >/dev/null 2>&1 &&
			[ "$("${kc[@]}" get configmap lab-smoke -o jsonpath='{.data.hello}' 2>&1)" = world ]; then
			pass lab-kubectl
		else
			fail lab-kubectl "kubectl through 127.0.0.1:$((PORT_BASE + 43)): $out"
		fi
	fi

	# The agent joined the apiserver: node1 is a Ready node with a podCIDR, and a
	# Service made with kubectl reaches its pods through the node's iptables.
	if [ -x "$REPO/target/debug/kubelab-apiserver" ] && command -v kubectl >/dev/null; then
		lab_service
	fi

	# The agent's API through its forwarded port: the examples run and bite.
	if until_ok 120 pod_is cpu-spin .status.phase Running &&
		until_ok 120 pod_is memory-hog '.status.containerStatuses[0].lastState.terminated.reason' OOMKilled; then
		pass lab-pods
		echo "  .. cpu-spin Running, memory-hog OOMKilled (exit $(pod memory-hog '.status.containerStatuses[0].lastState.terminated.exitCode'))"
	else
		fail lab-pods "$(pods | jq -c '[.items[] | {name: .metadata.name, phase: .status.phase, last: .status.containerStatuses[0].lastState}]' 2>&1)"
	fi

	# The units as systemd runs them, on cgroup v2.
	if out=$(lab ssh 1 'systemctl is-active kubelab-agent kubelab-apiserver &&
		systemctl show -p Delegate -p KillMode -p Restart kubelab-agent &&
		stat -f -c %T /sys/fs/cgroup && test -d /sys/fs/cgroup/kubelab/kubepods' 2>&1) &&
		grep -q '^Delegate=yes' <<<"$out" && grep -q '^KillMode=process' <<<"$out" &&
		grep -q '^Restart=always' <<<"$out" && grep -q '^cgroup2fs' <<<"$out"; then
		pass lab-units
	else
		fail lab-units "$out"
	fi

	# A restarted agent adopts its running containers: same start time, no restart.
	local started restarts
	started=$(pod cpu-spin '.status.containerStatuses[0].state.running.startedAt')
	restarts=$(pod cpu-spin '.status.containerStatuses[0].restartCount')
	if out=$(lab ssh 1 'systemctl restart kubelab-agent' 2>&1) &&
		until_ok 90 curl -fsS --max-time 5 "$AGENT/healthz" &&
		until_ok 60 pod_is cpu-spin '.status.containerStatuses[0].state.running.startedAt' "$started" &&
		[ "$(pod cpu-spin '.status.containerStatuses[0].restartCount')" = "$restarts" ] &&
		[ "$started" != null ] && [ -n "$started" ]; then
		pass lab-agent-restart-adopts
	else
		fail lab-agent-restart-adopts "cpu-spin before: started $started, restarts $restarts; after: $(pod cpu-spin '.status.containerStatuses[0] | {state, restartCount}' 2>&1 | tr -d '\n') $out"
	fi

	# The liveness-probe example: probes run in the pod's network namespace
	# and a failing one restarts the container.
	if until_ok 150 pod_is kubia-liveness '.status.containerStatuses[0].restartCount > 0' true; then
		pass lab-liveness-probe
	else
		fail lab-liveness-probe "$(pod kubia-liveness '.status.containerStatuses[0] | {state, lastState, restartCount}' 2>&1 | tr -d '\n')"
	fi

	lab down
	if lab status | grep -q '^node'; then
		fail lab-down "a node's QEMU is still running"
	else
		pass lab-down
	fi
	echo "  .. smoke run took $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- cluster
# node_has_cidr N: node N is Ready with a pod CIDR
node_has_cidr() {
	[ "$(lkubectl get node "node$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
		[ -n "$(lkubectl get node "node$1" -o jsonpath='{.spec.podCIDR}')" ]
}
# pods_running NAME...: each pod is Running with an IP
pods_running() {
	local p
	for p in "$@"; do
		[ "$(lkubectl get pod "$p" -o jsonpath='{.status.phase}')" = Running ] || return 1
		[ -n "$(lkubectl get pod "$p" -o jsonpath='{.status.podIP}')" ] || return 1
	done
}
# who_answers FROM_POD IP:PORT: `<pod> <client address>` of /cgi-bin/who there
who_answers() {
	lkubectl exec "$1" -- sh -c "printf 'GET /cgi-bin/who HTTP/1.0\r\n\r\n' | nc -w 3 ${2%:*} ${2#*:}" 2>/dev/null |
		tr -d '\r' | sed '1,/^$/d' | head -1 | sed 's/\[::ffff:\(.*\)\]/\1/'
}
# pod_reaches FROM_POD IP:PORT POD: the answer comes from POD
pod_reaches() { [ "$(who_answers "$1" "$2" | cut -d' ' -f1)" = "$3" ]; }

# An httpd pod on node N whose /cgi-bin/who answers `<pod> <client address>`.
who_pod() {
	cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: who-$1, labels: {app: who}}
spec:
  nodeName: node$1
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\\\necho Content-Type: text/plain\\\\necho\\\\necho \$(hostname) \$REMOTE_ADDR\\\\n' >/www/cgi-bin/who && chmod +x /www/cgi-bin/who && exec httpd -f -p 8080 -h /www"]
---
EOF
}

# Three nodes on the lab's LAN and the pod network across them (the lab's
# default, vxlan): pod to pod between nodes with the source address kept, a
# ClusterIP Service with endpoints on two nodes answering from both, a
# NodePort answering on every node.
cluster() {
	if [ "$(id -u)" != 0 ]; then
		skip lab-cluster "needs root (sudo vm-tests/lab-test.sh --cluster)"
		return
	fi
	local t0=$SECONDS out i ip2 ip3 cip seen node_ip
	trap 'lab down >/dev/null 2>&1; cleanup' EXIT
	if ! lab up --no-build --nodes 3; then
		fail lab-cluster-up "scripts/lab up --nodes 3 failed (consoles: $LAB_DIR/node*.console.log)"
		lab down >/dev/null 2>&1
		return
	fi
	pass lab-cluster-up
	echo "  .. scripts/lab up --nodes 3 took $((SECONDS - t0)) s"
	for i in 1 2 3; do
		if ! until_ok 300 node_has_cidr "$i"; then
			fail lab-cluster-nodes "node$i is not Ready with a pod CIDR: $(lkubectl get nodes -o wide 2>&1 | tr '\n' ' ')"
			lab down >/dev/null 2>&1
			return
		fi
	done
	pass lab-cluster-nodes
	if ! out=$({ who_pod 2; who_pod 3; cat <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: who, labels: {app: who}}
spec:
  type: NodePort
  selector: {app: who}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
EOF
	} | lkubectl apply -f - 2>&1); then
		fail lab-cluster-pods "kubectl apply: $out"
		lab down >/dev/null 2>&1
		return
	fi
	if ! until_ok 300 pods_running who-2 who-3; then
		fail lab-cluster-pods "$(lkubectl get pods -o wide 2>&1 | tr '\n' ' ')"
		lab down >/dev/null 2>&1
		return
	fi
	ip2=$(lkubectl get pod who-2 -o jsonpath='{.status.podIP}')
	ip3=$(lkubectl get pod who-3 -o jsonpath='{.status.podIP}')

	# A pod on node2 reaches a pod on node3 by IP, and is seen with its own address.
	if until_ok 120 pod_reaches who-2 "$ip3:8080" who-3 &&
		[ "$(who_answers who-2 "$ip3:8080")" = "who-3 $ip2" ]; then
		pass lab-pod-to-pod
		echo "  .. who-2 ($ip2, node2) -> who-3 ($ip3, node3): $(who_answers who-2 "$ip3:8080")"
	else
		fail lab-pod-to-pod "who-2 -> $ip3:8080 answered: $(who_answers who-2 "$ip3:8080")"
	fi

	# The ClusterIP, endpoints on node2 and node3, answers from both (asked
	# from node1, which has neither).
	cip=$(lkubectl get service who -o jsonpath='{.spec.clusterIP}')
	out=$(lab ssh 1 "for i in \$(seq 40); do curl -s --max-time 3 http://$cip/cgi-bin/who; echo; done | cut -d' ' -f1 | sort | uniq -c" 2>&1)
	if grep -q who-2 <<<"$out" && grep -q who-3 <<<"$out"; then
		pass lab-cluster-clusterip
		echo "  .. http://$cip/ from node1: $(echo "$out" | tr -s ' \n' ' ')"
	else
		fail lab-cluster-clusterip "40 requests to http://$cip/ from node1 got: $out"
	fi

	# The NodePort answers on every node's address (asked from node1).
	seen=""
	for i in 1 2 3; do
		node_ip=$(lkubectl get node "node$i" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
		out=$(lab ssh 1 "for i in \$(seq 10); do curl -s --max-time 3 http://$node_ip:30080/cgi-bin/who; echo; done | cut -d' ' -f1 | sort -u" 2>&1)
		if grep -q who- <<<"$out"; then
			seen+=" node$i($node_ip):$(echo "$out" | tr '\n' ' ')"
		else
			fail lab-cluster-nodeport "http://$node_ip:30080/ (node$i) got: $out"
			seen=""
			break
		fi
	done
	[ -z "$seen" ] || { pass lab-cluster-nodeport; echo "  .. NodePort 30080:$seen"; }

	lkubectl delete pod,service -l app=who --grace-period=1 --wait=false >/dev/null 2>&1
	lab down
	echo "  .. cluster run took $((SECONDS - t0)) s"
}

if [ "$STATIC" = 1 ]; then
	check_shellcheck
	check_units
	check_vagrant
fi
[ "$SMOKE" = 0 ] || smoke
[ "$CLUSTER" = 0 ] || cluster
echo "lab-test: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" = 0 ]
