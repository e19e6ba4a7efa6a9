#!/usr/bin/env bash
# Boot a Debian 12 guest on cgroup v2 under QEMU, run kubelab-agent there and
# check that limits bite for real. One command: `sudo vm-tests/run.sh`.
#
# The guest is built only from Debian packages (kernel, minimal root, a busybox
# initramfs), cached under target/vm-cache, and booted with `snapshot=on` so a
# run never changes it. Nothing is installed on the host except mmdebstrap
# (when missing): QEMU and the kernel are downloaded and unpacked into the
# cache, because installing qemu-system-x86 would remove the host's qemu-utils.
#
# The project's binaries, the test image and vm-tests/guest/ go into the guest
# over 9p; the guest prints `PASS|FAIL|SKIP name` lines on the serial console,
# writes its exit status back into the share and powers off. This script exits
# with that status.
set -Eeuo pipefail
trap 'echo "[vm] error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

usage() {
	cat <<'EOF'
usage: sudo vm-tests/run.sh [options]

  --release        share release binaries (cargo build --release --workspace)
  --no-build       don't run cargo; share what target/ already holds
  --selftest       run only the guest self-test (raw cgroup v2 limits, no agent)
  --build-only     build (or refresh) the cached guest and stop
  --rebuild        throw the cached guest away and build it again
  --shell          boot the guest to an interactive shell instead of the checks
  --timeout SECS   give up on the guest after SECS seconds (default 900)
  -h, --help       this text

environment:
  KUBELAB_VM_CACHE   cache directory (default: <repo>/target/vm-cache)
  KUBELAB_VM_ACCEL   kvm|tcg (default: kvm when the host really has it)
  KUBELAB_VM_MEM     guest memory in MiB (default 1024)
  KUBELAB_VM_TEST_IMAGE  an OCI archive to import instead of building one
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VMT="$REPO/vm-tests"
CACHE=${KUBELAB_VM_CACHE:-$REPO/target/vm-cache}
MEM=${KUBELAB_VM_MEM:-1024}
PROFILE=debug
BUILD=1
MODE=checks
BUILD_ONLY=0
REBUILD=0
TIMEOUT=900

while [ $# -gt 0 ]; do
	case "$1" in
	--release) PROFILE=release ;;
	--no-build) BUILD=0 ;;
	--selftest) MODE=selftest ;;
	--shell) MODE=shell ;;
	--build-only) BUILD_ONLY=1 ;;
	--rebuild) REBUILD=1 ;;
	--timeout) TIMEOUT=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

# Bump when the guest's recipe changes: a cached guest with another key is rebuilt.
GUEST_RECIPE=5
SUITE=bookworm
ROOT_PACKAGES=kmod,iptables,nftables,iproute2,procps,busybox-static,jq,curl,util-linux,runc
# Modules the initramfs needs to reach the root disk and the 9p share.
INITRAMFS_MODULES="virtio_pci virtio_blk crc32c_generic ext4 9pnet_virtio 9p"

