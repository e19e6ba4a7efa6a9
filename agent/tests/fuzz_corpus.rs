//! The agent's fuzz checks (`fuzz/checks/`, the same code the cargo-fuzz
//! targets run) over their seed corpora, the kept regression inputs and
//! deterministic mutations of both: static pod manifests, quantities, OCI
//! layers, CNI configs and results. Deep runs: `scripts/fuzz.sh`.

#[path = "../../fuzz/checks/cni.rs"]
mod cni;
#[path = "../../fuzz/checks/corpus.rs"]
mod corpus;
#[path = "../../fuzz/checks/layer.rs"]
mod layer;
#[path = "../../fuzz/checks/manifest.rs"]
mod manifest;
#[path = "../../fuzz/checks/quantity.rs"]
mod quantity;

#[test]
fn static_pod_manifests() {
    corpus::replay("manifest", manifest::check);
}

#[test]
fn quantities() {
    corpus::replay("quantity", quantity::check);
}

#[test]
fn oci_layers_never_write_outside_the_rootfs() {
    corpus::replay("layer", layer::check);
}

#[test]
fn cni_configs_and_results() {
    corpus::replay("cni", cni::check);
}
