# Shared by the guest's check scripts: result lines and the summary.
# Each check prints exactly one line: `PASS name`, `FAIL name: why` or
# `SKIP name: why`.

PASSED=0
FAILED=0
SKIPPED=0

pass() { # pass NAME [what was measured]
	PASSED=$((PASSED + 1))
	echo "PASS $1"
	[ -z "${2:-}" ] || note "$2"
}
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "SKIP $1: $2"; }
note() { echo "  .. $*"; }

# "N passed, N failed, N skipped" alone on a line, then the status for init.sh.
summary() {
	echo "vm-tests: $PASSED passed, $FAILED failed, $SKIPPED skipped"
	[ "$FAILED" = 0 ]
}

# usage_usec of a cgroup v2 directory
usage_usec() { awk '$1 == "usage_usec" { print $2 }' "$1/cpu.stat"; }
cpu_stat() { awk -v k="$2" '$1 == k { print $2 }' "$1/cpu.stat"; }
mem_event() { awk -v k="$2" '$1 == k { print $2 }' "$1/memory.events"; }

# Fraction of one core a cgroup used over SECS seconds, in thousandths
# ("millicores"), from cpu.stat's usage_usec and the guest's monotonic clock.
measure_millicores() {
	cg=$1 secs=$2
	u0=$(usage_usec "$cg") t0=$(cut -d' ' -f1 /proc/uptime)
	sleep "$secs"
	u1=$(usage_usec "$cg") t1=$(cut -d' ' -f1 /proc/uptime)
	awk -v u0="$u0" -v u1="$u1" -v t0="$t0" -v t1="$t1" \
		'BEGIN { printf "%d", (u1 - u0) / ((t1 - t0) * 1000) }'
}

# within VALUE LOW HIGH (integers)
within() { [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
