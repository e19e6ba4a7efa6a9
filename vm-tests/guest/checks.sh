#!/bin/sh
# The guest's checks: run kubelab-agent exactly as a user would (flags,
# manifest files, `image import`, the read-only HTTP API) on cgroup v2, and
# check that its limits bite. One line per check: PASS / FAIL / SKIP.
. /share/guest/lib.sh

AGENT=/share/bin/kubelab-agent
ROOT_DIR=/var/lib/kubelab
MANIFESTS=/etc/kubelab/manifests
CGROUP_ROOT=/kubelab
KUBEPODS=/sys/fs/cgroup$CGROUP_ROOT/kubepods
API=http://127.0.0.1:10255
IMAGE=/share/busybox.tar
LOG=/tmp/agent.log
PODS=/tmp/pods.json

# --- helpers ------------------------------------------------------------

now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# GET /pods into $PODS; false when the agent does not answer with JSON
get_pods() { curl -sf --max-time 5 "$API/pods" >$PODS && jq -e .items $PODS >/dev/null 2>&1; }

# jq over the pod whose name starts with $1 (static pods are named
# <name>-<node>, as the kubelet names their mirror pods)
pod_jq() {
	jq -r --arg n "$1" "[.items[] | select(.metadata.name | startswith(\$n))][0] | $2 // empty" $PODS 2>/dev/null
}

# wait_for SECS CONDITION...: re-fetch /pods every second until CONDITION holds
wait_for() {
	limit=$1
	shift
	start=$(now)
	while :; do
		get_pods && "$@" && return 0
		awk -v a="$start" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }' && return 1
		sleep 1
	done
}

container_running() { [ -n "$(pod_jq "$1" '.status.containerStatuses[0].state.running.startedAt')" ]; }
restarted_after_oom() {
	[ "$(pod_jq "$1" '.status.containerStatuses[0].restartCount')" -ge 1 ] 2>/dev/null &&
		[ -n "$(pod_jq "$1" '.status.containerStatuses[0].lastState.terminated.reason')" ]
}

# The pod's cgroup, where the design puts it; sets POD_CG or explains in WHY.
find_pod_cgroup() {
	name=$1 qos=$2
	uid=$(pod_jq "$name" .metadata.uid)
	if [ -z "$uid" ]; then
		WHY="pod $name has no metadata.uid in /pods"
		return 1
	fi
	POD_CG=$KUBEPODS/$qos/pod$uid
	[ -d "$POD_CG" ] && return 0
	found=$(find /sys/fs/cgroup -type d -name "pod$uid*" 2>/dev/null | head -1)
	WHY="no cgroup $POD_CG (uid $uid); found ${found:-nothing} instead"
	return 1
}

# PIDs of processes, other than the agent, whose command line names one of
# KEYS (a pod's uid or name): the shims and sandboxes that serve a pod, also
# when they live outside its cgroup
pod_helpers() {
	[ $# -gt 0 ] || return 0
	ps -eo pid=,args= | awk -v keys="$*" -v agent="$AGENT_PID" '
		BEGIN { n = split(keys, k, " ") }
		$1 != agent && $2 !~ /(^|\/)(awk|ps)$/ {
			for (i = 1; i <= n; i++) if (index($0, k[i])) { print $1; next }
		}'
}

# PIDs in a cgroup and all its descendants
cgroup_pids() { find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null; }

# nr_throttled summed over a cgroup and its descendants: the quota may be set
# on the pod, on the container, or both.
throttled_total() {
	find "$1" -name cpu.stat -exec awk '$1 == "nr_throttled" { n += $2 } END { print n + 0 }' {} +
}

agent_log_tail() {
	echo "  -- last lines of $LOG --"
	tail -n "${1:-25}" $LOG 2>/dev/null | sed 's/^/  | /'
}

# everything the remaining checks need; each failure names the step
AGENT_OK=1
blocked() {
	for c in "$@"; do fail "$c" "$WHY"; done
}

# --- preflight ------------------------------------------------------------

if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] &&
	grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control &&
	grep -qw memory /sys/fs/cgroup/cgroup.subtree_control; then
	pass guest-cgroup-v2 "controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
else
	fail guest-cgroup-v2 "/sys/fs/cgroup is not cgroup2 with cpu and memory enabled"
fi

if [ ! -x $AGENT ]; then
	AGENT_OK=0
	WHY="no $AGENT: the workspace built no kubelab-agent binary"
