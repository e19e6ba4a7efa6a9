//! The resources the documents describe: the registry's kinds, and custom
//! resources published through [`CustomResourceSchema`].

use serde_json::Value;

/// A resource as the OpenAPI documents describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub has_status: bool,
    pub has_scale: bool,
    /// Definition name of the kind (`io.k8s.api.core.v1.Pod`).
    pub definition: String,
    /// Definition name of its list (`io.k8s.api.core.v1.PodList`).
    pub list_definition: String,
    /// Whether PATCH takes strategic merge patches: custom resources do not,
    /// and kubectl reads this to choose a JSON merge patch for them.
    pub strategic_merge: bool,
}

impl Resource {
    /// `api/v1`, `apis/apps/v1`: the key of the group/version's document.
    pub fn gv_path(&self) -> String {
        gv_path(&self.group, &self.version)
    }
}

pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// One served version of a custom resource, with its structural schema
/// (`spec.versions[].schema.openAPIV3Schema` of its definition).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomResourceSchema {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub has_status: bool,
    pub has_scale: bool,
    pub open_api_v3_schema: Value,
}

impl CustomResourceSchema {
    /// kube-apiserver names a custom resource's definition after its group
    /// reversed (`com.test.v1.Example` for `test.com/v1`).
    pub fn definition(&self) -> String {
        let mut parts: Vec<&str> = self.group.split('.').collect();
        parts.reverse();
        format!("{}.{}.{}", parts.join("."), self.version, self.kind)
    }

    pub fn resource(&self) -> Resource {
        let definition = self.definition();
        Resource {
            group: self.group.clone(),
            version: self.version.clone(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
            namespaced: self.namespaced,
            has_status: self.has_status,
            has_scale: self.has_scale,
            list_definition: format!("{definition}List"),
            definition,
            strategic_merge: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_resources_are_named_by_reversed_group() {
        let crd = CustomResourceSchema {
            group: "stable.example.com".into(),
            version: "v1".into(),
            kind: "CronTab".into(),
            plural: "crontabs".into(),
            namespaced: true,
            has_status: false,
            has_scale: false,
            open_api_v3_schema: serde_json::json!({"type": "object"}),
        };
        let r = crd.resource();
        assert_eq!(r.definition, "com.example.stable.v1.CronTab");
        assert_eq!(r.list_definition, "com.example.stable.v1.CronTabList");
        assert_eq!(r.gv_path(), "apis/stable.example.com/v1");
    }
}
