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
#                                   network, vxlan): node2 and node3 joined
#                                   with a bootstrap token (their client CSRs
#                                   auto-approved, their kubelet-serving CSRs
#                                   approved, both issued), authenticate as
#                                   system:node:<name>, hold no admin
#                                   kubeconfig or CA key, and serve port 10250
#                                   with certificates the apiserver verifies
#                                   (--kubelet-certificate-authority); a
#                                   pod on node2 reaches a pod on node3 by IP, a ClusterIP Service with
#                                   endpoints on two nodes answers from both, a
#                                   NodePort answers on every node, a pod on
#                                   node3 resolves and reaches a Service and a
#                                   StatefulSet pod on node2 by name, kubectl
#                                   exec, logs and port-forward reach pods on
#                                   node2 and node3; then down (slow under TCG:
#                                   three guests on one host, ≈ 15 min)
#
# Each check prints `PASS name`, `FAIL name: why` or `SKIP name: why`; the exit
# status is 1 when a check failed. The smoke and cluster runs use their own
# state dir, ports and LAN group (KUBELAB_LAB_TEST_DIR, default
# target/lab-test; KUBELAB_LAB_TEST_PORT_BASE, default 27400), so a user's lab
# can stay up meanwhile; they share target/ binaries as they are (build first:
# cargo build --workspace). KUBELAB_LAB_TEST_KEEP=1 leaves the cluster up
# after a failed check, to look at it.
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
SHELL_SCRIPTS=(scripts/lab scripts/provision.sh scripts/lab-guest-init.sh scripts/approve-kubelet-serving.sh vm-tests/lab-test.sh)

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
# Its own state dir, ports and LAN group, so that a user's lab (or a second
# checkout's test run) can stay up meanwhile.
LAB_DIR=${KUBELAB_LAB_TEST_DIR:-$REPO/target/lab-test}
PORT_BASE=${KUBELAB_LAB_TEST_PORT_BASE:-27400}
MCAST=${KUBELAB_LAB_TEST_MCAST:-239.255.77.1:$((PORT_BASE + 90))}
lab() {
	KUBELAB_LAB_DIR=$LAB_DIR KUBELAB_LAB_PORT_BASE=$PORT_BASE \
		KUBELAB_LAB_KUBECONFIG=$LAB_DIR/kubeconfig KUBELAB_LAB_MCAST=$MCAST \
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

# kubectl against the lab's apiserver (the kubeconfig scripts/lab wrote).
# A TCG guest on a loaded host can stall past kubectl's fixed 10 s TLS
# handshake timeout or its HTTP/2 health check (a ping unanswered for 15 s):
# a call that lost the apiserver's connection (and only such a call) is made
# again, up to three times, and says so.
lkubectl() {
	local err in=/dev/stdin rc try
	err=$(mktemp -p "$TMP")
	# A manifest on stdin is kept for the next try.
	case " $* " in *" -f - "*) in=$(mktemp -p "$TMP") && cat >"$in" ;; esac
	for try in 1 2 3; do
		rc=0
		kubectl --kubeconfig "$LAB_DIR/kubeconfig" --request-timeout=60s "$@" <"$in" 2>"$err" || rc=$?
		if [ "$rc" = 0 ] || [ "$try" = 3 ] ||
			! grep -qE 'TLS handshake timeout|connect: connection refused|connection reset by peer|dial tcp .*i/o timeout|http2: client connection lost' "$err"; then
			break
		fi
		echo "  .. kubectl $1 could not reach the apiserver ($(tail -1 "$err" | cut -c1-160)); again" >&2
	done
	cat "$err" >&2
	rm -f "$err"
	[ "$in" = /dev/stdin ] || rm -f "$in"
	return "$rc"
}
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
# who_answers FROM_POD HOST:PORT: `<pod> <client address>` of /cgi-bin/who there
who_answers() {
	lkubectl exec "$1" -- sh -c "printf 'GET /cgi-bin/who HTTP/1.0\r\n\r\n' | nc -w 3 ${2%:*} ${2#*:}" 2>/dev/null |
		tr -d '\r' | sed '1,/^$/d' | head -1 | sed 's/\[::ffff:\(.*\)\]/\1/'
}
# pod_reaches FROM_POD HOST:PORT POD: the answer comes from POD
pod_reaches() { [ "$(who_answers "$1" "$2" | cut -d' ' -f1)" = "$3" ]; }
# resolves FROM_POD NAME IP: busybox's nslookup in the pod answers NAME with IP
resolves() { lkubectl exec "$1" -- nslookup "$2" 2>/dev/null | grep -qx "Address: $3"; }

