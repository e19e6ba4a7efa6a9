#!/usr/bin/env bash
# Provision one kubelab node: install the binaries, the test image and the
# systemd units, then start the agent (every node) and the apiserver (with
# --apiserver). Runs as root on the node itself. One script for both labs:
# scripts/lab (QEMU) runs it from its 9p share at boot, the Vagrantfile as its
# shell provisioner. Running it again upgrades in place: the agent restarts
# and adopts the pods that are running.
#
# usage: provision.sh [options]
#   --node-name NAME        the node's name (default: the host name)
#   --node-ip IP            the node's address on the cluster network: the
#                           agent's --node-ip, the apiserver's --advertise-address
#   --apiserver             run kubelab-apiserver here too (the first node),
#                           as `kubeadm init` sets a control plane up: a
#                           bootstrap token, kubeadm's bootstrap RBAC, and this
#                           node's agent joins with the token like the others
#   --bootstrap-kubeconfig F
#                           join the agent with the bootstrap kubeconfig F (the
#                           server, the cluster CA and a bootstrap token; the
#                           other nodes, as `kubeadm join`; waits for F to
#                           appear, up to 10 min): the agent gets its client
#                           certificate as system:node:<name> and asks for a
#                           kubelet-serving certificate an admin approves
#   --bin-dir DIR           take kubelab-agent (and kubelab-apiserver, and the
#                           CNI plugins kubelab-bridge, kubelab-host-local) from DIR
#                           (default: <repo>/target/release, then target/debug;
#                           when neither has them, build them with cargo)
#   --image TAR             import this OCI archive as the pods' image (default:
#                           build busybox:latest with scripts/build-test-image.sh)
#   --examples DIR|none     static pods to start with (default: <repo>/examples/static)
#   --export-kubeconfig F   copy the apiserver's admin.kubeconfig to F
#   --export-bootstrap-kubeconfig F
#                           copy the joining nodes' bootstrap kubeconfig to F
#   --token-ttl Nh          how long the bootstrap token authenticates
#                           (default 24h, kubeadm's)
#   --pod-network-backend B how pods reach other nodes' pods: vxlan (default,
#                           flannel's: an overlay, VNI 1, UDP 8472), host-gw (a
#                           route per node, nodes on one L2 segment) or none
#   --cluster-cidr CIDR     the pod network (default 10.244.0.0/16): the
#                           apiserver cuts the nodes' pod CIDRs from it, the
#                           agents' service proxy masquerades traffic from
#                           outside it to cluster IPs
#   --no-wait               don't wait for the services to answer
#
# What it leaves on the node:
#   /usr/local/bin/kubelab-agent, /usr/local/bin/kubelab-apiserver, /usr/local/bin/kubelab
#   /opt/cni/bin/kubelab-bridge, kubelab-host-local   the pods' network (the
#                           agent writes /etc/cni/net.d/ for the node's podCIDR)
#   /etc/kubelab/bootstrap-kubelet.conf  the bootstrap token's kubeconfig
#   /etc/kubelab/kubelet.conf      the agent's kubeconfig as system:node:<name>,
#                           written by the agent once its client certificate
#                           (/var/lib/kubelet/pki/kubelet-client-current.pem) is issued
#   /var/lib/kubelet/pki/kubelet-server-current.pem  port 10250's certificate,
#                           issued once an admin approved the node's
#                           kubelet-serving CSR (kubectl certificate approve)
#   /etc/kubelab/pki/ca.crt        the cluster CA: client certificates it signed
#                           (the apiserver's) authenticate on the agent's port 10250
#   /etc/systemd/system/kubelab-agent.service, kubelab-apiserver.service (deploy/systemd/)
#   /etc/kubelab/agent.yaml        KubeletConfiguration: staticPodPath, cgroupRoot, ports,
#                           authentication, authorization
#   /etc/kubelab/manifests/        static pods (add, edit, delete files here)
#   /etc/default/kubelab-agent, /etc/default/kubelab-apiserver   per-node flags
#   /var/lib/kubelet               the agent's root dir (images, pods, logs)
#   /var/lib/kubelab-apiserver     the apiserver's store, CA and admin.kubeconfig
#                           (the first node only: the others never hold an
#                           admin credential or the CA's key)
set -Eeuo pipefail
trap 'echo "provision: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_NAME=""
NODE_IP=""
APISERVER=0
BIN_DIR=""
IMAGE=""
EXAMPLES="$REPO/examples/static"
EXPORT_KUBECONFIG=""
EXPORT_BOOTSTRAP=""
BOOTSTRAP_IN=""
TOKEN_TTL=24h
POD_NETWORK_BACKEND=vxlan
CLUSTER_CIDR=10.244.0.0/16
WAIT=1

