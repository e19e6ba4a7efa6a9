//! What the apiserver serves, as the garbage collector and the namespace
//! controller learn it: through discovery, like any client (client-go's
//! `ServerPreferredResources`), so a kind added to the registry is covered
//! without touching them.

use kube::Client;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

/// One served resource (no subresources) and the verbs it supports.
#[derive(Debug, Clone)]
pub struct ServedResource {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ServedResource {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `pods` or `replicasets.apps`, as kube-controller-manager logs name them.
    pub fn group_resource(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.plural.clone()
        } else {
            format!("{}.{}", self.resource.plural, self.resource.group)
        }
    }
}

/// Every resource of each group's preferred version.
pub async fn discover(client: &Client) -> Result<Vec<ServedResource>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            out.push(served(resource, &caps));
        }
    }
    Ok(out)
}

fn served(resource: ApiResource, caps: &ApiCapabilities) -> ServedResource {
    ServedResource {
        namespaced: caps.scope == Scope::Namespaced,
        verbs: caps.operations.clone(),
        resource,
    }
}

/// The resource an `apiVersion` and `kind` (an owner reference) name.
pub fn find_kind<'a>(
    resources: &'a [ServedResource],
    api_version: &str,
    kind: &str,
) -> Option<&'a ServedResource> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let same_kind = |r: &&ServedResource| r.resource.group == group && r.resource.kind == kind;
    resources
        .iter()
        .filter(same_kind)
        .find(|r| r.resource.version == version)
        .or_else(|| resources.iter().find(same_kind))
}

/// Resources whose objects can be listed, watched and deleted: what the
/// garbage collector follows (events excepted, as upstream ignores them).
pub fn collectable(resources: &[ServedResource]) -> Vec<ServedResource> {
    resources
        .iter()
        .filter(|r| {
            r.supports(verbs::LIST) && r.supports(verbs::WATCH) && r.supports(verbs::DELETE)
        })
        .filter(|r| r.resource.plural != "events")
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, version: &str, kind: &str, plural: &str) -> ServedResource {
        let api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        ServedResource {
            resource: ApiResource {
                group: group.into(),
                version: version.into(),
                api_version,
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced: true,
            verbs: ["list", "watch", "delete", "get"]
                .map(String::from)
                .to_vec(),
        }
    }

    #[test]
    fn owner_references_resolve_by_group_and_kind() {
        let all = vec![
            res("", "v1", "Pod", "pods"),
            res("apps", "v1", "ReplicaSet", "replicasets"),
            res("", "v1", "Event", "events"),
        ];
        assert_eq!(
            find_kind(&all, "apps/v1", "ReplicaSet")
                .unwrap()
                .resource
                .plural,
            "replicasets"
        );
        // Another version of the same group still finds the kind.
        assert_eq!(
            find_kind(&all, "apps/v1beta2", "ReplicaSet")
                .unwrap()
                .group_resource(),
            "replicasets.apps"
        );
        assert!(find_kind(&all, "v1", "ReplicaSet").is_none());
        let followed: Vec<String> = collectable(&all)
            .iter()
            .map(|r| r.group_resource())
            .collect();
        assert_eq!(followed, ["pods", "replicasets.apps"]);
    }
}
