//! Writes from inside the apiserver (controllers, bootstrap) with a client's
//! semantics: the same defaulting, validation and resourceVersion
//! preconditions as a request, without HTTP or a response body.

use serde_json::{Value, json};

use super::{Api, ApiResult, Params, object};
use crate::kinds::Kind;
use crate::status::ApiError;
use object::{meta_mut, meta_str};

impl Api {
    /// Creates `obj` (its namespace from its metadata) and returns it as
    /// stored, with `resourceVersion`.
    pub async fn create_object(&self, kind: &dyn Kind, obj: Value) -> ApiResult<Value> {
        let info = kind.info();
        let ns = meta_str(&obj, "namespace").map(str::to_owned);
        let _guard = if info.plural == "services" {
            Some(self.allocator.lock().await)
        } else {
            None
        };
        let (mut obj, _warnings) = self
            .prepare_new(kind, ns.as_deref(), obj, &Params::new())
            .await?;
        let name = object::name(&obj).to_owned();
        let key = info.key(meta_str(&obj, "namespace"), &name);
        let rev = self
            .store
            .create(&key, object::encode(&obj))
            .await
            .map_err(|e| ApiError::from_storage(info.subject(), &name, e))?;
        meta_mut(&mut obj).insert("resourceVersion".into(), rev.to_string().into());
        Ok(obj)
    }

    /// Replaces the object `obj` names, on the condition that it is still at
    /// `obj`'s `resourceVersion` (a 409 otherwise). With `status_only`, as
    /// the status subresource: only `status` changes.
    pub async fn update_object(
        &self,
        kind: &dyn Kind,
        obj: Value,
        status_only: bool,
    ) -> ApiResult<Value> {
        let info = kind.info();
        let name = object::name(&obj).to_owned();
        let ns = meta_str(&obj, "namespace").map(str::to_owned);
        let key = info.key(ns.as_deref(), &name);
        let Some(current) = self.store.get(&key).await? else {
            return Err(ApiError::not_found(info.subject(), &name));
        };
        let expected = object::resource_version(&obj).unwrap_or(current.mod_revision);
        if expected != current.mod_revision {
            return Err(ApiError::stale(info.subject(), &name));
        }
        let old = object::decode(&current);
        let (obj, _warnings) = self.decode_strict(kind, obj, &Params::new())?;
        let mut new = self.prepare_update(kind, &old, obj, status_only)?;
        let _allocation = self.allocate_on_update(kind, &mut new, &old).await?;
        self.store_update(kind, &old, &mut new, expected)
            .await
            .map_err(|e| ApiError::from_storage(info.subject(), &name, e))?;
        Ok(new)
    }

    /// Deletes an object, only if it is still at `resource_version` when
    /// one is given.
    pub async fn delete_object(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
        resource_version: Option<u64>,
    ) -> ApiResult<()> {
        let opts = match resource_version {
            Some(rv) => json!({"preconditions": {"resourceVersion": rv.to_string()}}),
            None => Value::Null,
        };
        self.delete(kind, ns, name, &opts, &Params::new())
            .await
            .map(|_| ())
    }

    /// A served kind by group, version and plural; these are fixed at
    /// build time, so a missing one is a bug.
    pub fn kind(&self, group: &str, version: &str, plural: &str) -> std::sync::Arc<dyn Kind> {
        self.registry
            .find(group, version, plural)
            .unwrap_or_else(|| panic!("{plural}.{group}/{version} is not served"))
    }
}
