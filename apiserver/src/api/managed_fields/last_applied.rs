//! kubectl's client-side apply annotation under server-side apply, kept in
//! step as kube-apiserver keeps it: an apply by the manager `kubectl` may
//! take over the fields whose live values are still what the annotation
//! says was applied (moving an object from client-side to server-side
//! apply without conflicts), and it rewrites the annotation to what it
//! applied, so a later client-side apply diffs against that.

use serde_json::Value;

use super::fieldpath::Set;
use super::typed::{self, Ignore};
use crate::patch_metadata::Node;

pub const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The one manager whose applies keep the annotation in step; applying
/// under another name opts out, as upstream.
pub const KUBECTL_MANAGER: &str = "kubectl";

fn annotation(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?
        .get(ANNOTATION)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The fields an apply by kubectl may take from other managers: those the
/// annotation sets whose live value is the value it sets. `None` without
/// a readable annotation.
pub fn allowed_conflicts(live: &Value, node: Node, ignore: Ignore) -> Option<Set> {
    let last: Value = serde_json::from_str(annotation(live)?).ok()?;
    let set = typed::to_field_set(&last, node, ignore);
    let c = typed::compare(&last, live, node, ignore);
    Some(
        set.difference(&c.modified)
            .difference(&c.added)
            .difference(&c.removed),
    )
}

/// After an apply of `config` by kubectl: an object that carries the
/// annotation gets `config` (without the annotation) as its new value,
/// encoded as kubectl encodes it.
pub fn update(obj: &mut Value, config: &Value) {
    if annotation(obj).is_none() {
        return;
    }
    let mut applied = config.clone();
    if let Some(annotations) = applied
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(ANNOTATION);
    }
    let Ok(mut text) = serde_json::to_string(&applied) else {
        return;
    };
    // kubectl writes the annotation with Go's JSON encoder, which ends it
    // with a newline.
    text.push('\n');
    obj["metadata"]["annotations"][ANNOTATION] = Value::String(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(label: &str, image: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"name": label}},
            "spec": {"containers": [{"name": "c", "image": image}]}})
    }

    #[test]
    fn fields_still_as_last_applied_may_be_taken_over() {
        let mut live = pod("a", "img:1");
        live["metadata"]["annotations"] = json!({ANNOTATION: pod("a", "img:0").to_string()});
        let node = Node::for_kind("v1", "Pod");
        let none = |_: &[super::super::fieldpath::PathElement]| false;
        let allowed = allowed_conflicts(&live, node, &none).unwrap();
        let label =
            typed::to_field_set(&json!({"metadata": {"labels": {"name": "x"}}}), node, &none);
        assert_eq!(allowed.intersection(&label), label);
        // The image was changed since it was applied: not the applier's any more.
        let paths: Vec<String> = allowed
            .paths()
            .iter()
            .map(|p| super::super::fieldpath::path_string(p))
            .collect();
        assert!(!paths.iter().any(|p| p.contains("image")), "{paths:?}");
        assert!(allowed_conflicts(&pod("a", "i"), node, &none).is_none());
    }

    #[test]
    fn the_annotation_follows_what_kubectl_applied() {
        let mut obj = pod("a", "img:1");
        update(&mut obj, &pod("b", "img:2"));
        assert!(
            obj["metadata"].get("annotations").is_none(),
            "none to keep in step"
        );
        obj["metadata"]["annotations"] = json!({ANNOTATION: "{}", "other": "x"});
        let mut config = pod("b", "img:2");
        config["metadata"]["annotations"] = json!({ANNOTATION: "old"});
        update(&mut obj, &config);
        let text = obj["metadata"]["annotations"][ANNOTATION].as_str().unwrap();
        assert!(text.ends_with('\n'));
        let recorded: Value = serde_json::from_str(text).unwrap();
        assert_eq!(recorded["metadata"]["labels"]["name"], "b");
        assert_eq!(recorded["metadata"]["annotations"], json!({}));
        assert_eq!(obj["metadata"]["annotations"]["other"], "x");
    }
}
