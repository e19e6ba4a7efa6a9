"""The Python `kubernetes` client against kubelab-apiserver: create, list
with selectors, watch from a resourceVersion, patch, delete, and a 404.

Usage: client_workflow.py KUBECONFIG
"""
import sys
import threading

from kubernetes import client, config, watch


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "py-web", "labels": {"env": "dev", "app": "py"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.35", "command": ["sleep", "3600"]}]},
    }
    created = v1.create_namespaced_pod("default", pod)
    assert len(created.metadata.uid) == 36, created.metadata.uid
    assert created.status.phase == "Pending", created.status
    assert created.spec.restart_policy == "Always"

    dev = v1.list_namespaced_pod("default", label_selector="env=dev")
    assert [p.metadata.name for p in dev.items] == ["py-web"], dev.items
    assert v1.list_namespaced_pod("default", label_selector="env in (prod)").items == []
    assert len(v1.list_pod_for_all_namespaces(field_selector="metadata.name=py-web").items) == 1
    assert v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=nowhere").items == []

    # Watch from the list's resourceVersion while another thread writes.
    rv = dev.metadata.resource_version

    def writer():
        v1.patch_namespaced_pod("py-web", "default", {"metadata": {"labels": {"stage": "patched"}}})
        v1.delete_namespaced_pod("py-web", "default")

    threading.Timer(0.5, writer).start()
    seen = []
    w = watch.Watch()
    for event in w.stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=20):
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, (obj.metadata.labels or {}).get("stage")))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("MODIFIED", "py-web", "patched"), ("DELETED", "py-web", "patched")], seen

    try:
        v1.read_namespaced_pod("py-web", "default")
        raise AssertionError("pod still exists after delete")
    except client.ApiException as e:
        assert e.status == 404, e
        assert '"reason":"NotFound"' in e.body, e.body

    # A watch from "0" starts with the current objects as ADDED.
    v1.create_namespaced_config_map("default", {"metadata": {"name": "py-cm"}, "data": {"k": "v"}})
    w = watch.Watch()
    names = []
    for event in w.stream(v1.list_namespaced_config_map, "default", resource_version="0", timeout_seconds=5):
        assert event["type"] == "ADDED", event["type"]
        names.append(event["object"].metadata.name)
        if event["object"].metadata.name == "py-cm":
            w.stop()
    assert "py-cm" in names, names
    print("python client workflow: OK")


if __name__ == "__main__":
    main(sys.argv[1])