AGENT_PORT=10255
SECURE_PORT=10250
APISERVER_PORT=6443
MANIFESTS=/etc/kubelab/manifests
APISERVER_DATA=/var/lib/kubelab-apiserver

say() { echo "provision[${NODE_NAME:-?}]: $*"; }
die() { echo "provision[${NODE_NAME:-?}]: error: $*" >&2; exit 1; }

usage() { sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
	case "$1" in
	--node-name) NODE_NAME=$2; shift ;;
	--node-ip) NODE_IP=$2; shift ;;
	--apiserver) APISERVER=1 ;;
	--bin-dir) BIN_DIR=$2; shift ;;
	--image) IMAGE=$2; shift ;;
	--examples) EXAMPLES=$2; shift ;;
	--export-kubeconfig) EXPORT_KUBECONFIG=$2; shift ;;
	--export-bootstrap-kubeconfig) EXPORT_BOOTSTRAP=$2; shift ;;
	--bootstrap-kubeconfig) BOOTSTRAP_IN=$2; shift ;;
	--token-ttl) TOKEN_TTL=$2; shift ;;
	--pod-network-backend) POD_NETWORK_BACKEND=$2; shift ;;
	--cluster-cidr) CLUSTER_CIDR=$2; shift ;;
	--no-wait) WAIT=0 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option $1" ;;
	esac
	shift
done

case "$POD_NETWORK_BACKEND" in
vxlan | host-gw | none) ;;
*) die "--pod-network-backend $POD_NETWORK_BACKEND: must be vxlan, host-gw or none" ;;
esac
[[ "$TOKEN_TTL" =~ ^[1-9][0-9]*h$ ]] || die "--token-ttl $TOKEN_TTL: hours, e.g. 24h"
[ "$APISERVER" = 0 ] || [ -z "$BOOTSTRAP_IN" ] || die "--bootstrap-kubeconfig is for the joining nodes (--apiserver makes its own)"
[ "$(id -u)" = 0 ] || die "run as root on the node"
[ -n "$NODE_NAME" ] || NODE_NAME=$(hostname)
if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
	die "systemd is not running here: the agent and the apiserver run as systemd units"
fi

# Debian packages the node needs; only what is missing is installed (the QEMU
# lab's image has them all, a Vagrant box gets them here).
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	say "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -q update >/dev/null
	apt-get -q install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- binaries
find_bin_dir() {
	local d
	for d in ${BIN_DIR:+"$BIN_DIR"} "$REPO/target/release" "$REPO/target/debug"; do
		if [ -x "$d/kubelab-agent" ]; then
			echo "$d"
			return
		fi
	done
}

# No binaries came with the sources: build them on the node. Debian 12's rustc
# is too old for the workspace, so the toolchain comes from rustup.
build_binaries() {
	apt_install build-essential pkg-config curl ca-certificates protobuf-compiler libprotobuf-dev
	export PATH="$HOME/.cargo/bin:$PATH"
	if ! command -v cargo >/dev/null; then
		say "installing the Rust toolchain (rustup, minimal profile)"
		curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
	fi
	# Outside the sources: they may be a folder shared with the host.
	export CARGO_TARGET_DIR=/var/cache/kubelab/target
	say "cargo build --release --workspace --bins (minutes)"
	(cd "$REPO" && cargo build --release --workspace --bins)
}