elif [ ! -f $IMAGE ]; then
	AGENT_OK=0
	WHY="no $IMAGE: scripts/build-test-image.sh is missing or failed on the host"
fi

# --- image import -----------------------------------------------------------

if [ $AGENT_OK = 1 ]; then
	t=$(now)
	if out=$($AGENT --root-dir $ROOT_DIR image import $IMAGE 2>&1); then
		pass image-import "$(elapsed "$t") s; image ls: $($AGENT --root-dir $ROOT_DIR image ls 2>&1 | tr '\n' ' ')"
	else
		AGENT_OK=0
		WHY="image import failed"
		fail image-import "'kubelab-agent --root-dir $ROOT_DIR image import $IMAGE' exited non-zero: $(echo "$out" | tail -5 | tr '\n' ' ')"
	fi
fi

# --- start the agent with two static pods ------------------------------------

mkdir -p $MANIFESTS
cat >$MANIFESTS/cpu-hog.yaml <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: cpu-hog
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: loop
    image: busybox
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      limits:
        cpu: 200m
EOF
cat >$MANIFESTS/mem-hog.yaml <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: mem-hog
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Always
  containers:
  - name: dd
    image: busybox
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]
    resources:
      limits:
        memory: 32Mi
EOF

# MemoryQoS (the agent runs with --feature-gates MemoryQoS=true): a 16Mi
# request under a 64Mi limit gets memory.min 16Mi and memory.high at
# 16Mi + 0.9 x 48Mi, floored to a page. The container reports its own cgroup
# files, then dd needs 96M: the kernel throttles at memory.high (memory.events
# high) before memory.max OOM-kills, and memory.oom.group=1 takes the shell
# with dd, so the container ends OOMKilled instead of sleeping on.
cat >$MANIFESTS/mem-qos.yaml <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: mem-qos
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Always
  containers:
  - name: sh
    image: busybox
    command:
    - sh
    - -c
    - |
      for f in memory.min memory.high memory.oom.group memory.swap.max; do
        echo "$f=$(cat /sys/fs/cgroup/$f 2>/dev/null || echo absent)"
      done >/dev/termination-log
      dd if=/dev/zero of=/dev/null bs=96M count=1
      sleep 3600
    resources:
      requests:
        memory: 16Mi
      limits:
        memory: 64Mi
EOF