T0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
if [ -t 2 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '%s[vm %6ss]%s %s\n' "$BOLD" "$(since "$T0")" "$PLAIN" "$*" >&2; }
die() { printf '[vm] error: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (sudo vm-tests/run.sh): building the guest root needs it"

# apt-get download into the current directory; "_apt" can't write to most
# caches, so download as root without apt's sandbox user.
apt_download() { apt-get -q -o APT::Sandbox::User=root download "$@"; }

ensure_apt_lists() {
	if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
		say "apt lists are empty: apt-get update"
		apt-get -q update
	fi
}

# The kernel package behind linux-image-amd64 and its version, e.g.
# "linux-image-6.1.0-56-amd64 6.1.192-2": a new upload means a new guest.
# Empty (not an error) when apt's lists are empty: setup_guest then updates them.
kernel_package() {
	apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
		sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -1 || true
}

# ---------------------------------------------------------------- QEMU
QEMU=""
QEMU_ARGS_FW=()
setup_qemu() {
	if command -v qemu-system-x86_64 >/dev/null; then
		QEMU=$(command -v qemu-system-x86_64)
		return
	fi
	local dir="$CACHE/qemu"
	if [ ! -x "$dir/root/usr/bin/qemu-system-x86_64" ]; then
		ensure_apt_lists
		say "downloading QEMU (qemu-system-x86 and the libraries the host lacks) into $dir"
		rm -rf "$dir" && mkdir -p "$dir/debs"
		# What apt would install, without installing it: the simulation lists
		# the packages missing on this host. It runs against a copy of dpkg's
		# status without any qemu-* package, because a host may carry a newer
		# qemu-utils (e.g. from backports) that Breaks Debian's own
		# qemu-system-common; those parts come into the private copy instead.
		local pkgs status="$dir/dpkg-status"
		awk -v RS= -v ORS='\n\n' '!/^Package: qemu-/' /var/lib/dpkg/status >"$status"
		pkgs=$(apt-get -s -o Debug::NoLocking=1 -o Dir::State::status="$status" \
			install --no-install-recommends qemu-system-x86 |
			awk '/^Inst /{print $2}')
		[ -n "$pkgs" ] || die "apt found nothing to download for qemu-system-x86"
		# shellcheck disable=SC2086
		(cd "$dir/debs" && apt_download $pkgs)
		say "unpacking QEMU"
		for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$dir/root"; done
	fi
	QEMU="$dir/root/usr/bin/qemu-system-x86_64"
	export LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu:$dir/root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	# Firmware (SeaBIOS, option ROMs) lives in several unpacked dirs.
	for fw in usr/share/qemu usr/share/seabios usr/lib/ipxe/qemu; do
		[ -d "$dir/root/$fw" ] && QEMU_ARGS_FW+=(-L "$dir/root/$fw")
	done
	"$QEMU" --version >/dev/null || die "unpacked QEMU does not run: $QEMU"
}

# ---------------------------------------------------------------- guest
KVER=""
guest_key() {
	echo "recipe=$GUEST_RECIPE suite=$SUITE kernel=$1 packages=$ROOT_PACKAGES" \
		"initramfs=$INITRAMFS_MODULES init=$(sha256sum "$VMT/guest/initramfs-init" | cut -c1-16)"
}

build_kernel() {
	local kpkg=$1 dir="$CACHE/guest/kernel"
	rm -rf "$dir" && mkdir -p "$dir"
	say "downloading kernel $kpkg"
	(cd "$dir" && apt_download "$kpkg")
	say "unpacking kernel"
	dpkg-deb -x "$dir"/*.deb "$dir/root"
	rm "$dir"/*.deb
	KVER=$(ls "$dir/root/lib/modules")
	# QEMU boots an uncompressed kernel directly through its PVH entry point,
	# which saves the decompression (seconds under TCG). The bzImage holds an
	# xz stream: find its magic and decompress from there.
	local vmlinuz="$dir/root/boot/vmlinuz-$KVER" off
	off=$(LC_ALL=C grep -m1 -aboP '\xfd7zXZ\x00' "$vmlinuz" | cut -d: -f1)
	[ -n "$off" ] || die "no xz stream in $vmlinuz"
	tail -c +"$((off + 1))" "$vmlinuz" | xz -dc --single-stream >"$dir/vmlinux" 2>/dev/null || true
	local file_magic
	file_magic=$(head -c 4 "$dir/vmlinux" | od -An -c | tr -d ' ')
	[ "$file_magic" = '177ELF' ] || die "decompressed kernel is not an ELF file"
	echo "$KVER" >"$dir/version"
}

build_initramfs() {
	local dir="$CACHE/guest" kroot="$CACHE/guest/kernel/root" ird
	ird=$(mktemp -d "$CACHE/initramfs.XXXX")
	say "building initramfs ($INITRAMFS_MODULES)"
	# The unpacked package has no modules.dep: make one to resolve load order.
	busybox depmod -b "$kroot" "$KVER"
	local moddir="$kroot/lib/modules/$KVER" order=() seen=" "
	resolve() { # depth-first: dependencies before the module itself
		local name=$1 line path deps d
		line=$(grep -E "(^|/)${name//_/[_-]}\.ko:" "$moddir/modules.dep" | head -1) ||
			die "module $name not in the kernel package"
		path=${line%%:*}
		deps=${line#*:}
		case "$seen" in *" $path "*) return ;; esac
		seen+="$path "
		for d in $deps; do resolve "$(basename "$d" .ko)"; done
		order+=("$path")
	}
	for m in $INITRAMFS_MODULES; do resolve "$m"; done
	mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
	cp /bin/busybox "$ird/bin/busybox"
	ln -s busybox "$ird/bin/sh"
	: >"$ird/modules/order"
	for p in "${order[@]}"; do
		cp "$moddir/$p" "$ird/modules/"
		basename "$p" >>"$ird/modules/order"
	done
	install -m 0755 "$VMT/guest/initramfs-init" "$ird/init"
	(cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$dir/initramfs.img")
	rm -rf "$ird"
}

build_root() {
	local dir="$CACHE/guest" kroot="$CACHE/guest/kernel/root" rootdir="$CACHE/rootfs"
	rm -rf "$rootdir"
	if ! command -v mmdebstrap >/dev/null; then
		ensure_apt_lists
		say "installing mmdebstrap on the host (it only builds root directories)"
		DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends mmdebstrap
	fi
	say "building the Debian root with mmdebstrap ($ROOT_PACKAGES)"
	# Modules go into the root too (netfilter, veth, bridge ...), minus drivers
	# a VM never loads, so the image stays small.
	mmdebstrap --mode=root --variant=minbase --include="$ROOT_PACKAGES" \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--customize-hook="tar -C '$kroot' -cf - \
			--exclude=kernel/sound --exclude=kernel/drivers/gpu --exclude=kernel/drivers/media \
			--exclude=kernel/drivers/net/wireless --exclude=kernel/drivers/net/ethernet \
			--exclude=kernel/drivers/infiniband --exclude=kernel/drivers/usb \
			--exclude=kernel/drivers/iio --exclude=kernel/drivers/staging \
			--exclude=kernel/drivers/hid --exclude=kernel/drivers/input \
			--exclude=kernel/drivers/bluetooth --exclude=kernel/net/wireless \
			--exclude=kernel/net/mac80211 --exclude=kernel/net/bluetooth \
			lib/modules | tar -C \"\$1\" -xf -" \
		--customize-hook="chroot \"\$1\" depmod -a '$KVER'" \
		--customize-hook='echo vm >"$1/etc/hostname"; printf "127.0.0.1 localhost vm\n::1 localhost\n" >"$1/etc/hosts"' \
		--customize-hook='mkdir -p "$1/share" "$1/var/lib/kubelab" "$1/etc/kubelab/manifests"' \
		--customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
		"$SUITE" "$rootdir" </dev/null 2>&1 | sed -u 's/^/    /'
	say "making the ext4 disk image (mke2fs -d)"
	rm -f "$dir/root.img"
	mke2fs -q -t ext4 -L kubelab-root -d "$rootdir" "$dir/root.img" 2G >/dev/null
	rm -rf "$rootdir"
}

setup_guest() {
	mkdir -p "$CACHE"
	local kernel key
	kernel=$(kernel_package)
	if [ -z "$kernel" ]; then
		ensure_apt_lists
		kernel=$(kernel_package)
		[ -n "$kernel" ] || die "apt knows no linux-image-amd64 package"
	fi
	key=$(guest_key "${kernel/ //}")
	if [ "$REBUILD" = 1 ] || [ "$(cat "$CACHE/guest/key" 2>/dev/null)" != "$key" ]; then
		local t
		t=$(date +%s.%N)
		say "building the guest into $CACHE/guest (cached afterwards)"
		rm -rf "$CACHE/guest"
		mkdir -p "$CACHE/guest"
		build_kernel "${kernel%% *}"
		build_initramfs
		build_root
		# The unpacked package (≈ 500 MB) was only needed for the modules.
		rm -rf "$CACHE/guest/kernel/root"
		echo "$key" >"$CACHE/guest/key"
		say "guest built in $(since "$t") s"
	else
		say "guest cached in $CACHE/guest"
	fi
	KVER=$(cat "$CACHE/guest/kernel/version")
}

# ---------------------------------------------------------------- share
SHARE=""
setup_share() {
	SHARE="$CACHE/share"
	rm -rf "$SHARE" && mkdir -p "$SHARE/bin" "$SHARE/out"
	if [ "$MODE" != selftest ] && [ "$BUILD" = 1 ]; then
		local flags=(build --workspace --bins)
		[ "$PROFILE" = release ] && flags+=(--release)
		say "cargo ${flags[*]}"
		local t
		t=$(date +%s.%N)
		if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
			# Build as the user who owns the tree, not as root.
			runuser -u "$SUDO_USER" -- bash -lc "cd '$REPO' && cargo ${flags[*]}"
		else
			(cd "$REPO" && cargo "${flags[@]}")
		fi
		say "cargo done in $(since "$t") s"
	fi
	# Every executable the workspace builds (agent, apiserver, CNI plugins).
	local bindir="$REPO/target/$PROFILE" n=0
	if [ -d "$bindir" ]; then
		for f in "$bindir"/*; do
			[ -f "$f" ] && [ -x "$f" ] || continue
			ln -f "$f" "$SHARE/bin/" 2>/dev/null || cp "$f" "$SHARE/bin/"
			n=$((n + 1))
		done
	fi
	say "sharing $n binaries from target/$PROFILE"
	cp -r "$VMT/guest" "$SHARE/guest"
	if [ "$MODE" = checks ]; then
		if [ -n "${KUBELAB_VM_TEST_IMAGE:-}" ]; then
			cp "$KUBELAB_VM_TEST_IMAGE" "$SHARE/busybox.tar"
		elif [ -x "$REPO/scripts/build-test-image.sh" ]; then
			say "building the test image (scripts/build-test-image.sh)"
			"$REPO/scripts/build-test-image.sh" "$SHARE/busybox.tar" ||
				say "scripts/build-test-image.sh failed: the guest will report it"
		else
			say "scripts/build-test-image.sh is missing: the guest will report it"
		fi
	fi
	echo "$MODE" >"$SHARE/mode"
}

# ---------------------------------------------------------------- boot
# Copy the console to stdout and LOG, noting when the guest's init starts and
# when its checks end (seconds since T) in LOG.times.
stamp_console() {
	local t=$1 log=$2 line
	: >"$log"
	: >"$log.times"
	while IFS= read -r line; do
		line=${line%$'\r'}
		printf '%s\n' "$line"
		printf '%s\n' "$line" >>"$log"
		case "$line" in
		"guest: up "*) echo "boot=$(since "$t")" >>"$log.times" ;;
		"vm-tests: "*) echo "checks=$(awk -v a="$(sed -n 's/^boot=//p' "$log.times")" -v b="$(since "$t")" 'BEGIN { printf "%.1f", b - a }')" >>"$log.times" ;;
		esac
	done
}

boot() {
	local accel=${KUBELAB_VM_ACCEL:-}
	if [ -z "$accel" ]; then
		# /dev/kvm alone is not enough: on these hosts it belongs to kvm_pvm,
		# which can't run a stock kernel.
		if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
			accel=kvm
		else
			accel=tcg
		fi
	fi
	local cpu=max
	[ "$accel" = kvm ] && cpu=host
	local console=(-serial stdio)
	local quiet="quiet loglevel=3"
	if [ "$MODE" = shell ]; then
		# Ctrl-C goes to the guest; Ctrl-A x quits QEMU.
		console=(-serial mon:stdio)
		quiet=""
	fi
	local log="$CACHE/console.log"
	say "booting ($accel, -smp 1, ${MEM} MiB, kernel $KVER); console below, also in $log"
	local t rc=0
	t=$(date +%s.%N)
	local cmd=(
		"$QEMU" "${QEMU_ARGS_FW[@]}"
		-accel "$accel" -cpu "$cpu" -smp 1 -m "$MEM"
		-machine q35 -nodefaults -no-user-config -display none -vga none
		-no-reboot -net none
		"${console[@]}"
		-kernel "$CACHE/guest/kernel/vmlinux"
		-initrd "$CACHE/guest/initramfs.img"
		-append "console=ttyS0 $quiet panic=-1 root=/dev/vda rw kubelab.mode=$MODE"
		-drive "file=$CACHE/guest/root.img,format=raw,if=virtio,snapshot=on"
		-fsdev "local,id=share,path=$SHARE,security_model=none"
		-device "virtio-9p-pci,fsdev=share,mount_tag=share"
	)
	if [ "$MODE" = shell ]; then
		"${cmd[@]}" || rc=$?
		return $rc
	fi
	timeout --foreground "$TIMEOUT" "${cmd[@]}" </dev/null 2>&1 | stamp_console "$t" "$log" || rc=${PIPESTATUS[0]}
	local up checks
	up=$(sed -n 's/^boot=//p' "$log.times")
	checks=$(sed -n 's/^checks=//p' "$log.times")
	say "timings: boot (QEMU start to the guest's init) ${up:-?} s, checks ${checks:-?} s, guest total $(since "$t") s"
	if [ "$rc" = 124 ]; then
		echo "FAIL vm: guest did not power off within ${TIMEOUT}s" >&2
		return 1
	fi
	[ "$rc" = 0 ] || { echo "FAIL vm: qemu exited with $rc" >&2; return 1; }
	if [ ! -f "$SHARE/out/status" ]; then
		echo "FAIL vm: the guest wrote no exit status (crashed before the checks finished?)" >&2
		return 1
	fi
	return "$(cat "$SHARE/out/status")"
}

setup_qemu
setup_guest
[ "$BUILD_ONLY" = 1 ] && { say "guest ready"; exit 0; }
setup_share
rc=0
boot || rc=$?
say "total $(since "$T0") s, exit status $rc"
exit "$rc"