# The container of the who pods: an httpd whose /cgi-bin/who answers
# `<pod> <client address>`, saying in its log that it serves.
# shellcheck disable=SC2016 # expanded in the container
WHO_COMMAND='["sh", "-c", "echo serving as $(hostname) && mkdir -p /www/cgi-bin && printf '"'"'#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $(hostname) $REMOTE_ADDR\\n'"'"' >/www/cgi-bin/who && chmod +x /www/cgi-bin/who && exec httpd -f -p 8080 -h /www"]'

# A who pod on node N.
who_pod() {
	cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: who-$1, labels: {app: who, who: "$1"}}
spec:
  nodeName: node$1
  terminationGracePeriodSeconds: 1
  containers:
  - {name: httpd, image: busybox, command: $WHO_COMMAND}
---
EOF
}

# The cluster's objects: the who pods on node2 and node3, the Services `who`
# (NodePort, both pods) and `who-node2` (the pod on node2 only), and the
# StatefulSet `web` on node2 behind the headless Service `nginx`
# (web-0.nginx.default.svc.cluster.local).
cluster_objects() {
	who_pod 2
	who_pod 3
	cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: who, labels: {app: who}}
spec:
  type: NodePort
  selector: {app: who}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: who-node2, labels: {app: who}}
spec:
  selector: {app: who, who: "2"}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx, labels: {app: who}}
spec:
  clusterIP: None
  selector: {app: who-web}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, labels: {app: who}}
spec:
  serviceName: nginx
  replicas: 1
  selector: {matchLabels: {app: who-web}}
  template:
    metadata: {labels: {app: who-web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: node2}
      terminationGracePeriodSeconds: 1
      containers:
      - {name: httpd, image: busybox, command: $WHO_COMMAND}
EOF
}

# timed CHECK: runs a check, then says how long it took and the host's load.
timed() {
	local t=$SECONDS
	"$@"
	echo "  .. ($1: $((SECONDS - t)) s, load $(cut -d' ' -f1-3 /proc/loadavg))"
}

# A pod on node2 reaches a pod on node3 by IP, and is seen with its own address.
check_pod_to_pod() {
	if until_ok 120 pod_reaches who-2 "$IP3:8080" who-3 &&
		[ "$(who_answers who-2 "$IP3:8080")" = "who-3 $IP2" ]; then
		pass lab-pod-to-pod
		echo "  .. who-2 ($IP2, node2) -> who-3 ($IP3, node3): $(who_answers who-2 "$IP3:8080")"
	else
		fail lab-pod-to-pod "who-2 -> $IP3:8080 answered: $(who_answers who-2 "$IP3:8080")"
	fi
}

# The ClusterIP, endpoints on node2 and node3, answers from both (asked
# from node1, which has neither).
check_clusterip() {
	local cip out
	cip=$(lkubectl get service who -o jsonpath='{.spec.clusterIP}')
	out=$(lab ssh 1 "for i in \$(seq 40); do curl -s --max-time 3 http://$cip/cgi-bin/who; echo; done | cut -d' ' -f1 | sort | uniq -c" 2>&1)
	if grep -q who-2 <<<"$out" && grep -q who-3 <<<"$out"; then
		pass lab-cluster-clusterip
		echo "  .. http://$cip/ from node1: $(echo "$out" | tr -s ' \n' ' ')"
	else
		fail lab-cluster-clusterip "40 requests to http://$cip/ from node1 got: $out"
	fi
}

