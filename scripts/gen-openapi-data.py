#!/usr/bin/env python3
"""Writes apiserver/src/api/openapi/upstream.json: the parts of kube-apiserver's
OpenAPI document that no Go type carries and k8s-openapi therefore lacks:
the shared query/path parameters (with their descriptions), the descriptions
of the `<Kind>List` types, and which kinds' DELETE answers with the object.

usage: gen-openapi-data.py SWAGGER_JSON > apiserver/src/api/openapi/upstream.json
SWAGGER_JSON: api/openapi-spec/swagger.json of the Kubernetes release the
project follows (k8s-openapi's version feature).
"""
import json
import sys

spec = json.load(open(sys.argv[1]))
inline = {}
delete_returns_object = set()
for path, item in spec["paths"].items():
    for method, op in item.items():
        if method == "parameters":
            continue
        for p in op.get("parameters", []):
            if p.get("name") in ("dryRun", "fieldValidation") and "$ref" not in p:
                inline[p["name"]] = p
        gvk = op.get("x-kubernetes-group-version-kind")
        if method == "delete" and op.get("x-kubernetes-action") == "delete" and gvk and path.endswith("{name}"):
            ref = op["responses"]["200"]["schema"]["$ref"]
            if not ref.endswith(".Status"):
                delete_returns_object.add(gvk["kind"])

lists = {}
for name, d in spec["definitions"].items():
    gvks = d.get("x-kubernetes-group-version-kind", [])
    if name.endswith("List") and gvks and "items" in d.get("properties", {}):
        lists[name] = {
            "description": d.get("description", ""),
            "items": d["properties"]["items"].get("description", ""),
        }

json.dump(
    {
        "parameters": spec["parameters"],
        "inlineParameters": inline,
        "lists": lists,
        "deleteReturnsObject": sorted(delete_returns_object),
    },
    sys.stdout,
    indent=1,
    sort_keys=True,
)
sys.stdout.write("\n")
