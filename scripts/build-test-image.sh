#!/usr/bin/env bash
# Builds the test image: an OCI image archive (OCI layout in a tar) of Debian's
# busybox-static, importable as busybox:latest (`kubelab-agent image import`,
# `ctr import`, `skopeo copy oci-archive:`).
#
# Usage: build-test-image.sh [options] OUT.tar
#   --add SRC:DEST[:MODE]  copy SRC (file or directory) into the image at DEST,
#                    optionally chmod MODE (e.g. 0755); repeatable
#   --ref NAME:TAG   image name (default busybox:latest)
#   --cmd JSON       image Cmd as a JSON array (default ["sh"])
#   --busybox PATH   busybox binary to use (default /bin/busybox; must be static)
#   KUBELAB_TEST_IMAGE_ADD="SRC:DEST[:MODE] ..."  same as --add, from the environment
#
# The rootfs: /bin/busybox and a relative symlink for every applet at its
# usual place (`busybox --list-full`), /etc/passwd and /etc/group (root,
# nobody 65534), /tmp (1777), /root, /var/www, and empty mount points
# /proc /sys /dev. One gzip layer; sorted entries, mtime 0, owner 0:0, so the
# same inputs give the same digests.
# Needs: bash, coreutils, tar, gzip, jq.
set -euo pipefail
umask 022

die() { echo "build-test-image: $*" >&2; exit 1; }

ref="busybox:latest"
cmd='["sh"]'
busybox=/bin/busybox
adds=()
read -r -a env_adds <<<"${KUBELAB_TEST_IMAGE_ADD:-}"
adds+=("${env_adds[@]}")
out=""
while (($#)); do
    case "$1" in
        --add) [[ $# -ge 2 ]] || die "--add needs SRC:DEST"; adds+=("$2"); shift 2 ;;
        --ref) [[ $# -ge 2 ]] || die "--ref needs NAME:TAG"; ref="$2"; shift 2 ;;
        --cmd) [[ $# -ge 2 ]] || die "--cmd needs a JSON array"; cmd="$2"; shift 2 ;;
        --busybox) [[ $# -ge 2 ]] || die "--busybox needs a path"; busybox="$2"; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [[ -z "$out" ]] || die "only one output file"; out="$1"; shift ;;
    esac
done
[[ -n "$out" ]] || die "usage: $0 [--add SRC:DEST]... [--ref NAME:TAG] [--cmd JSON] OUT.tar"
[[ -x "$busybox" ]] || die "$busybox not found (apt-get install busybox-static)"
jq -e 'type == "array" and all(type == "string")' <<<"$cmd" >/dev/null || die "--cmd must be a JSON array of strings"
for tool in jq tar gzip sha256sum; do command -v "$tool" >/dev/null || die "$tool is required"; done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
layout="$work/layout"
mkdir -p "$root" "$layout/blobs/sha256"

# --- rootfs ---
install -d -m 0755 "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,var/www,proc,sys,dev}
chmod 0700 "$root/root"
install -d -m 1777 "$root/tmp"
install -m 0755 "$busybox" "$root/bin/busybox"
while read -r applet; do
    [[ "$applet" == bin/busybox || -z "$applet" ]] && continue
    dir=$(dirname "$applet")
    # Relative link from the applet's directory back to /bin/busybox.
    if [[ "$dir" == bin ]]; then
        target=busybox
    else
        target="$(sed 's|[^/][^/]*|..|g' <<<"$dir")/bin/busybox"
    fi
    mkdir -p "$root/$dir"
    ln -sfn "$target" "$root/$applet"
done < <("$busybox" --list-full)
# Any applet `--list-full` did not place still gets /bin/<name>.
declare -A placed=()
while read -r applet; do placed["${applet##*/}"]=1; done < <("$busybox" --list-full)
while read -r name; do
    [[ -n "$name" && -z "${placed[$name]:-}" ]] && ln -s busybox "$root/bin/$name"
done < <("$busybox" --list)

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

for spec in "${adds[@]}"; do
    [[ "$spec" == *:* ]] || die "--add $spec: expected SRC:DEST[:MODE]"
    src="${spec%%:*}"
    dest="${spec#*:}"
    mode=""
    if [[ "$dest" == *:* ]]; then
        mode="${dest#*:}"
        dest="${dest%%:*}"
        [[ "$mode" =~ ^[0-7]{3,4}$ ]] || die "--add $spec: MODE must be octal like 0755"
    fi
    [[ -e "$src" ]] || die "--add $spec: $src does not exist"
    dest="/${dest#/}"
    [[ "$dest" != */../* && "$dest" != */.. ]] || die "--add $spec: DEST must not contain .."
    mkdir -p "$(dirname "$root$dest")"
    if [[ -d "$src" ]]; then
        mkdir -p "$root$dest"
        cp -a "$src/." "$root$dest/"
    else
        cp -a "$src" "$root$dest"
    fi
    [[ -z "$mode" ]] || chmod "$mode" "$root$dest"
done

# --- layer ---
layer_tar="$work/layer.tar"
(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) |
    tar -C "$root" --no-recursion --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -cf "$layer_tar" -T -
diff_id="sha256:$(sha256sum "$layer_tar" | cut -d' ' -f1)"
gzip -n -6 <"$layer_tar" >"$work/layer.tar.gz"

# Stores a file as a blob; prints "<digest> <size>".
add_blob() {
    local hex size
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    cp "$1" "$layout/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}
read -r layer_digest layer_size < <(add_blob "$work/layer.tar.gz")

# --- config, manifest, index ---
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
esac
jq -cn --arg arch "$arch" --arg diff_id "$diff_id" --argjson cmd "$cmd" '{
    created: "1970-01-01T00:00:00Z",
    architecture: $arch,
    os: "linux",
    config: {
        Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        Cmd: $cmd,
        WorkingDir: "/"
    },
    rootfs: {type: "layers", diff_ids: [$diff_id]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: "scripts/build-test-image.sh"}]
}' | tr -d '\n' >"$work/config.json"
read -r config_digest config_size < <(add_blob "$work/config.json")

jq -cn --arg cd "$config_digest" --argjson cs "$config_size" \
    --arg ld "$layer_digest" --argjson ls "$layer_size" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]
}' | tr -d '\n' >"$work/manifest.json"
read -r manifest_digest manifest_size < <(add_blob "$work/manifest.json")

# Full name for containerd-style importers; OCI's ref.name as given.
name="$ref"
case "${ref%%/*}" in
    *.*|*:*|localhost) [[ "$ref" == */* ]] || name="docker.io/library/$ref" ;;
    *) if [[ "$ref" == */* ]]; then name="docker.io/$ref"; else name="docker.io/library/$ref"; fi ;;
esac
[[ "${name##*/}" == *:* || "$name" == *@* ]] || name="$name:latest"
jq -cn --arg md "$manifest_digest" --argjson ms "$manifest_size" \
    --arg ref "$ref" --arg name "$name" --arg arch "$arch" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: $md,
        size: $ms,
        annotations: {
            "io.containerd.image.name": $name,
            "org.opencontainers.image.ref.name": $ref
        },
        platform: {architecture: $arch, os: "linux"}
    }]
}' >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

# --- archive ---
mkdir -p "$(dirname "$out")"
tmp_out="$out.tmp.$$"
(cd "$layout" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) |
    tar -C "$layout" --no-recursion --format=ustar \
        --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -cf "$tmp_out" -T -
mv -f "$tmp_out" "$out"
echo "$out: $name (manifest $manifest_digest, layer $layer_digest)" >&2