# The NodePort answers on every node's address (asked from node1).
check_nodeport() {
	local seen="" i node_ip out
	for i in 1 2 3; do
		node_ip=$(lkubectl get node "node$i" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
		out=$(lab ssh 1 "for i in \$(seq 10); do curl -s --max-time 3 http://$node_ip:30080/cgi-bin/who; echo; done | cut -d' ' -f1 | sort -u" 2>&1)
		if ! grep -q who- <<<"$out"; then
			fail lab-cluster-nodeport "http://$node_ip:30080/ (node$i) got: $out"
			return
		fi
		seen+=" node$i($node_ip):$(echo "$out" | tr '\n' ' ')"
	done
	pass lab-cluster-nodeport
	echo "  .. NodePort 30080:$seen"
}

# The cluster DNS (served on node1) from a pod on node3: a Service whose
# endpoint is on node2, resolved and reached by name; the StatefulSet's pod
# on node2 by its stable name.
check_dns() {
	local cip web0 got
	cip=$(lkubectl get service who-node2 -o jsonpath='{.spec.clusterIP}')
	if until_ok 120 resolves who-3 who-node2.default.svc.cluster.local "$cip" &&
		until_ok 60 pod_reaches who-3 who-node2:80 who-2; then
		got=$(who_answers who-3 who-node2:80)
		pass lab-dns-service
		echo "  .. who-3 (node3): who-node2.default.svc.cluster.local is $cip; who-node2:80 answers \"$got\""
	else
		fail lab-dns-service "who-3: nslookup who-node2.default.svc.cluster.local: $(lkubectl exec who-3 -- nslookup who-node2.default.svc.cluster.local 2>&1 | tr '\n' ' '); who-node2:80 answered: $(who_answers who-3 who-node2:80)"
	fi
	if ! until_ok 300 pods_running web-0; then
		fail lab-dns-statefulset "web-0 is not running: $(lkubectl get pods -o wide 2>&1 | tr '\n' ' ')"
		return
	fi
	web0=$(lkubectl get pod web-0 -o jsonpath='{.status.podIP}')
	if until_ok 120 resolves who-3 web-0.nginx.default.svc.cluster.local "$web0" &&
		until_ok 60 pod_reaches who-3 web-0.nginx.default.svc.cluster.local:8080 web-0; then
		got=$(who_answers who-3 web-0.nginx.default.svc.cluster.local:8080)
		pass lab-dns-statefulset
		echo "  .. who-3 (node3): web-0.nginx.default.svc.cluster.local is $web0 (on $(lkubectl get pod web-0 -o jsonpath='{.spec.nodeName}')); it answers \"$got\""
	else
		fail lab-dns-statefulset "who-3: nslookup web-0.nginx.default.svc.cluster.local: $(lkubectl exec who-3 -- nslookup web-0.nginx.default.svc.cluster.local 2>&1 | tr '\n' ' ') (web-0 is $web0)"
	fi
}

# exec, logs and port-forward to pods on node2 and node3 through the
# apiserver on node1, which reaches their agents on the LAN and verifies
# their serving certificates (lab-kubelet-serving-verified).
check_exec() {
	local out rc i seen=""
	for i in 2 3; do
		rc=0
		out=$(lkubectl exec "who-$i" -- sh -c 'hostname; exit 3' 2>&1) || rc=$?
		if [ "$rc" != 3 ] || [ "$(head -1 <<<"$out")" != "who-$i" ]; then
			fail lab-exec-remote-node "kubectl exec who-$i (node$i): exit $rc: $out"
			return
		fi
		seen+=" who-$i (node$i): \"$(head -1 <<<"$out")\", exit $rc;"
	done
	pass lab-exec-remote-node
	echo "  .. kubectl exec POD -- sh -c 'hostname; exit 3':${seen%;}"
}
check_logs() {
	local out i seen=""
	for i in 2 3; do
		if ! out=$(lkubectl logs "who-$i" 2>&1) || ! grep -qx "serving as who-$i" <<<"$out"; then
			fail lab-logs-remote-node "kubectl logs who-$i (node$i): $out"
			return
		fi
		seen+=" who-$i (node$i): \"$(head -1 <<<"$out")\";"
	done
	pass lab-logs-remote-node
	echo "  .. kubectl logs:${seen%;}"
}
check_port_forward() {
	local port=$((PORT_BASE + 80)) pf_log="$TMP/port-forward.log" pid got=""
	kubectl --kubeconfig "$LAB_DIR/kubeconfig" port-forward pod/who-3 "$port:8080" >"$pf_log" 2>&1 &
	pid=$!
	until_ok 60 grep -q "Forwarding from 127.0.0.1:$port" "$pf_log" &&
		got=$(curl -s --max-time 30 "http://127.0.0.1:$port/cgi-bin/who" | sed 's/\[::ffff:\(.*\)\]/\1/')
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	# In the pod, a forwarded connection comes from its own loopback.
	if [ "$got" = "who-3 127.0.0.1" ]; then
		pass lab-port-forward-remote-node
		echo "  .. kubectl port-forward pod/who-3 $port:8080, then curl: \"$got\""
	else
		fail lab-port-forward-remote-node "curl got \"$got\"; kubectl port-forward said: $(tr '\n' ' ' <"$pf_log")"
	fi
}

# ---------------------------------------------------------------- node credentials
# The bootstrap token node1's provisioning made (kube-system/bootstrap-token-<id>).
bootstrap_token_id() {
	lkubectl -n kube-system get secrets --field-selector type=bootstrap.kubernetes.io/token \
		-o jsonpath='{.items[0].data.token-id}' | base64 -d
}

# csr_of SIGNER CN: `name requestor conditions issued` of the request for CN
# (its PEM request's subject) to SIGNER
csr_of() {
	local name user cond cert
	while read -r name user cond cert; do
		[ -n "$name" ] || continue
		if lkubectl get csr "$name" -o jsonpath='{.spec.request}' | base64 -d |
			openssl req -noout -subject -nameopt RFC2253 2>/dev/null | grep -q "CN=$2\(,\|$\)"; then
			echo "$name $user $cond $cert"
			return
		fi
	done < <(lkubectl get csr -o jsonpath="{range .items[?(@.spec.signerName==\"$1\")]}{.metadata.name} {.spec.username} [{range .status.conditions[*]}{.type},{end}] {.status.certificate}{\"\\n\"}{end}" |
		awk '{ print $1, $2, $3, ($4 == "" ? "none" : "issued") }')
}

# Nodes 2 and 3 joined with the bootstrap token only: each one's client
# certificate request was made by system:bootstrap:<id> and auto-approved,
# its kubelet-serving request (made as the node) approved by the lab, both
# issued; on the node, its own kubeconfig authenticates as
# system:node:<name> (a SelfSubjectReview, what `kubectl auth whoami` asks).
check_node_credentials() {
	local id i got whoami ok=1 seen=""
	id=$(bootstrap_token_id)
	if [ -z "$id" ]; then
		fail lab-node-credentials "no bootstrap token in kube-system: $(lkubectl -n kube-system get secrets 2>&1 | tr '\n' ' ')"
		return
	fi
	for i in 2 3; do
		got=$(csr_of kubernetes.io/kube-apiserver-client-kubelet "system:node:node$i")
		if ! [[ "$got" =~ ^[^\ ]+\ system:bootstrap:$id\ \[Approved,\]\ issued$ ]]; then
			fail lab-node-credentials "node$i's client certificate request (name requestor conditions certificate): \"$got\"; want requestor system:bootstrap:$id, Approved, issued"
			ok=0
			continue
		fi
		seen+=" node$i client: ${got// / }"
		got=$(csr_of kubernetes.io/kubelet-serving "system:node:node$i")
		if ! [[ "$got" =~ ^[^\ ]+\ system:node:node$i\ \[Approved,\]\ issued$ ]]; then
			fail lab-node-credentials "node$i's kubelet-serving request (name requestor conditions certificate): \"$got\"; want requestor system:node:node$i, Approved, issued"
			ok=0
			continue
		fi
		seen+="; serving: ${got// / }"
		# As the agent: its kubeconfig's server, the cluster CA, its certificate.
		# shellcheck disable=SC2016 # expanded on the node
		whoami=$(lab ssh "$i" 'server=$(sed -n "s/^ *server: *//p" /etc/kubelab/kubelet.conf | head -1)
			cert=$(sed -n "s/^ *client-certificate: *//p" /etc/kubelab/kubelet.conf | head -1)
			key=$(sed -n "s/^ *client-key: *//p" /etc/kubelab/kubelet.conf | head -1)
			curl -sS --max-time 30 --cacert /etc/kubelab/pki/ca.crt --cert "$cert" --key "$key" \
				-H "Content-Type: application/json" -X POST "$server/apis/authentication.k8s.io/v1/selfsubjectreviews" \
				-d "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"SelfSubjectReview\"}"' 2>&1 |
			jq -r '"\(.status.userInfo.username) \(.status.userInfo.groups | join(","))"' 2>&1)
		if [ "$whoami" != "system:node:node$i system:nodes,system:authenticated" ]; then
			fail lab-node-credentials "node$i's /etc/kubelab/kubelet.conf authenticates as \"$whoami\", not system:node:node$i in system:nodes"
			ok=0
			continue
		fi
		seen+="; whoami on node$i: $whoami"
	done
	[ "$ok" = 1 ] || return
	pass lab-node-credentials
	echo "  .. bootstrap token $id;$seen"
	lkubectl get csr 2>&1 | sed 's/^/  .. /'
}

# What on a node could act as an admin: a kubeconfig with an embedded key
# (admin.kubeconfig), the CA's key, the apiserver's data dir. Looked for in
# the node's own files and in the share every node mounts.
ADMIN_CREDENTIALS_SCAN='{ find / -xdev -name ca.key 2>/dev/null; ls -d /var/lib/kubelab-apiserver 2>/dev/null;
	grep -rlI --exclude-dir=rootfs --exclude-dir=proc -e client-key-data -e client-certificate-data \
		/etc /root /home /var /usr/local /tmp /opt /share/out 2>/dev/null; } | sort -u'

