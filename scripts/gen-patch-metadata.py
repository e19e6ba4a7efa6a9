#!/usr/bin/env python3
"""Regenerates apiserver/src/patch_metadata/kubernetes.json: the patch and
merge metadata of every definition in Kubernetes' OpenAPI v2 document
(x-kubernetes-patch-strategy, -patch-merge-key, -list-type, -list-map-keys,
-map-type, and which definition each field holds), which k8s-openapi's
types do not carry.

    scripts/gen-patch-metadata.py [SWAGGER_JSON]

Without an argument the document of the Kubernetes release k8s-openapi is
built for (VERSION below) is downloaded from GitHub.
"""
import json
import sys
import urllib.request
from pathlib import Path

VERSION = "v1.33.1"
URL = f"https://raw.githubusercontent.com/kubernetes/kubernetes/{VERSION}/api/openapi-spec/swagger.json"
OUT = Path(__file__).resolve().parent.parent / "apiserver/src/patch_metadata/kubernetes.json"
PREFIX = "#/definitions/"

# Definitions that are one JSON scalar on the wire.
SCALAR_FORMATS = {"int-or-string", "date-time"}


def ref(schema):
    r = schema.get("$ref", "")
    return r[len(PREFIX):] if r.startswith(PREFIX) else ""


def field(prop):
    out = {}
    if prop.get("type") == "array":
        out["list"] = ref(prop.get("items", {}))
    elif "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
        value = prop["additionalProperties"]
        # A map of lists is atomic per value: its values are left untyped.
        out["map"] = ref(value)
    elif ref(prop):
        out["ref"] = ref(prop)
    for ext, key in [
        ("x-kubernetes-patch-strategy", "patchStrategy"),
        ("x-kubernetes-patch-merge-key", "patchMergeKey"),
        ("x-kubernetes-list-type", "listType"),
        ("x-kubernetes-list-map-keys", "listMapKeys"),
        ("x-kubernetes-map-type", "mapType"),
    ]:
        if ext in prop:
            out[key] = prop[ext]
    return out


def definition(schema):
    if "properties" not in schema:
        if schema.get("type") == "string" or schema.get("format") in SCALAR_FORMATS:
            return {"scalar": True}
        return {"untyped": True}
    out = {}
    if "x-kubernetes-map-type" in schema:
        out["mapType"] = schema["x-kubernetes-map-type"]
    fields = {}
    for name, prop in sorted(schema["properties"].items()):
        f = field(prop)
        if f:
            fields[name] = f
    out["fields"] = fields
    return out


def main():
    if len(sys.argv) > 1:
        doc = json.loads(Path(sys.argv[1]).read_text())
    else:
        with urllib.request.urlopen(URL) as r:
            doc = json.load(r)
    kinds = {}
    definitions = {}
    for name, schema in sorted(doc["definitions"].items()):
        definitions[name] = definition(schema)
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            av = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            # Shared list/option kinds (DeleteOptions, WatchEvent) name every
            # group; only a kind's own definition is kept.
            if name.startswith("io.k8s.apimachinery.pkg.apis.meta."):
                continue
            kinds[f"{av}/{gvk['kind']}"] = name
    lines = ["{", f'"source": {json.dumps("kubernetes " + VERSION + " api/openapi-spec/swagger.json")},']
    lines.append('"kinds": {')
    lines.append(",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(kinds.items())))
    lines.append("},")
    lines.append('"definitions": {')
    lines.append(
        ",\n".join(
            f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in definitions.items()
        )
    )
    lines.append("}")
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{OUT}: {len(definitions)} definitions, {len(kinds)} kinds")


if __name__ == "__main__":
    main()
