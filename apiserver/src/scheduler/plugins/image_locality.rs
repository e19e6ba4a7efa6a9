//! ImageLocality: prefers nodes that already hold the pod's images (from
//! the node's `status.images`), weighted by image size and by how many
//! nodes share the image, so one node holding a common image doesn't draw
//! every pod.

use std::collections::HashMap;

use super::{CycleState, MAX_NODE_SCORE};
use crate::scheduler::node_info::NodeInfo;

const MB: i64 = 1024 * 1024;
/// Below this, images pull fast enough not to matter.
const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container: above this, more bytes add nothing.
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// One spelling for an image reference, so `nginx`, `nginx:latest` and
/// `docker.io/library/nginx:latest` compare equal: Docker Hub's implicit
/// registry and `library/` are made explicit, and an untagged reference
/// gets `:latest`.
pub fn normalized_image_name(name: &str) -> String {
    let (path, suffix) = match name.find('@') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let last_slash = path.rfind('/');
    let has_tag = path
        .rfind(':')
        .is_some_and(|c| last_slash.is_none_or(|s| c > s));
    let first = path.split('/').next().unwrap_or_default();
    let has_registry =
        path.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut out = String::new();
    if !has_registry {
        out.push_str("docker.io/");
        if !path.contains('/') {
            out.push_str("library/");
        }
    }
    out.push_str(path);
    if !has_tag && suffix.is_empty() {
        out.push_str(":latest");
    }
    out.push_str(suffix);
    out
}

fn images_of(state: &CycleState) -> Vec<String> {
    let Some(spec) = state.pod.pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| c.image.as_deref())
        .map(normalized_image_name)
        .collect()
}

/// How many of `nodes` hold each image (`ImageStateSummary.NumNodes`).
pub fn image_spread<'a>(nodes: impl Iterator<Item = &'a NodeInfo>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in nodes {
        for image in n.images.keys() {
            *m.entry(image.clone()).or_insert(0) += 1;
        }
    }
    m
}

pub fn score(
    state: &CycleState,
    node: &NodeInfo,
    spread: &HashMap<String, usize>,
    total_nodes: usize,
) -> i64 {
    let images = images_of(state);
    if images.is_empty() || total_nodes == 0 {
        return 0;
    }
    let sum: i64 = images
        .iter()
        .filter_map(|img| {
            let size = *node.images.get(img)?;
            let share = spread.get(img).copied().unwrap_or(1) as f64 / total_nodes as f64;
            Some((size as f64 * share) as i64)
        })
        .sum();
    let max = MAX_CONTAINER_THRESHOLD * images.len() as i64;
    let clamped = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use k8s_openapi::api::core::v1::ContainerImage;

    #[test]
    fn names_normalise_to_one_spelling() {
        assert_eq!(
            normalized_image_name("nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            normalized_image_name("nginx:1.25"),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(
            normalized_image_name("bitnami/redis"),
            "docker.io/bitnami/redis:latest"
        );
        assert_eq!(
            normalized_image_name("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalized_image_name("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(
            normalized_image_name("busybox@sha256:abc"),
            "docker.io/library/busybox@sha256:abc"
        );
    }

    #[test]
    fn a_node_holding_the_image_scores_higher() {
        let mut with = node("with", "1", "1Gi", &[]);
        with.status.as_mut().unwrap().images = Some(vec![ContainerImage {
            names: Some(vec!["docker.io/library/busybox:latest".into()]),
            size_bytes: Some(500 * MB),
        }]);
        let with = info(with);
        let without = info(node("without", "1", "1Gi", &[]));
        let nodes = [with, without];
        let spread = image_spread(nodes.iter());
        let state = CycleState::new(pinfo(pod("p", "", "")));
        // 500 MB held by one node of two: 250 MB counts; (250-23)/(1000-23).
        assert_eq!(score(&state, &nodes[0], &spread, 2), 23);
        assert_eq!(score(&state, &nodes[1], &spread, 2), 0);
    }
}