# A root container with CAP_MKNOD makes nodes for the guest's disk and
# /dev/kmsg and tries to open them: on cgroup v2 only the agent's eBPF device
# program stands in the way. The read-only port serves no logs, so the probe
# reports through its termination message (state.terminated.message in /pods).
DISK_DEV=$(cat /sys/block/vda/dev 2>/dev/null || echo 254:0)
cat >$MANIFESTS/dev-probe.yaml <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: dev-probe
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: probe
    image: busybox
    command:
    - sh
    - -c
    - |
      exec >/dev/termination-log 2>&1
      mknod /tmp/disk b ${DISK_DEV%%:*} ${DISK_DEV##*:} && mknod /tmp/kmsg c 1 11 && echo mknod=ok
      for f in /dev/null /tmp/disk /tmp/kmsg; do (exec 3<\$f) 2>/tmp/err && echo "\$f=open" || echo "\$f=denied \$(cat /tmp/err)"; done
EOF

# The container's own cgroup, read-only, at /sys/fs/cgroup (cgroup namespace)
cat >$MANIFESTS/cg-view.yaml <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: cg-view
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: probe
    image: busybox
    resources:
      limits: {cpu: 250m, memory: 48Mi}
    command:
    - sh
    - -c
    - |
      exec >/dev/termination-log 2>&1
      echo "memory.max=\$(cat /sys/fs/cgroup/memory.max)"
      echo "cpu.max=\$(cat /sys/fs/cgroup/cpu.max)"
      echo "self=\$(cat /proc/self/cgroup)"
      echo 1 > /sys/fs/cgroup/memory.max 2>/dev/null && echo write=ok || echo write=refused
EOF

AGENT_PID=""
if [ $AGENT_OK = 1 ]; then
	t=$(now)
	$AGENT --root-dir $ROOT_DIR --pod-manifest-path $MANIFESTS --cgroup-root $CGROUP_ROOT \
		--read-only-port 10255 --hostname-override vm --feature-gates MemoryQoS=true >$LOG 2>&1 &
	AGENT_PID=$!
	if wait_for 60 true; then
		pass agent-serves-pods "GET /pods answered $(elapsed "$t") s after start"
	else
		AGENT_OK=0
		WHY="the agent did not serve GET $API/pods"
		kill -0 $AGENT_PID 2>/dev/null || WHY="$WHY (it exited: $(wait $AGENT_PID; echo status $?))"
		fail agent-serves-pods "$WHY within 60 s"
		agent_log_tail
	fi
fi

# --- (1) CPU limit: 200m busy loop throttled to 0.2 cores -------------------

if [ $AGENT_OK = 1 ]; then
	t=$(now)
	if ! wait_for 120 container_running cpu-hog; then
		fail cpu-limit-throttles "cpu-hog not running after 120 s: $(pod_jq cpu-hog '.status.containerStatuses[0].state | tojson')"
		agent_log_tail
	elif ! find_pod_cgroup cpu-hog burstable; then
		fail cpu-limit-throttles "$WHY"
	else
		note "cpu-hog running $(elapsed "$t") s after the agent answered; cgroup $POD_CG"
		note "cpu.max: pod $(cat "$POD_CG/cpu.max"); containers $(find "$POD_CG" -mindepth 2 -name cpu.max -exec cat {} + | tr '\n' ' ')"
		sleep 1
		thr0=$(throttled_total "$POD_CG")
		mc=$(measure_millicores "$POD_CG" 6)
		thr=$(($(throttled_total "$POD_CG") - thr0))
		if within "$mc" 180 220 && [ "$thr" -gt 0 ]; then
			pass cpu-limit-throttles "${mc}m used over 6 s (limit 200m), nr_throttled +$thr"
		else
			fail cpu-limit-throttles "busy loop used ${mc}m over 6 s (want 200m +-10%), nr_throttled +$thr"
		fi
	fi
else
	blocked cpu-limit-throttles
fi

# --- (1b) PSI: the throttled loop waits for CPU, in /stats/summary and /metrics --

if [ $AGENT_OK = 1 ] && [ -n "$(pod_jq cpu-hog .metadata.uid)" ]; then
	summary=$(curl -sf --max-time 10 "$API/stats/summary")
	metrics=$(curl -sf --max-time 10 "$API/metrics")
	psi=$(echo "$summary" | jq -c '[.pods[] | select(.podRef.name | startswith("cpu-hog"))][0] |
		{pod: .cpu.psi.some.total, container: .containers[0].cpu.psi.some.total,
		 avg10: .containers[0].cpu.psi.some.avg10, memory: (.containers[0].memory.psi != null),
		 io: (.containers[0].io.psi != null)}' 2>/dev/null)
	node_psi=$(echo "$summary" | jq -c '.node.cpu.psi.some' 2>/dev/null)
	waiting=$(echo "$metrics" | awk '/^container_pressure_cpu_waiting_seconds_total\{.*pod="cpu-hog/ { print $2 }')
	if echo "$psi" | jq -e '.pod > 0 and .container > 0 and .memory and .io' >/dev/null 2>&1 &&
		awk -v w="${waiting:-0}" 'BEGIN { exit !(w > 0) }' &&
		echo "$node_psi" | jq -e '.total > 0' >/dev/null 2>&1; then
		pass psi-cpu-pressure "cpu.psi.some (us) $psi; container_pressure_cpu_waiting_seconds_total $waiting; node $node_psi"
	else
		fail psi-cpu-pressure "want cpu.psi.some.total > 0 for the throttled pod and its container, memory and io psi, the waiting counter > 0 and node psi: summary $psi, metrics ${waiting:-none}, node ${node_psi:-none}"
	fi
else
	blocked psi-cpu-pressure
fi

# --- (2) memory limit: dd over 32Mi ends OOMKilled/137 and restarts ----------

if [ $AGENT_OK = 1 ]; then
	if ! wait_for 120 restarted_after_oom mem-hog; then
		fail memory-limit-oomkills "no restart after a termination within 120 s: containerStatuses $(pod_jq mem-hog '.status.containerStatuses | tojson')"
		agent_log_tail
	else
		reason=$(pod_jq mem-hog .status.containerStatuses[0].lastState.terminated.reason)
		code=$(pod_jq mem-hog .status.containerStatuses[0].lastState.terminated.exitCode)
		restarts=$(pod_jq mem-hog .status.containerStatuses[0].restartCount)
		ooms="?"
		WHY=""
		find_pod_cgroup mem-hog burstable && ooms=$(mem_event "$POD_CG" oom_kill)
		if [ "$reason" = OOMKilled ] && [ "$code" = 137 ] && [ "${ooms:-0}" -ge 1 ] 2>/dev/null; then
			pass memory-limit-oomkills "lastState.terminated $reason/$code, restartCount $restarts, memory.events oom_kill $ooms"
		else
			fail memory-limit-oomkills "lastState.terminated reason '$reason' exitCode '$code' (want OOMKilled/137), restartCount $restarts, memory.events oom_kill $ooms (${WHY:-pod cgroup $POD_CG})"
		fi
	fi
else
	blocked memory-limit-oomkills
fi

# --- (2a) MemoryQoS and the group OOM kill --------------------------------------

if [ $AGENT_OK = 1 ]; then
	if ! wait_for 120 restarted_after_oom mem-qos; then
		fail memory-qos-group-oom "no restart within 120 s (a single-process kill would leave the shell sleeping): containerStatuses $(pod_jq mem-qos '.status.containerStatuses | tojson')"
		agent_log_tail
	else
		reason=$(pod_jq mem-qos .status.containerStatuses[0].lastState.terminated.reason)
		msg=$(pod_jq mem-qos .status.containerStatuses[0].lastState.terminated.message | tr '\n' ' ' | sed 's/ *$//')
		high=? ooms=? pod_min=?
		WHY=""
		if find_pod_cgroup mem-qos burstable; then
			high=$(mem_event "$POD_CG" high)
			ooms=$(mem_event "$POD_CG" oom_kill)
			pod_min=$(cat "$POD_CG/memory.min")
		fi
		want="memory.min=16777216 memory.high=62074880 memory.oom.group=1 memory.swap.max=0"
		if [ "$reason" = OOMKilled ] && [ "$msg" = "$want" ] && [ "$pod_min" = 16777216 ] &&
			[ "${high:-0}" -ge 1 ] 2>/dev/null && [ "${ooms:-0}" -ge 1 ] 2>/dev/null; then
			pass memory-qos-group-oom "the container saw: $msg; pod memory.min $pod_min; ended $reason; memory.events high $high (throttled at memory.high) then oom_kill $ooms"
		else
			fail memory-qos-group-oom "want OOMKilled, '$want', pod memory.min 16777216, memory.events high >= 1 and oom_kill >= 1: got '$reason', '$msg', pod memory.min $pod_min, high $high, oom_kill $ooms (${WHY:-pod cgroup $POD_CG})"
		fi
	fi
	rm -f $MANIFESTS/mem-qos.yaml
else
	blocked memory-qos-group-oom
fi

# --- (2b) devices: the eBPF allow-list refuses the node's disk ---------------

# probe_output POD CHECK: waits for the one-shot probe pod POD to finish and
# sets PROBE_LOG to its termination message; fails CHECK when it does not.
probe_output() {
	probe_pod=$1
	probe_finished() { [ -n "$(pod_jq "$probe_pod" .status.containerStatuses[0].state.terminated.finishedAt)" ]; }
	if ! wait_for 120 probe_finished; then
		fail "$2" "$probe_pod did not finish within 120 s: $(pod_jq "$probe_pod" '.status.containerStatuses[0].state | tojson')"
		agent_log_tail
		return 1
	fi
	PROBE_LOG=$(pod_jq "$probe_pod" .status.containerStatuses[0].state.terminated.message)
}

if [ $AGENT_OK = 1 ]; then
	if probe_output dev-probe devices-restricted; then
		if echo "$PROBE_LOG" | grep -q "mknod=ok" &&
			echo "$PROBE_LOG" | grep -q "/dev/null=open" &&
			echo "$PROBE_LOG" | grep -q "/tmp/disk=denied.*Operation not permitted" &&
			echo "$PROBE_LOG" | grep -q "/tmp/kmsg=denied.*Operation not permitted"; then
			pass devices-restricted "disk $DISK_DEV: $(echo "$PROBE_LOG" | tr '\n' ' ')"
		else
			fail devices-restricted "want mknod=ok, /dev/null open, the disk ($DISK_DEV) and kmsg denied (EPERM): $(echo "$PROBE_LOG" | tr '\n' ' ')"
		fi
	fi
	rm -f $MANIFESTS/dev-probe.yaml
else
	blocked devices-restricted
fi

# --- (2c) the container reads its own limits at /sys/fs/cgroup --------------

if [ $AGENT_OK = 1 ]; then
	if probe_output cg-view cgroup-view; then
		if echo "$PROBE_LOG" | grep -qx "memory.max=50331648" &&
			echo "$PROBE_LOG" | grep -qx "cpu.max=25000 100000" &&
			echo "$PROBE_LOG" | grep -qx "self=0::/" &&
			echo "$PROBE_LOG" | grep -qx "write=refused"; then
			pass cgroup-view "$(echo "$PROBE_LOG" | tr '\n' ' ')"
		else
			fail cgroup-view "want memory.max=50331648, cpu.max=25000 100000, self=0::/, write=refused: $(echo "$PROBE_LOG" | tr '\n' ' ')"
		fi
	fi
	rm -f $MANIFESTS/cg-view.yaml
else
	blocked cgroup-view
fi

# --- (3) removing the manifests removes cgroups, processes, namespaces --------

if [ $AGENT_OK = 1 ]; then
	pids=""
	cgs=""
	keys=""
	for p in cpu-hog mem-hog; do
		if find_pod_cgroup $p burstable; then
			cgs="$cgs $POD_CG"
			pids="$pids $(cgroup_pids "$POD_CG")"
			keys="$keys $uid $(pod_jq $p .metadata.name)"
		fi
	done
	helpers=$(pod_helpers $keys)
	[ -z "$helpers" ] || note "processes naming the pods on their command line: $(ps -o pid=,args= -p "$(echo $helpers | tr ' ' ,)" | awk '{ printf "%s(%s) ", $1, $3 }')"
	pids=$(echo $pids $helpers | tr ' ' '\n' | sort -un | tr '\n' ' ')
	# the namespaces those processes live in (not the guest's own), as nsfs
	# names like net:[4026532161]; one `ls` because forks are slow here
	nss=""
	if [ -n "$pids" ]; then
		host_ns=$(ls -l /proc/1/ns/ | sed -n 's/.* -> //p')
		nss=$(for pid in $pids; do echo /proc/$pid/ns/net /proc/$pid/ns/ipc /proc/$pid/ns/uts /proc/$pid/ns/pid /proc/$pid/ns/mnt; done |
			xargs ls -l 2>/dev/null | sed -n 's/.* -> //p' | sort -u | grep -vxF "$host_ns" | tr '\n' ' ')
	fi
	note "before removal: cgroups$cgs; pids $(echo $pids); namespaces $nss"
	t=$(now)
	rm -f $MANIFESTS/cpu-hog.yaml $MANIFESTS/mem-hog.yaml
	gone() {
		for cg in $cgs; do [ -d "$cg" ] && return 1; done
		for pid in $pids; do [ -d /proc/$pid ] && return 1; done
		[ -z "$(pod_helpers $keys)" ] || return 1
		[ -z "$(pod_jq cpu-hog .metadata.name)$(pod_jq mem-hog .metadata.name)" ]
	}
	if [ -z "$cgs" ]; then
		fail pods-removed "the pods' cgroups were never found, nothing to check"
	elif ! wait_for 60 gone; then
		left=""
		for cg in $cgs; do [ -d "$cg" ] && left="$left $cg"; done
		for pid in $pids $(pod_helpers $keys); do
			[ -d /proc/$pid ] && left="$left pid:$pid($(tr '\0' ' ' </proc/$pid/cmdline 2>/dev/null))"
		done
		[ -n "$(pod_jq cpu-hog .metadata.name)$(pod_jq mem-hog .metadata.name)" ] && left="$left (still in /pods)"
		fail pods-removed "60 s after removing the manifests still there:$left"
		agent_log_tail
	else
		# a namespace is alive while a process or a bind mount (nsfs) holds it
		held=""
		all_ns=$(ls -l /proc/[0-9]*/ns/ 2>/dev/null)
		for ns in $nss; do
			echo "$all_ns" | grep -qF -- "-> $ns" && held="$held $ns(a process)"
			grep -qF "$ns" /proc/self/mountinfo && held="$held $ns(a bind mount)"
		done
		if [ -n "$held" ]; then
			fail pods-removed "cgroups and processes gone, namespaces still held:$held"
		else
			pass pods-removed "cgroups, processes and namespaces gone $(elapsed "$t") s after the manifests were removed"
		fi
	fi
else
	blocked pods-removed
fi

if [ -n "$AGENT_PID" ]; then
	kill $AGENT_PID 2>/dev/null
	wait $AGENT_PID 2>/dev/null
	[ "$FAILED" = 0 ] || agent_log_tail 40
fi

# --- (4) ClusterIP service through the iptables rules -------------------------
# A node as the Kubernetes docs draw one: the apiserver, the agent joined to it
# (--kubeconfig), pods on the CNI bridge (our plugins, from /share/bin) and a
# Service whose ClusterIP the agent's proxy turns into iptables rules. The
# guest has no NIC: a dummy interface is the node's address and default route
# (as on a real node, traffic to a ClusterIP needs a route before nat OUTPUT).

APISERVER=/share/bin/kubelab-apiserver
API_DIR=/var/lib/kubelab-apiserver
KAPI=https://127.0.0.1:6443
NODE_IP=192.168.50.10
APILOG=/tmp/apiserver.log
APISERVER_PID=""

# kapi METHOD PATH [JSON-FILE]: the API as the admin (client certificate)
kapi() {
	# 30 s: under TCG on a busy host one request can take over 10 s.
	curl -sS --max-time 30 --cacert $API_DIR/ca.crt --cert $API_DIR/admin.crt --key $API_DIR/admin.key \
		-H 'Content-Type: application/json' -X "$1" "$KAPI$2" ${3:+--data-binary @$3}
}
# wait_api SECS JQ PATH: until the object at PATH satisfies JQ (jq -e).
# curl must answer: jq 1.6 -e exits 0 on empty input, which let a refused
# connection pass for an answer.
wait_api() {
	limit=$1 start=$(now)
	while :; do
		body=$(kapi GET "$3" 2>/dev/null) && [ -n "$body" ] &&
			echo "$body" | jq -e "$2" >/dev/null 2>&1 && return 0
		awk -v a="$start" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }' && return 1
		sleep 1
	done
}
# web_pod NAME: a busybox httpd answering with its pod's hostname
web_pod() {
	cat >/tmp/$1.json <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "$1", "namespace": "default", "labels": {"app": "web"}},
 "spec": {"nodeName": "vm", "terminationGracePeriodSeconds": 1,
  "containers": [{"name": "httpd", "image": "busybox",
   "command": ["sh", "-c", "mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www"],
   "ports": [{"containerPort": 8080}]}]}}
