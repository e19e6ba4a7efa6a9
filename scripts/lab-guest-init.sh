#!/bin/sh
# First stage of a scripts/lab node, run by the initramfs as /share/guest/init.sh
# (the same initramfs as vm-tests'): give this boot its identity (name,
# machine-id, addresses, the lab's ssh key), add the unit that provisions the
# node with scripts/provision.sh, and hand PID 1 over to systemd.
#
# The kernel command line says who this node is:
#   kubelab.node=I kubelab.nodes=N
# eth0 is QEMU's user-mode network (10.0.2.15, NAT, the host's forwarded ports);
# eth1, when there are several nodes, the lab's own LAN (192.168.77.1I/24).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys

node=1 nodes=1
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	kubelab.node=*) node=${arg#*=} ;;
	kubelab.nodes=*) nodes=${arg#*=} ;;
	esac
done
name=node$node
lan_ip() { echo "192.168.77.$((10 + $1))"; }

echo "$name" >/etc/hostname
hostname "$name"
{
	echo "127.0.0.1 localhost"
	echo "::1 localhost"
	i=1
	while [ "$i" -le "$nodes" ]; do
		[ "$nodes" = 1 ] || echo "$(lan_ip "$i") node$i"
		i=$((i + 1))
	done
	[ "$nodes" != 1 ] || echo "10.0.2.15 $name"
} >/etc/hosts
# Every node boots the same image: each needs its own machine-id.
tr -d '-' </proc/sys/kernel/random/uuid >/etc/machine-id

# Static addresses: QEMU's user network always hands out the same ones, and
# nothing but these two links exist (net.ifnames=0 keeps the names eth0/eth1).
modprobe virtio_net
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" >/etc/resolv.conf
node_ip=10.0.2.15
if [ "$nodes" -gt 1 ] && ip link show eth1 >/dev/null 2>&1; then
	ip link set eth1 up
	ip addr add "$(lan_ip "$node")/24" dev eth1
	node_ip=$(lan_ip "$node")
fi

# The lab's ssh key (scripts/lab ssh).
if [ -f /share/ssh/authorized_keys ]; then
	mkdir -p /root/.ssh
	chmod 0700 /root/.ssh
	cp /share/ssh/authorized_keys /root/.ssh/authorized_keys
	chmod 0600 /root/.ssh/authorized_keys
fi

# Provisioning: the same scripts/provision.sh as Vagrant's, from the share.
# Its output and exit status go back to the host in /share/out/<node>/ (the
# status file appears whole: written aside, then renamed).
out=/share/out/$name
mkdir -p "$out"
rm -f "$out/provision.status"
args="--node-name $name --node-ip $node_ip --bin-dir /share/bin --image /share/busybox.tar"
if [ -x /share/bin/kubelab-apiserver ]; then
	if [ "$node" = 1 ]; then
		# The admin kubeconfig stays on node1 (scripts/lab fetches it over
		# ssh): the share is every node's.
		args="$args --apiserver --export-bootstrap-kubeconfig $out/bootstrap-kubelet.conf"
	else
		# The other nodes join node1's apiserver with the bootstrap token's
		# kubeconfig it exports, as `kubeadm join` does.
		args="$args --bootstrap-kubeconfig /share/out/node1/bootstrap-kubelet.conf"
	fi
fi
# The static examples (a busy loop, an OOM-killed pod) run on node1 only:
# every node is one slow vCPU, and the others are there for the cluster's pods.
[ "$node" = 1 ] || args="$args --examples none"
cat >/etc/systemd/system/kubelab-lab-provision.service <<EOF
[Unit]
Description=kubelab lab: provision $name with scripts/provision.sh
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'rc=0; /share/src/scripts/provision.sh $args >$out/provision.log 2>&1 || rc=\$?; echo \$rc >$out/.status; sync; mv $out/.status $out/provision.status; sync; exit \$rc'
TimeoutStartSec=15min

[Install]
WantedBy=multi-user.target
EOF
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sf ../kubelab-lab-provision.service /etc/systemd/system/multi-user.target.wants/

umount /sys /proc 2>/dev/null
exec /lib/systemd/systemd
