"""The Python `kubernetes` client's AutoscalingV1Api on a
HorizontalPodAutoscaler, with autoscaling/v2 read and patched through its
generic CustomObjectsApi (the client predates AutoscalingV2Api): made
through v1 with a CPU target, read through v2 as a CPU utilization metric; a memory metric and a behavior
added through v2 survive a v1 replace that changes the CPU target; list,
and delete through v1.

Usage: autoscaling_v1.py KUBECONFIG
"""
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.AutoscalingV1Api()
    objects = client.CustomObjectsApi()
    ns = "default"

    def read_v2():
        return objects.get_namespaced_custom_object("autoscaling", "v2", ns, "horizontalpodautoscalers", "py-hpa")

    made = v1.create_namespaced_horizontal_pod_autoscaler(ns, client.V1HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="py-hpa"),
        spec=client.V1HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V1CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="web"),
            max_replicas=5,
            target_cpu_utilization_percentage=50,
        ),
    ))
    assert made.api_version == "autoscaling/v1", made.api_version
    assert made.spec.min_replicas == 1, made.spec
    assert made.spec.target_cpu_utilization_percentage == 50, made.spec

    seen = read_v2()
    assert seen["apiVersion"] == "autoscaling/v2", seen
    assert seen["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
    ], seen["spec"]

    objects.patch_namespaced_custom_object("autoscaling", "v2", ns, "horizontalpodautoscalers", "py-hpa", {"spec": {
        "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
    }})

    current = v1.read_namespaced_horizontal_pod_autoscaler("py-hpa", ns)
    assert current.spec.target_cpu_utilization_percentage == 50, current.spec
    current.spec.target_cpu_utilization_percentage = 70
    replaced = v1.replace_namespaced_horizontal_pod_autoscaler("py-hpa", ns, current)
    assert replaced.spec.target_cpu_utilization_percentage == 70, replaced.spec

    after = read_v2()["spec"]
    by_name = {m["resource"]["name"]: m["resource"]["target"] for m in after["metrics"]}
    assert by_name["cpu"]["averageUtilization"] == 70, by_name
    assert by_name["memory"]["averageValue"] == "100Mi", by_name
    assert after["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 5, after["behavior"]

    names = [h.metadata.name for h in v1.list_namespaced_horizontal_pod_autoscaler(ns).items]
    assert "py-hpa" in names, names
    v1.delete_namespaced_horizontal_pod_autoscaler("py-hpa", ns)
    try:
        read_v2()
        raise AssertionError("py-hpa still there")
    except ApiException as e:
        assert e.status == 404, e
    print("python autoscaling/v1: OK")


if __name__ == "__main__":
    main(sys.argv[1])