# Nodes 2 and 3 hold no admin credential; node1, the control plane, does
# (the same scan finding its admin.kubeconfig shows the scan can).
check_no_admin_credentials() {
	local i out control
	control=$(lab ssh 1 "$ADMIN_CREDENTIALS_SCAN" 2>&1)
	if ! grep -qx /var/lib/kubelab-apiserver/admin.kubeconfig <<<"$control"; then
		fail lab-no-admin-credentials "the scan did not find node1's admin.kubeconfig: $control"
		return
	fi
	for i in 2 3; do
		out=$(lab ssh "$i" "$ADMIN_CREDENTIALS_SCAN; echo scanned" 2>&1)
		if [ "$out" != scanned ]; then
			fail lab-no-admin-credentials "node$i holds: $(grep -vx scanned <<<"$out" | tr '\n' ' ')"
			return
		fi
	done
	pass lab-no-admin-credentials
	echo "  .. node2, node3: no kubeconfig with an embedded key, no ca.key, no apiserver data; node1: $(tr '\n' ' ' <<<"$control")"
}

# The apiserver checks kubelets' serving certificates against the cluster CA
# (--kubelet-certificate-authority), and node2's and node3's port 10250
# presents a certificate that CA issued for the node's name and address.
check_kubelet_serving_verified() {
	local args i ip out seen=""
	# shellcheck disable=SC2016 # expanded on the node
	args=$(lab ssh 1 'tr "\0" " " </proc/$(systemctl show -p MainPID --value kubelab-apiserver)/cmdline' 2>&1)
	if ! grep -q -- "--kubelet-certificate-authority /var/lib/kubelab-apiserver/ca.crt" <<<"$args"; then
		fail lab-kubelet-serving-verified "the apiserver runs without --kubelet-certificate-authority: $args"
		return
	fi
	for i in 2 3; do
		ip=$(lkubectl get node "node$i" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
		# A verified TLS handshake (then 401: the kubelet API wants credentials).
		out=$(lab ssh 1 "curl -sS -v --max-time 30 --cacert /var/lib/kubelab-apiserver/ca.crt -o /dev/null \
			-w 'status %{http_code} verify %{ssl_verify_result}\n' https://$ip:10250/healthz 2>&1 |
			grep -E '^status |subject:|issuer:'" 2>&1)
		if ! grep -qEx "status (200|401|403) verify 0" <<<"$out" || ! grep -q "subject: .*CN *= *system:node:node$i" <<<"$out"; then
			fail lab-kubelet-serving-verified "https://$ip:10250 (node$i) with the cluster CA: $(tr '\n' ' ' <<<"$out")"
			return
		fi
		seen+=" node$i($ip): $(grep -o 'subject: .*' <<<"$out")"
	done
	pass lab-kubelet-serving-verified
	echo "  .. the apiserver has --kubelet-certificate-authority;$seen, verified against the cluster CA"
}

# Three nodes on the lab's LAN and the pod network across them (the lab's
# default, vxlan): pod to pod between nodes with the source address kept, a
# ClusterIP Service with endpoints on two nodes answering from both, a
# NodePort answering on every node, the cluster DNS across nodes, and exec,
# logs and port-forward to other nodes' pods through the apiserver; nodes 2
# and 3 joined with a bootstrap token (kubeadm's TLS bootstrapping) and hold
# no admin credential.
# KUBELAB_LAB_TEST_KEEP=1 leaves the lab up after a failed check.
cluster() {
	if [ "$(id -u)" != 0 ]; then
		skip lab-cluster "needs root (sudo vm-tests/lab-test.sh --cluster)"
		return
	fi
	local t0=$SECONDS t out i
	trap 'lab_down_unless_kept; cleanup' EXIT
	if ! lab up --no-build --nodes 3; then
		fail lab-cluster-up "scripts/lab up --nodes 3 failed (consoles: $LAB_DIR/node*.console.log)"
		return
	fi
	pass lab-cluster-up
	echo "  .. scripts/lab up --nodes 3 took $((SECONDS - t0)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
	for i in 1 2 3; do
		if ! until_ok 300 node_has_cidr "$i"; then
			fail lab-cluster-nodes "node$i is not Ready with a pod CIDR: $(lkubectl get nodes -o wide 2>&1 | tr '\n' ' ')"
			return
		fi
	done
	pass lab-cluster-nodes
	timed check_node_credentials
	timed check_no_admin_credentials
	timed check_kubelet_serving_verified
	# The apiserver builds its OpenAPI documents on their first request,
	# which kubectl apply makes to validate: minutes for a debug build on a
	# TCG guest (204 s seen on a loaded host), past kubectl's timeouts.
	t=$SECONDS
	until_ok 900 lkubectl get --raw /openapi/v3 --request-timeout=900s &&
		echo "  .. the apiserver's OpenAPI documents built in $((SECONDS - t)) s"
	echo "  .. $(lkubectl get nodes --no-headers -o custom-columns='N:.metadata.name,C:.spec.podCIDR,IP:.status.addresses[?(@.type=="InternalIP")].address' | tr -s ' \n' ' ')"
	if ! out=$(cluster_objects | lkubectl apply -f - 2>&1); then
		fail lab-cluster-pods "kubectl apply: $out"
		return
	fi
	t=$SECONDS
	if ! until_ok 300 pods_running who-2 who-3; then
		fail lab-cluster-pods "$(lkubectl get pods -o wide 2>&1 | tr '\n' ' ')"
		return
	fi
	pass lab-cluster-pods
	echo "  .. who-2 and who-3 running $((SECONDS - t)) s after kubectl apply"
	IP2=$(lkubectl get pod who-2 -o jsonpath='{.status.podIP}')
	IP3=$(lkubectl get pod who-3 -o jsonpath='{.status.podIP}')

	timed check_pod_to_pod
	timed check_clusterip
	timed check_nodeport
	timed check_dns
	timed check_exec
	timed check_logs
	timed check_port_forward

	[ "$FAILED" != 0 ] || lkubectl delete statefulset,pod,service -l app=who --grace-period=1 --wait=false >/dev/null 2>&1
	echo "  .. cluster run took $((SECONDS - t0)) s"
}

# The lab goes down at the end, unless a check failed and
# KUBELAB_LAB_TEST_KEEP=1 asks to look at it.
lab_down_unless_kept() {
	if [ "$FAILED" != 0 ] && [ "${KUBELAB_LAB_TEST_KEEP:-0}" = 1 ]; then
		echo "lab-test: the lab stays up: KUBELAB_LAB_DIR=$LAB_DIR KUBELAB_LAB_PORT_BASE=$PORT_BASE scripts/lab ssh|down" >&2
		return
	fi
	lab down >/dev/null 2>&1
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
