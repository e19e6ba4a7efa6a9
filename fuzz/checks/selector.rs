//! Label and field selectors: the apiserver's query-string parsers
//! (`?labelSelector=`, `?fieldSelector=`) and the shared metav1.LabelSelector
//! rules (validation, matching, the string form), from arbitrary input.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaSelector;
use kubelab_apiserver::selectors::{FieldSelector, LabelSelector};
use kubelab_rules::selector;

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front"), ("x", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(sel) = LabelSelector::parse(s) {
            let _ = sel.matches(&labels);
            let _ = sel.is_empty();
        }
        if let Ok(sel) = FieldSelector::parse(s) {
            let _ = sel.matches(|f| (f == "metadata.name").then(|| "web".to_string()));
            let _ = sel.unsupported(&["metadata.name", "spec.nodeName"]);
        }
    }
    if let Ok(sel) = serde_json::from_slice::<MetaSelector>(data) {
        let valid = selector::validate(&sel).is_ok();
        let _ = selector::matches(&sel, &labels);
        let _ = selector::is_empty(&sel);
        let text = selector::selector_string(&sel);
        // The string form of a valid selector is one the apiserver parses.
        if valid {
            assert!(
                LabelSelector::parse(&text).is_ok(),
                "{sel:?} renders as {text:?}, which does not parse"
            );
        }
    }
}
