"""The Python `kubernetes` client's AppsV1Api against kubelab-apiserver:
create a Deployment, read it back with its defaults, see its controller
create a ReplicaSet and pods, scale it through the scale subresource, and
read a 404 for a missing one.

Usage: deployments.py KUBECONFIG
"""
import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def wait(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    apps = client.AppsV1Api()
    v1 = client.CoreV1Api()

    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment("default", body)
    assert created.metadata.generation == 1, created.metadata
    assert created.spec.strategy.type == "RollingUpdate", created.spec.strategy
    assert created.spec.strategy.rolling_update.max_surge == "25%"
    assert created.spec.revision_history_limit == 10
    assert created.spec.progress_deadline_seconds == 600

    read = apps.read_namespaced_deployment("py-web", "default")
    assert read.metadata.uid == created.metadata.uid
    listed = apps.list_namespaced_deployment("default")
    assert [d.metadata.name for d in listed.items] == ["py-web"], listed.items

    rs = wait("a ReplicaSet", lambda: apps.list_namespaced_replica_set("default", label_selector="app=py-web").items)
    assert rs[0].metadata.owner_references[0].kind == "Deployment"
    assert rs[0].metadata.name.startswith("py-web-")
    wait("2 pods", lambda: len(v1.list_namespaced_pod("default", label_selector="app=py-web").items) == 2)

    scale = apps.read_namespaced_deployment_scale("py-web", "default")
    assert scale.spec.replicas == 2 and scale.status.selector == "app=py-web", scale
    apps.patch_namespaced_deployment_scale("py-web", "default", {"spec": {"replicas": 4}})
    wait("4 pods", lambda: len(v1.list_namespaced_pod("default", label_selector="app=py-web").items) == 4)
    status = wait(
        "status of 4",
        lambda: (lambda d: d if d.status.replicas == 4 else None)(apps.read_namespaced_deployment_status("py-web", "default")),
    )
    assert status.status.observed_generation == status.metadata.generation

    try:
        apps.read_namespaced_deployment("missing", "default")
        raise AssertionError("expected a 404")
    except ApiException as e:
        assert e.status == 404, e

    print("python deployments: OK")


if __name__ == "__main__":
    main(sys.argv[1])
