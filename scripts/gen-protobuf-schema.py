#!/usr/bin/env python3
"""Regenerates the Kubernetes protobuf schema the apiserver decodes and
encodes `application/vnd.kubernetes.protobuf` with:

- apiserver/src/api/protobuf/kubernetes.desc.gz: a FileDescriptorSet of
  every `generated.proto` of k8s.io/api, apimachinery,
  apiextensions-apiserver and kube-aggregator (VERSION below), compiled by
  protoc (Debian's protobuf-compiler), gzipped.
- apiserver/src/api/protobuf/go-fields.json.gz: what the .proto files do
  not say about the Go types behind them, read from the same release's Go
  struct tags: which scalar fields are `omitempty` values (Go writes them to
  the wire even when zero, and leaves them out of JSON) rather than pointers
  (on the wire only when set, zero included), JSON names that differ from
  the proto field names (`$ref`, `x-kubernetes-*`), embedded structs
  (`json:",inline"`: `ProbeHandler`, `VolumeSource`), messages that wrap a
  Go named slice (`ExtraValue`), which JSON writes as a plain list; and
  the API group of each package (its `GroupName`).

    scripts/gen-protobuf-schema.py [GIT_DIR_PATTERN]

GIT_DIR_PATTERN is a path with `{repo}` in it (e.g.
`/work/.mirror/kubernetes+{repo}/repo`) naming local git directories of the
four repositories; without it, their release tarballs are downloaded from
GitHub.
"""
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "v0.33.1"  # the Go modules of Kubernetes v1.33.1
REPOS = ["api", "apimachinery", "apiextensions-apiserver", "kube-aggregator"]
OUT = Path(__file__).resolve().parent.parent / "apiserver/src/api/protobuf"

STRUCT = re.compile(r"^type (\w+) struct \{")
NAMED_SLICE = re.compile(r"^type (\w+) \[\]")
FIELD = re.compile(r"^\s+(?:(\w+)\s+)?(\S+)\s+`(.*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')


def extract(repo, pattern, dest):
    """The repository's .proto and non-test .go files, under k8s.io/<repo>."""
    root = dest / "k8s.io" / repo
    if pattern:
        git = pattern.format(repo=repo)
        tar = subprocess.run(
            ["git", "--git-dir", git, "archive", "--format=tar", VERSION],
            check=True, capture_output=True).stdout
    else:
        url = f"https://github.com/kubernetes/{repo}/archive/refs/tags/{VERSION}.tar.gz"
        with urllib.request.urlopen(url) as r:
            tar = gzip.decompress(r.read())
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            name = m.name if pattern else m.name.split("/", 1)[-1]
            keep = name.endswith(".proto") or (name.endswith(".go") and not name.endswith("_test.go"))
            if m.isfile() and keep and "/testapigroup/" not in name and "/testdata/" not in name:
                out = root / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(t.extractfile(m).read())


def go_fields(pkg_dir, package):
    """Per message of the package: scalar fields Go leaves out of JSON when
    zero, JSON names that differ from the proto names, slice wrappers."""
    messages = {}
    wrappers = []
    group = None
    for go in sorted(pkg_dir.glob("*.go")):
        if g := re.search(r'^const GroupName = "([^"]*)"', go.read_text(), re.M):
            group = g.group(1)
        current = None
        markers = []
        for line in go.read_text().splitlines():
            if line.startswith("//"):
                markers.append(line)
                continue
            if m := STRUCT.match(line):
                current = messages.setdefault(f"{package}.{m.group(1)}", {})
            elif m := NAMED_SLICE.match(line):
                if any("+protobuf.nullable=true" in x for x in markers):
                    wrappers.append(f"{package}.{m.group(1)}")
            elif line.startswith("}"):
                current = None
            elif current is not None and (m := FIELD.match(line)):
                tags = dict(TAG.findall(m.group(3)))
                if "protobuf" not in tags or "json" not in tags:
                    continue
                ptag = tags["protobuf"].split(",")
                if len(ptag) < 2 or not ptag[1].isdigit():
                    continue  # `protobuf:"-"`: not on the wire
                # Embedded structs may have no `name=`.
                names = [p[5:] for p in ptag if p.startswith("name=")]
                number, proto_name = int(ptag[1]), (names or [""])[0]
                json_name, *json_opts = tags["json"].split(",")
                # Scalars only matter here; which fields are scalars the
                # descriptors say.
                if not m.group(2).startswith("*") and "omitempty" in json_opts:
                    current.setdefault("omitZero", []).append(number)
                if not json_name and "inline" in json_opts:
                    # An embedded struct: JSON has its fields in the parent.
                    current.setdefault("inline", []).append(number)
                elif json_name and json_name != proto_name:
                    current.setdefault("json", {})[str(number)] = json_name
            if not line.startswith("//"):
                markers = []
    return {k: v for k, v in messages.items() if v}, wrappers, group


def main():
    pattern = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for repo in REPOS:
            extract(repo, pattern, tmp)
        protos = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("generated.proto"))
        desc = tmp / "kubernetes.desc"
        # protoc warns about every unused import of go-to-protobuf's files.
        run = subprocess.run(["protoc", f"-I{tmp}", f"--descriptor_set_out={desc}", *protos],
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(run.stderr)
        fields = {"messages": {}, "wrappers": [], "groups": {}}
        for proto in protos:
            text = (tmp / proto).read_text()
            package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
            messages, wrappers, group = go_fields((tmp / proto).parent, package)
            if group is not None:
                fields["groups"][package] = group
            fields["messages"].update(messages)
            fields["wrappers"] += wrappers
        OUT.mkdir(parents=True, exist_ok=True)
        # mtime 0: the same input gives the same bytes.
        (OUT / "kubernetes.desc.gz").write_bytes(gzip.compress(desc.read_bytes(), 9, mtime=0))
        data = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        (OUT / "go-fields.json.gz").write_bytes(gzip.compress(data, 9, mtime=0))
        print(f"{len(protos)} files, {len(fields['messages'])} messages with Go field notes")


if __name__ == "__main__":
    main()
