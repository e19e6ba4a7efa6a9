"""The Python `kubernetes` client reads EndpointSlices (discovery.k8s.io/v1)
and Endpoints: the `web` service's slice, filled by the endpoints
controller, and the `kubernetes` service's.

Usage: endpoint_slices.py KUBECONFIG
"""
import sys
import time

from kubernetes import client, config


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    discovery = client.DiscoveryV1Api()
    core = client.CoreV1Api()

    deadline = time.time() + 10
    while True:
        slices = discovery.list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=web").items
        if slices and slices[0].endpoints:
            break
        assert time.time() < deadline, slices
        time.sleep(0.1)
    web = slices[0]
    assert web.address_type == "IPv4", web
    assert web.metadata.name.startswith("web-"), web.metadata.name
    assert web.metadata.labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert web.metadata.owner_references[0].kind == "Service"
    assert [(p.name, p.port, p.protocol) for p in web.ports] == [("80-http", 8080, "TCP")], web.ports
    ep = web.endpoints[0]
    assert ep.addresses == ["10.244.0.10"], ep
    assert (ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating) == (True, True, False)
    assert ep.target_ref.name == "web-0" and ep.node_name == "node1", ep

    everywhere = discovery.list_endpoint_slice_for_all_namespaces()
    names = sorted(s.metadata.name for s in everywhere.items)
    assert "kubernetes" in names, names
    k8s = discovery.read_namespaced_endpoint_slice("kubernetes", "default")
    assert k8s.endpoints[0].addresses == ["127.0.0.1"], k8s

    endpoints = core.read_namespaced_endpoints("web", "default")
    assert [a.ip for a in endpoints.subsets[0].addresses] == ["10.244.0.10"], endpoints
    print("endpoint slices: OK")


if __name__ == "__main__":
    main(sys.argv[1])
