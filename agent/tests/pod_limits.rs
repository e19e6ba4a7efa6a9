//! Pods too big to work on are refused with an error naming the file and the
//! field, and the rest of the node carries on; a pod deleted while its many
//! containers start does not wait for all of them.

mod common;

use std::time::Duration;

use common::TestNode;
use serde_json::Value;

fn events(node: &TestNode) -> Vec<Value> {
    node.get_json("/events")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn refusal(node: &TestNode, file: &str) -> String {
    node.wait_for(
        &format!("the refusal of {file}"),
        Duration::from_secs(20),
        |n| {
            events(n)
                .into_iter()
                .filter(|e| e["reason"] == "FailedToCreatePod")
                .filter_map(|e| e["message"].as_str().map(String::from))
                .find(|m| m.contains(file))
        },
    )
}

#[test]
fn oversized_manifests_and_pods_of_too_many_containers_are_refused() {
    let node = TestNode::start();
    // 30 MB: refused by its size, never decoded.
    let big = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\n  annotations:\n    pad: \"{}\"\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
        "x".repeat(30 * 1024 * 1024)
    );
    node.write_manifest("big.yaml", &big);
    let containers: String = (0..10_000)
        .map(|i| format!("  - {{name: c{i}, image: busybox, command: [sleep, \"3600\"]}}\n"))
        .collect();
    node.write_manifest(
        "many.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: many\nspec:\n  containers:\n{containers}"
        ),
    );
    node.write_manifest(
        "fine.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fine\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, \"3600\"]\n",
    );

    let message = refusal(&node, "big.yaml");
    assert!(
        message.ends_with(&format!(
            "big.yaml: the manifest is {} bytes, over the limit of 3145728 bytes",
            big.len()
        )),
        "{message}"
    );
    let message = refusal(&node, "many.yaml");
    assert!(
        message
            .ends_with("many.yaml: spec.containers: Too many: 10000: must have at most 250 items"),
        "{message}"
    );
    node.wait_running("fine");
    assert!(node.pod("big").is_none() && node.pod("many").is_none());
}

#[test]
fn deleting_a_pod_interrupts_the_start_of_its_containers() {
    const CONTAINERS: usize = 50;
    let node = TestNode::start();
    let containers: String = (0..CONTAINERS)
        .map(|i| format!("  - {{name: c{i}, image: busybox, command: [sleep, \"3600\"]}}\n"))
        .collect();
    node.write_manifest(
        "wide.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: wide\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n{containers}"
        ),
    );
    let started = |n: &TestNode| {
        events(n)
            .iter()
            .filter(|e| {
                e["reason"] == "Started" && e["object"].as_str().is_some_and(|o| o.contains("wide"))
            })
            .count()
    };
    node.wait_for(
        "the first container started",
        Duration::from_secs(30),
        |n| (started(n) > 0).then_some(()),
    );
    node.remove_manifest("wide.yaml");
    node.wait_for("the pod gone", Duration::from_secs(60), |n| {
        n.pod("wide").is_none().then_some(())
    });
    let n = started(&node);
    eprintln!("{n} of {CONTAINERS} containers started before the stop");
    assert!(
        n < CONTAINERS,
        "all {n} containers were started before the pod stopped"
    );
    node.wait_for("the pod's processes gone", Duration::from_secs(30), |n| {
        n.processes_in_cgroups().is_empty().then_some(())
    });
}