EOF
	kapi POST /api/v1/namespaces/default/pods /tmp/$1.json >/dev/null
}
api_diag() {
	note "pods: $(kapi GET /api/v1/namespaces/default/pods | jq -c '[.items[] | {n: .metadata.name, phase: .status.phase, ip: .status.podIP}]' 2>&1)"
	note "endpointslices: $(kapi GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices | jq -c '[.items[] | {n: .metadata.name, e: .endpoints}]' 2>&1)"
	if kill -0 "$APISERVER_PID" 2>/dev/null; then
		note "apiserver $APISERVER_PID: $(ps -o stat=,rss= -p "$APISERVER_PID"), cgroup $(cat /proc/$APISERVER_PID/cgroup 2>&1)"
	else
		note "the apiserver exited: $(wait "$APISERVER_PID"; echo status $?)"
	fi
	note "listening on 6443: $(ss -Hltnp 'sport = :6443' 2>&1 | tr '\n' ' ')"
	note "kernel: $(dmesg 2>/dev/null | tail -n 5 | tr '\n' ' ')"
	echo "  -- last lines of $APILOG --"
	tail -n 10 $APILOG 2>/dev/null | sed 's/^/  | /'
	agent_log_tail 30
}
# past SECS START: more than SECS seconds since START (from now)
past() { awk -v a="$2" -v b="$(now)" -v l="$1" 'BEGIN { exit !(b - a > l) }'; }

