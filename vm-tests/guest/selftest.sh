#!/bin/sh
# The guest's self-test, without the agent: proves that this VM can enforce
# cgroup v2 limits at all (so a failing agent check points at the agent, not
# at the VM). Run with `vm-tests/run.sh --selftest`.
. /share/guest/lib.sh
CG=/sys/fs/cgroup

# cgroup v2 with the controllers the agent's v2 backend needs
if [ "$(stat -fc %T $CG)" != cgroup2fs ]; then
	fail cgroup2-mounted "/sys/fs/cgroup is $(stat -fc %T $CG), not cgroup2"
else
	missing=""
	for c in cpu memory pids cpuset io; do
		grep -qw "$c" $CG/cgroup.subtree_control || missing="$missing $c"
	done
	if [ -z "$missing" ]; then pass cgroup2-controllers
	else fail cgroup2-controllers "not enabled in the root's subtree_control:$missing"; fi
fi

# the 9p share carries the host's files
if [ -r /share/guest/lib.sh ] && [ -w /share/out ]; then pass share-9p
else fail share-9p "/share is not readable and writable"; fi

# a cgroup with cpu.max 20ms/100ms holds a busy loop at 0.2 cores
mkdir $CG/selftest-cpu
echo "20000 100000" >$CG/selftest-cpu/cpu.max
sh -c 'echo $$ >/sys/fs/cgroup/selftest-cpu/cgroup.procs; while :; do :; done' &
loop=$!
sleep 1
mc=$(measure_millicores $CG/selftest-cpu 5)
thr=$(cpu_stat $CG/selftest-cpu nr_throttled)
kill $loop; wait $loop 2>/dev/null
if within "$mc" 180 220 && [ "$thr" -gt 0 ]; then pass cpu-max-throttles "${mc}m used, nr_throttled $thr"
else fail cpu-max-throttles "busy loop used ${mc}m (want 200m +-10%), nr_throttled $thr"; fi
rmdir $CG/selftest-cpu

# a cgroup with memory.max 32M OOM-kills dd asking for a 96M buffer
mkdir $CG/selftest-mem
echo 32M >$CG/selftest-mem/memory.max
echo 0 >$CG/selftest-mem/memory.swap.max 2>/dev/null
(sh -c 'echo $$ >/sys/fs/cgroup/selftest-mem/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=96M count=1') 2>/dev/null
code=$?
ooms=$(mem_event $CG/selftest-mem oom_kill)
if [ "$code" = 137 ] && [ "${ooms:-0}" -ge 1 ]; then pass memory-max-oom-kills "exit $code, oom_kill $ooms"
else fail memory-max-oom-kills "dd exited $code, memory.events oom_kill ${ooms:-?}"; fi
rmdir $CG/selftest-mem

summary
