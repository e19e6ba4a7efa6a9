#!/bin/sh
# PID 1 of the test guest (after the initramfs's switch_root): set up a bare
# system on cgroup v2, run the checks the host asked for (/share/mode), write
# their exit status to /share/out/status and power off. PID 1 must never exit:
# the kernel would panic before the status reaches the host.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
cd /

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# devtmpfs has no /dev/fd; shells' process substitution and some tools need it.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
# cgroup v2 only: the unified hierarchy at /sys/fs/cgroup, as on a systemd
# distribution with unified_cgroup_hierarchy.
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t mqueue mqueue /dev/mqueue 2>/dev/null
hostname vm
ip link set lo up
echo 1 >/proc/sys/kernel/sysrq

poweroff_now() {
	sync
	echo o >/proc/sysrq-trigger
	while :; do sleep 1; done
}

# The root cgroup can't hold processes once controllers are enabled for its
# children (no-internal-process rule does not apply to the root, but it does to
# every other cgroup): keep this shell and its helpers in a leaf of its own.
mkdir -p /sys/fs/cgroup/init.scope
echo $$ >/sys/fs/cgroup/init.scope/cgroup.procs
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
	echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done

mode=$(cat /share/mode 2>/dev/null || echo checks)
echo "guest: up $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r), mode $mode"

case "$mode" in
selftest) sh /share/guest/selftest.sh; rc=$? ;;
checks) sh /share/guest/checks.sh; rc=$? ;;
shell)
	echo "guest: interactive shell; 'exit' powers off"
	setsid busybox cttyhack sh -i
	rc=0
	;;
*) echo "guest: unknown mode $mode"; rc=2 ;;
esac
echo "$rc" >/share/out/status
poweroff_now