# The node agent of the cluster checks runs with singleProcessOOMKill: true,
# and once the web pods are up, a static pod whose shell outlives the dd the
# kernel kills (started then so it does not slow the cluster's first steps).
KUBELET_CONFIG=/etc/kubelab/config.yaml
write_kubelet_config() {
	cat >$KUBELET_CONFIG <<'EOF'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
singleProcessOOMKill: true
# as the flags-only agent: no webhook authentication or authorization
authentication: {webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
EOF
}
write_single_process_oom_pod() {
	[ -f $MANIFESTS/oom-single.yaml ] && return 0
	cat >$MANIFESTS/oom-single.yaml <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: oom-single
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: busybox
    command: ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=96M count=1; sleep 3600"]
    resources:
      limits:
        memory: 32Mi
EOF
}

# With singleProcessOOMKill the kernel kills dd alone: memory.oom.group 0,
# oom_kill counted, the shell still running, no restart.
single_process_oom_check() {
	[ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null || { WHY="the cluster node's agent is not running (see clusterip-service)"; return 1; }
	write_single_process_oom_pod
	oom_counted() {
		find_pod_cgroup oom-single burstable 2>/dev/null && [ "$(mem_event "$POD_CG" oom_kill)" -ge 1 ] 2>/dev/null
	}
	wait_for 120 oom_counted || { WHY="no oom_kill in the pod's memory.events within 120 s: $(pod_jq oom-single '.status.containerStatuses | tojson') ${WHY:-}"; return 1; }
	sleep 2 # a group kill, were there one, would show by now
	get_pods
	group=$(cat "$(find "$POD_CG" -mindepth 1 -name memory.oom.group | head -1)" 2>/dev/null)
	running=$(pod_jq oom-single .status.containerStatuses[0].state.running.startedAt)
	restarts=$(pod_jq oom-single .status.containerStatuses[0].restartCount)
	ooms=$(mem_event "$POD_CG" oom_kill)
	if [ -n "$running" ] && [ "$restarts" = 0 ] && [ "$group" = 0 ]; then
		SINGLE_NOTE="oom_kill $ooms, memory.oom.group $group, the container running since $running, restartCount $restarts"
	else
		WHY="want the container running with restartCount 0 and memory.oom.group 0: running '${running}', restartCount '$restarts', memory.oom.group '$group', oom_kill $ooms"
		return 1
	fi
}

clusterip_check() {
	[ $AGENT_OK = 1 ] || { WHY="the agent did not come up (see above)"; return 1; }
	[ -x $APISERVER ] || { WHY="no $APISERVER: the workspace built no kubelab-apiserver"; return 1; }
	[ -x /share/bin/kubelab-bridge ] || { WHY="no /share/bin/kubelab-bridge (the CNI plugin)"; return 1; }
	ip link add node0 type dummy && ip addr add $NODE_IP/24 dev node0 && ip link set node0 up &&
		ip route add default dev node0 && sysctl -qw net.ipv4.ip_forward=1 ||
		{ WHY="could not give the guest a node address"; return 1; }

	t=$(now)
	$APISERVER --data-dir $API_DIR --advertise-address $NODE_IP >$APILOG 2>&1 &
	APISERVER_PID=$!
	wait_api 60 '.kind == "Namespace"' /api/v1/namespaces/default ||
		{ WHY="the apiserver did not answer within 60 s"; api_diag; return 1; }
	note "apiserver answering $(elapsed "$t") s after start"

	t=$(now)
	write_kubelet_config
	$AGENT --root-dir $ROOT_DIR --pod-manifest-path $MANIFESTS --cgroup-root $CGROUP_ROOT \
		--read-only-port 10255 --hostname-override vm --node-ip $NODE_IP --config $KUBELET_CONFIG \
		--kubeconfig $API_DIR/admin.kubeconfig --cni-bin-dir /share/bin --proxy-mode iptables >$LOG 2>&1 &
	AGENT_PID=$!
	wait_api 60 '.spec.podCIDR != null and any(.status.conditions[]; .type == "Ready" and .status == "True")' /api/v1/nodes/vm ||
		{ WHY="node vm not Ready with a podCIDR within 60 s"; api_diag; return 1; }
	note "node vm Ready, podCIDR $(kapi GET /api/v1/nodes/vm 2>&1 | jq -r .spec.podCIDR 2>&1), $(elapsed "$t") s after the agent started"

	cat >/tmp/web-svc.json <<'EOF'
{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
EOF
	t=$(now)
	web_pod web-1 && web_pod web-2 && kapi POST /api/v1/namespaces/default/services /tmp/web-svc.json >/dev/null ||
		{ WHY="creating the pods and the service failed"; api_diag; return 1; }
	# One request may time out while the guest is busy starting the pods.
	wait_api 60 '.spec.clusterIP | test("^[0-9]")' /api/v1/namespaces/default/services/web ||
		{ WHY="service web has no clusterIP after 60 s"; api_diag; return 1; }
	CIP=$(echo "$body" | jq -r .spec.clusterIP)
	wait_api 180 '[.items[].endpoints[]? | select(.conditions.ready)] | length == 2' \
		'/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb' ||
		{ WHY="the EndpointSlice of web has not 2 ready endpoints after 180 s"; api_diag; return 1; }
	note "web ($CIP) has 2 ready endpoints $(elapsed "$t") s after the pods were created"
	write_single_process_oom_pod

	# The proxy's rules: default/web's KUBE-SVC chain jumps to two KUBE-SEP chains.
	t=$(now)
	until [ "$(iptables-save -t nat 2>/dev/null | grep -F -- "default/web" | grep -c -- "-j KUBE-SEP-")" = 2 ]; do
		past 30 "$t" && {
			WHY="no KUBE-SVC rules with 2 endpoints for default/web after 30 s ($(iptables-save -t nat 2>&1 | grep -c KUBE) KUBE lines in nat)"
			api_diag
			return 1
		}
		sleep 1
	done
	note "$(iptables -V): KUBE-SVC -> 2 KUBE-SEP for default/web; $(iptables-save -t nat | grep -c '^-A KUBE') KUBE rules in nat"

	# Both endpoints answer through the ClusterIP (random balancing: ask until each has).
	seen="" i=0
	while [ $i -lt 40 ]; do
		i=$((i + 1))
		body=$(curl -s --max-time 3 "http://$CIP/" 2>/dev/null)
		case " $seen " in *" $body "*) ;; *) seen="$seen $body" ;; esac
		case "$seen" in *web-1*web-2* | *web-2*web-1*) break ;; esac
	done
	case "$seen" in
	*web-1*web-2* | *web-2*web-1*) CLUSTERIP_NOTE="http://$CIP/ answered from$seen in $i requests" ;;
	*) WHY="40 requests to http://$CIP/ reached only:${seen:- nothing}"; api_diag; return 1 ;;
	esac
}