install_binaries() {
	local dir
	dir=$(find_bin_dir)
	if [ -z "$dir" ]; then
		[ -z "$BIN_DIR" ] || die "no kubelab-agent in $BIN_DIR"
		build_binaries
		dir=$CARGO_TARGET_DIR/release
	fi
	say "installing binaries from $dir"
	# install(1) replaces the file rather than writing into it, so running
	# shims (the old agent binary) are not disturbed.
	install -m 0755 "$dir/kubelab-agent" /usr/local/bin/kubelab-agent
	# The user tools (kubelab top, kubelab experiment), when built.
	[ ! -x "$dir/kubelab" ] || install -m 0755 "$dir/kubelab" /usr/local/bin/kubelab
	# The CNI plugins where the agent looks by default (--cni-bin-dir).
	local p
	for p in kubelab-bridge kubelab-host-local; do
		[ ! -x "$dir/$p" ] || install -D -m 0755 "$dir/$p" "/opt/cni/bin/$p"
	done
	if [ "$APISERVER" = 1 ]; then
		[ -x "$dir/kubelab-apiserver" ] || die "--apiserver: no kubelab-apiserver in $dir"
		install -m 0755 "$dir/kubelab-apiserver" /usr/local/bin/kubelab-apiserver
	fi
}

# ---------------------------------------------------------------- image
install_image() {
	local tar=$IMAGE
	if [ -z "$tar" ]; then
		[ -x "$REPO/scripts/build-test-image.sh" ] || die "no --image and no scripts/build-test-image.sh"
		apt_install busybox-static jq
		tar=/var/cache/kubelab/busybox.tar
		mkdir -p "$(dirname "$tar")"
		say "building the test image (scripts/build-test-image.sh)"
		"$REPO/scripts/build-test-image.sh" "$tar" >/dev/null
	fi
	[ -f "$tar" ] || die "image archive $tar not found"
	say "importing $(basename "$tar") into /var/lib/kubelet"
	RUST_LOG=warn /usr/local/bin/kubelab-agent --root-dir /var/lib/kubelet image import "$tar" >/dev/null
}

# A node of a cluster resolves names through its DNS: the kube-dns Service
# (the service range's tenth address) that the apiserver serves, as kubeadm
# writes clusterDNS/clusterDomain into the kubelet's config.
cluster_dns_config() {
	[ -n "$AGENT_KUBECONFIG" ] || return 0
	printf 'clusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\n'
}

# A node of a cluster reaches the other nodes' pods (the agent keeps routes,
# or a VXLAN device, in line with the Nodes and records the backend in the
# CNI config it writes).
pod_network_config() {
	[ -n "$AGENT_KUBECONFIG" ] || return 0
	printf 'podNetworkBackend: %s\n' "$POD_NETWORK_BACKEND"
}

