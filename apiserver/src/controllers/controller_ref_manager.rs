//! Carries out a controller's [`Claims`] (upstream's
//! `ControllerRefManager`): orphans that match its selector get its
//! controller reference, objects it controls whose labels stopped matching
//! lose it. Each write is pinned to the uid and resourceVersion the claim
//! was decided on, so a change in between (another controller adopting
//! first) makes the sync try again.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::replicaset_decide::Claims;

#[derive(Debug, thiserror::Error)]
#[error("{verb} {kind} {name}: {source}")]
pub struct ClaimError {
    verb: &'static str,
    kind: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// Adopts and releases as `claims` says, for the controller `owner`.
pub async fn adopt_and_release<K>(
    api: &Api<K>,
    claims: &Claims<K>,
    owner: &OwnerReference,
) -> Result<(), ClaimError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    for obj in &claims.adopt {
        let mut refs = obj.owner_references().to_vec();
        refs.push(owner.clone());
        patch_owner_refs(api, obj, refs, "adopting").await?;
    }
    for obj in &claims.release {
        let refs = obj
            .owner_references()
            .iter()
            .filter(|r| r.uid != owner.uid)
            .cloned()
            .collect();
        patch_owner_refs(api, obj, refs, "releasing").await?;
    }
    Ok(())
}

async fn patch_owner_refs<K>(
    api: &Api<K>,
    obj: &K,
    refs: Vec<OwnerReference>,
    verb: &'static str,
) -> Result<(), ClaimError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let meta = obj.meta();
    let patch = json!({"metadata": {
        "ownerReferences": if refs.is_empty() { Value::Null } else { json!(refs) },
        "uid": meta.uid,
        "resourceVersion": meta.resource_version,
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to adopt or release.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(ClaimError {
            verb,
            kind: K::kind(&()).into_owned(),
            name: obj.name_any(),
            source,
        }),
    }
}