# A pod of RuntimeClass runc (handler runc) on the cluster node: the node
# lists the handler in status.runtimeHandlers, Debian's runc runs the
# container, and its memory limit is its cgroup's memory.max.
runc_class_check() {
	[ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null && [ -n "$APISERVER_PID" ] ||
		{ WHY="the cluster is not running (see clusterip-service)"; return 1; }
	command -v runc >/dev/null || { WHY="no runc in the guest"; return 1; }
	t=$(now)
	handlers=$(kapi GET /api/v1/nodes/vm | jq -c '[.status.runtimeHandlers[]?.name]' 2>&1)
	case "$handlers" in *'"runc"'*) ;; *) WHY="status.runtimeHandlers of node vm lacks runc: $handlers"; return 1 ;; esac
	cat >/tmp/runc-class.json <<'EOF'
{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "runc"}, "handler": "runc"}
EOF
	cat >/tmp/runc-pod.json <<'EOF'
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runc-mem", "namespace": "default"},
 "spec": {"nodeName": "vm", "runtimeClassName": "runc", "terminationGracePeriodSeconds": 1,
  "containers": [{"name": "sleep", "image": "busybox", "command": ["sleep", "3600"],
   "resources": {"limits": {"memory": "48Mi"}}}]}}
EOF
	kapi POST /apis/node.k8s.io/v1/runtimeclasses /tmp/runc-class.json >/dev/null &&
		kapi POST /api/v1/namespaces/default/pods /tmp/runc-pod.json >/dev/null ||
		{ WHY="creating the RuntimeClass and the pod failed"; return 1; }
	wait_api 120 '.status.containerStatuses[0].state.running != null' /api/v1/namespaces/default/pods/runc-mem ||
		{ WHY="runc-mem not running after 120 s: $(kapi GET /api/v1/namespaces/default/pods/runc-mem | jq -c .status 2>&1)"; agent_log_tail; return 1; }
	id=$(echo "$body" | jq -r '.status.containerStatuses[0].containerID' | sed 's|^.*://||')
	state=$(runc --root $ROOT_DIR/runc state "$id" 2>&1 | jq -r .status 2>&1)
	[ "$state" = running ] || { WHY="runc state $id: '$state' (want running)"; return 1; }
	get_pods && find_pod_cgroup runc-mem burstable || return 1
	max=$(cat "$POD_CG/$id/memory.max" 2>&1)
	[ "$max" = 50331648 ] || { WHY="memory.max of the container's cgroup $POD_CG/$id: '$max' (want 50331648, 48Mi)"; return 1; }
	RUNC_NOTE="runc state $id: $state; its cgroup's memory.max $max; node runtimeHandlers $handlers; $(elapsed "$t") s"
}

if clusterip_check; then
	pass clusterip-service "$CLUSTERIP_NOTE"
else
	fail clusterip-service "$WHY"
fi
if single_process_oom_check; then
	pass single-process-oom-kill "$SINGLE_NOTE"
else
	fail single-process-oom-kill "$WHY"
fi
if runc_class_check; then
	pass runc-runtime-class "$RUNC_NOTE"
else
	fail runc-runtime-class "$WHY"
fi
[ -z "$AGENT_PID" ] || kill $AGENT_PID 2>/dev/null
[ -z "$APISERVER_PID" ] || kill $APISERVER_PID 2>/dev/null
summary