# ---------------------------------------------------------------- units
write_config() {
	mkdir -p /etc/kubelab "$MANIFESTS"
	cat >/etc/kubelab/agent.yaml <<EOF
# Written by scripts/provision.sh; flags in /etc/default/kubelab-agent override it.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: $MANIFESTS
cgroupRoot: /kubelab
cgroupDriver: cgroupfs
# The kubelet API over HTTPS: logs and exec for the apiserver, every request
# authenticated and authorized as kubeadm sets a kubelet up. Joined, its
# certificate comes from the cluster's kubelet-serving signer once an admin
# approved the node's request (standalone: self-signed, in /var/lib/kubelet/pki).
port: $SECURE_PORT
$(auth_config)
# The read-only API, plain HTTP: /pods, /stats/summary, /metrics (top, experiment).
readOnlyPort: $AGENT_PORT
$(cluster_dns_config)
$(pod_network_config)
EOF
	local args="--hostname-override $NODE_NAME"
	[ -z "$NODE_IP" ] || args+=" --node-ip $NODE_IP"
	# TLS bootstrapping, as kubeadm's kubelet: the bootstrap token's
	# kubeconfig gets the client certificate and --kubeconfig is written
	# then (kept across restarts); the serving certificate is asked for too.
	[ -z "$AGENT_KUBECONFIG" ] ||
		args+=" --bootstrap-kubeconfig $BOOTSTRAP_KUBECONFIG --kubeconfig $AGENT_KUBECONFIG --rotate-server-certificates"
	# As kubeadm gives kube-proxy the cluster's pod subnet: a node's own
	# connections to a cluster IP are masqueraded, so an endpoint on another
	# node answers to an address of this node's it can reach (not, say, a NAT
	# interface's address every node has).
	[ -z "$AGENT_KUBECONFIG" ] || args+=" --cluster-cidr $CLUSTER_CIDR"
	printf '# Written by scripts/provision.sh\nKUBELAB_AGENT_ARGS="%s"\n' "$args" >/etc/default/kubelab-agent
	if [ "$APISERVER" = 1 ]; then
		# kubeadm's: joining nodes authenticate with bootstrap tokens, and
		# the kubelets' serving certificates are checked against the cluster CA.
		args="--enable-bootstrap-token-auth --kubelet-certificate-authority $APISERVER_DATA/ca.crt"
		[ -z "$NODE_IP" ] || args+=" --advertise-address $NODE_IP"
		args+=" --cluster-cidr $CLUSTER_CIDR"
		printf '# Written by scripts/provision.sh\nKUBELAB_APISERVER_ARGS="%s"\n' "$args" >/etc/default/kubelab-apiserver
	fi
	if [ "$EXAMPLES" != none ] && [ -d "$EXAMPLES" ]; then
		say "static pods: $EXAMPLES -> $MANIFESTS"
		cp "$EXAMPLES"/*.yaml "$MANIFESTS"/
	fi
	mkdir -p /usr/local/share/doc/kubelab
	[ ! -f "$REPO/README.md" ] || cp "$REPO/README.md" /usr/local/share/doc/kubelab/
}

# The agent's authentication/authorization (KubeletConfiguration). Joined:
# client certificates of the cluster CA (the apiserver's among them), tokens
# and permissions checked with the apiserver (TokenReview,
# SubjectAccessReview). Standalone there is nobody to ask: no one gets in.
auth_config() {
	if [ -n "$AGENT_KUBECONFIG" ]; then
		cat <<EOF
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true, cacheTTL: 2m}
  x509: {clientCAFile: $CLIENT_CA}
authorization:
  mode: Webhook
EOF
	else
		cat <<EOF
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
EOF
	fi
}

# (Re)start a unit: a running agent is restarted so the new binary and config
# take effect; its pods keep running (KillMode=process) and are adopted.
start_unit() {
	local unit=$1
	install -m 0644 "$REPO/deploy/systemd/$unit" "/etc/systemd/system/$unit"
	systemctl daemon-reload
	systemctl enable "$unit" >/dev/null 2>&1
	if systemctl is-active -q "$unit"; then
		say "restarting $unit"
		systemctl restart "$unit"
	else
		say "starting $unit"
		systemctl start "$unit"
	fi
}

wait_for() { # wait_for UNIT SECONDS COMMAND...
	local unit=$1 secs=$2 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || {
			journalctl -u "$unit" --no-pager -n 20 >&2 || true
			die "$unit did not come up within ${secs}s (journalctl -u $unit)"
		}
		sleep 1
	done
}

apiserver_ready() {
	[ -f "$APISERVER_DATA/admin.kubeconfig" ] &&
		curl -fsSk --max-time 3 "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -q ok
}

# kubeadm's control-plane side of TLS bootstrapping, done with the
# apiserver's admin credentials over its API (the node has no kubectl).
ADMIN_PKI=""
admin_api() { # METHOD PATH [JSON]: prints the body, then the HTTP status
	curl -sS --max-time 30 --cacert "$APISERVER_DATA/ca.crt" \
		--cert "$ADMIN_PKI/admin.crt" --key "$ADMIN_PKI/admin.key" \
		-X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} \
		-w '\n%{http_code}' "https://127.0.0.1:$APISERVER_PORT$2"
}

# create PATH JSON WHAT: POST an object; one that exists already is kept.
create() {
	local out code
	out=$(admin_api POST "$1" "$2") || die "creating $3: $out"
	code=$(tail -1 <<<"$out")
	case "$code" in
	201) say "created $3" ;;
	409) say "$3 exists" ;;
	*) die "creating $3: HTTP $code: $(sed '$d' <<<"$out")" ;;
	esac
}

# clusterrolebinding NAME CLUSTERROLE GROUP
clusterrolebinding() {
	create /apis/rbac.authorization.k8s.io/v1/clusterrolebindings "$(jq -cn \
		--arg name "$1" --arg role "$2" --arg group "$3" '{
			apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding",
			metadata: {name: $name},
			roleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: $role},
			subjects: [{apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: $group}]}')" \
		"clusterrolebinding $1 ($2 for $3)"
}

b64() { printf %s "$1" | base64 -w0; }

# A bootstrap token as `kubeadm token create` makes one: a `[a-z0-9]{6}` id
# and `[a-z0-9]{16}` secret in the Secret kube-system/bootstrap-token-<id>,
# expiring after --token-ttl.
new_bootstrap_token() {
	local chars="" id secret expiration
	while [ "${#chars}" -lt 22 ]; do
		chars+=$(head -c 256 /dev/urandom | LC_ALL=C tr -dc 'a-z0-9')
	done
	id=${chars:0:6} secret=${chars:6:16}
	expiration=$(date -u -d "+${TOKEN_TTL%h} hours" +%Y-%m-%dT%H:%M:%SZ)
	create /api/v1/namespaces/kube-system/secrets "$(jq -cn \
		--arg name "bootstrap-token-$id" --arg id "$(b64 "$id")" --arg secret "$(b64 "$secret")" \
		--arg exp "$(b64 "$expiration")" --arg yes "$(b64 true)" \
		--arg groups "$(b64 system:bootstrappers:kubeadm:default-node-token)" \
		--arg desc "$(b64 "The default bootstrap token generated by 'kubeadm init'.")" '{
			apiVersion: "v1", kind: "Secret", type: "bootstrap.kubernetes.io/token",
			metadata: {name: $name, namespace: "kube-system"},
			data: {"token-id": $id, "token-secret": $secret, expiration: $exp,
				"usage-bootstrap-authentication": $yes, "auth-extra-groups": $groups,
				description: $desc}}')" \
		"bootstrap token $id (expires $expiration)"
	echo "$id.$secret" >"$ADMIN_PKI/token"
}

# The first node: a bootstrap token, kubeadm's bindings that let its holders
# ask for node client certificates (and have them approved), and the
# bootstrap kubeconfig every node's agent joins with, this one's included.
init_bootstrap() {
	local admin=$APISERVER_DATA/admin.kubeconfig server
	ADMIN_PKI=$(mktemp -d)
	# shellcheck disable=SC2064 # the directory is known now
	trap "rm -rf '$ADMIN_PKI'" EXIT
	(
		umask 077
		sed -n 's/^ *client-certificate-data: *//p' "$admin" | head -1 | base64 -d >"$ADMIN_PKI/admin.crt"
		sed -n 's/^ *client-key-data: *//p' "$admin" | head -1 | base64 -d >"$ADMIN_PKI/admin.key"
	)
	new_bootstrap_token
	clusterrolebinding kubeadm:kubelet-bootstrap system:node-bootstrapper system:bootstrappers
	clusterrolebinding kubeadm:node-autoapprove-bootstrap \
		system:certificates.k8s.io:certificatesigningrequests:nodeclient system:bootstrappers
	clusterrolebinding kubeadm:node-autoapprove-certificate-rotation \
		system:certificates.k8s.io:certificatesigningrequests:selfnodeclient system:nodes
	# kubeadm runs kube-proxy under its own ServiceAccount (kubeadm:node-proxier);
	# the agent's service proxy runs in-process with the node's credentials,
	# so the nodes get kube-proxy's role.
	clusterrolebinding kubelab:node-proxier system:node-proxier system:nodes
	server=$(sed -n 's/^ *server: *//p' "$admin" | head -1)
	(
		umask 077
		cat >"$BOOTSTRAP_KUBECONFIG.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: $(base64 -w0 "$APISERVER_DATA/ca.crt")
    server: $server
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: tls-bootstrap-token-user
  name: tls-bootstrap-token-user@kubernetes
current-context: tls-bootstrap-token-user@kubernetes
users:
- name: tls-bootstrap-token-user
  user:
    token: $(cat "$ADMIN_PKI/token")
EOF
	)
	mv "$BOOTSTRAP_KUBECONFIG.tmp" "$BOOTSTRAP_KUBECONFIG"
	rm -rf "$ADMIN_PKI"
	say "bootstrap kubeconfig: $BOOTSTRAP_KUBECONFIG ($server)"
	if [ -n "$EXPORT_BOOTSTRAP" ]; then
		# Whole or not at all: the other nodes wait for it to appear.
		install -m 0600 "$BOOTSTRAP_KUBECONFIG" "$EXPORT_BOOTSTRAP.tmp"
		mv "$EXPORT_BOOTSTRAP.tmp" "$EXPORT_BOOTSTRAP"
		say "bootstrap kubeconfig copied to $EXPORT_BOOTSTRAP"
	fi
}

