//! Kubernetes quantities (`100m`, `1.5Gi`, `1e3`) as the agent and the
//! apiserver read them: parsing and every conversion on what parses.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubelab_rules::quantity;

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = quantity::parse(s);
    let q = Quantity(s.to_string());
    let _ = quantity::nano_value(&q);
    let _ = quantity::milli_value(&q);
    let _ = quantity::value(&q);
    let _ = quantity::cpu_millis(&q);
    let _ = quantity::bytes(&q);
    if parsed.is_err() {
        assert!(
            quantity::value(&q).is_err(),
            "{s:?} does not parse but has a value"
        );
    }
}