# The agent's credentials: a bootstrap kubeconfig (made here on the first
# node, given with --bootstrap-kubeconfig on the others), which the agent
# trades for its own client certificate as system:node:<name>.
AGENT_KUBECONFIG=""
BOOTSTRAP_KUBECONFIG=/etc/kubelab/bootstrap-kubelet.conf
CLIENT_CA=/etc/kubelab/pki/ca.crt
join_apiserver() {
	local src=$BOOTSTRAP_IN
	if [ "$APISERVER" = 0 ]; then
		[ -n "$src" ] || return 0
		if [ ! -f "$src" ]; then
			say "waiting for $src (the first node's bootstrap kubeconfig)"
			wait_for kubelab-agent 600 test -f "$src"
		fi
		install -D -m 0600 "$src" "$BOOTSTRAP_KUBECONFIG"
	fi
	AGENT_KUBECONFIG=/etc/kubelab/kubelet.conf
	# The admin kubeconfig an earlier provisioning gave the agent goes.
	rm -f /etc/kubelab/kubelet.kubeconfig
	# The cluster CA, which signs the apiserver's kubelet client certificate.
	mkdir -p "$(dirname "$CLIENT_CA")"
	sed -n 's/^ *certificate-authority-data: *//p' "$BOOTSTRAP_KUBECONFIG" | head -1 | base64 -d >"$CLIENT_CA"
	grep -q 'BEGIN CERTIFICATE' "$CLIENT_CA" || die "no certificate-authority-data in $BOOTSTRAP_KUBECONFIG"
}

# ---------------------------------------------------------------- main
say "node $NODE_NAME${NODE_IP:+ ($NODE_IP)}$([ "$APISERVER" = 0 ] || echo ", with the apiserver")"
install_binaries
install_image
if [ "$APISERVER" = 1 ]; then
	write_config
	start_unit kubelab-apiserver.service
	# The apiserver's first start writes the CA and admin.kubeconfig.
	wait_for kubelab-apiserver 120 test -f "$APISERVER_DATA/admin.kubeconfig"
	wait_for kubelab-apiserver 120 apiserver_ready
	mkdir -p /etc/kubelab
	init_bootstrap
	if [ -n "$EXPORT_KUBECONFIG" ]; then
		install -m 0600 "$APISERVER_DATA/admin.kubeconfig" "$EXPORT_KUBECONFIG"
		say "admin kubeconfig copied to $EXPORT_KUBECONFIG"
	fi
fi
join_apiserver
write_config
start_unit kubelab-agent.service
[ "$WAIT" = 0 ] || wait_for kubelab-agent 60 curl -fsS --max-time 3 "http://127.0.0.1:$AGENT_PORT/healthz"
if [ "$WAIT" = 1 ] && [ -n "$AGENT_KUBECONFIG" ]; then
	# The client certificate is approved (csrapproving) and issued, then the
	# agent writes its kubeconfig; the serving certificate waits for an admin.
	wait_for kubelab-agent 300 test -s "$AGENT_KUBECONFIG"
	say "joined as system:node:$NODE_NAME ($AGENT_KUBECONFIG); its kubelet-serving request" \
		"waits for: kubectl certificate approve (kubectl get csr)"
fi
say "done: kubelab-agent$([ "$APISERVER" = 1 ] && echo " and kubelab-apiserver") running" \
	"(systemctl status kubelab-agent; curl -s localhost:$AGENT_PORT/pods)"
