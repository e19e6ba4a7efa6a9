//! The root CA certificate publisher (`root-ca-certificate-publisher-controller`):
//! every namespace has the ConfigMap `kube-root-ca.crt` holding the cluster
//! CA (`ca.crt`), which the `kube-api-access-*` volume projects into pods
//! so they can verify the apiserver. A deleted or edited one is put back.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::Store;
use tokio::sync::broadcast::error::RecvError;

use super::informers::{Change, Informers};
use super::work_queue;

pub const CONFIG_MAP_NAME: &str = "kube-root-ca.crt";
/// The key the CA bundle is under.
pub const CA_KEY: &str = "ca.crt";
const COMPONENT: &str = "root-ca-certificate-publisher-controller";
const CONCURRENT_SYNCS: u16 = 2;
/// kube-controller-manager's description of the ConfigMap.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";

/// What the namespace's ConfigMap needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Publish {
    Nothing,
    Create(ConfigMap),
    Update(ConfigMap),
}

/// The ConfigMap `ns` should have, given the one it has: the CA as its
/// only data, and a description. Labels, other annotations and binary data
/// someone added stay.
pub fn decide(ns: &str, existing: Option<&ConfigMap>, ca: &str) -> Publish {
    let data = BTreeMap::from([(CA_KEY.to_owned(), ca.to_owned())]);
    match existing {
        None => Publish::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP_NAME.into()),
                namespace: Some(ns.into()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_owned(),
                    DESCRIPTION.to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }),
        Some(cm) => {
            let described = cm
                .annotations()
                .get(DESCRIPTION_ANNOTATION)
                .is_some_and(|d| !d.is_empty());
            if cm.data.as_ref() == Some(&data) && described {
                return Publish::Nothing;
            }
            let mut cm = cm.clone();
            cm.data = Some(data);
            cm.annotations_mut()
                .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
            Publish::Update(cm)
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("publishing {CONFIG_MAP_NAME} in namespace {namespace}: {source}")]
pub struct PublishError {
    namespace: String,
    source: kube::Error,
}

struct Ctx {
    client: kube::Client,
    config_maps: Store<ConfigMap>,
    ca: String,
}

/// Runs until the informers stop; `ca` is the CA bundle (PEM).
pub async fn run(informers: Informers, ca: String) -> anyhow::Result<()> {
    let namespaces = informers.get::<Namespace>();
    let config_maps = informers.get::<ConfigMap>();
    let (queue, keys) = work_queue::queue::<Namespace>();
    let mut ns_changes = namespaces.subscribe();
    let mut cm_changes = config_maps.subscribe();
    namespaces.synced().await;
    config_maps.synced().await;
    queue.add_all(&namespaces.store);
    let feed = async {
        loop {
            tokio::select! {
                c = ns_changes.recv() => match c {
                    Ok(Change::Applied(n)) => queue.add_object(&n),
                    Ok(Change::Deleted(_)) => {}
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&namespaces.store),
                    Err(RecvError::Closed) => return,
                },
                c = cm_changes.recv() => match c {
                    Ok(Change::Applied(cm)) | Ok(Change::Deleted(cm)) if cm.name_any() == CONFIG_MAP_NAME => {
                        queue.add(None, &cm.namespace().unwrap_or_default());
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => queue.add_all(&namespaces.store),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    };
    let ctx = Arc::new(Ctx {
        client: informers.client(),
        config_maps: config_maps.store.clone(),
        ca,
    });
    let workers = work_queue::run(
        COMPONENT,
        namespaces.store.clone(),
        keys,
        ctx,
        CONCURRENT_SYNCS,
        |ns: Arc<Namespace>, ctx: Arc<Ctx>| async move {
            // A terminating namespace takes no new content.
            if ns.metadata.deletion_timestamp.is_some() {
                return Ok(None);
            }
            let name = ns.name_any();
            let key = kube::runtime::reflector::ObjectRef::new(CONFIG_MAP_NAME).within(&name);
            let existing = ctx.config_maps.get(&key);
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
            let err = |source| PublishError {
                namespace: name.clone(),
                source,
            };
            match decide(&name, existing.as_deref(), &ctx.ca) {
                Publish::Nothing => Ok(None),
                Publish::Create(cm) => match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => Ok(None),
                    // Made meanwhile, or the namespace is gone or going:
                    // the next event says what to do.
                    Err(kube::Error::Api(s))
                        if matches!(s.code, 404 | 409)
                            || s.message.contains("being terminated") =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(err(e)),
                },
                Publish::Update(cm) => match api
                    .replace(CONFIG_MAP_NAME, &PostParams::default(), &cm)
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(e) => Err(err(e)),
                },
            }
        },
    );
    tokio::select! {
        _ = feed => {}
        _ = workers => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_edited_config_maps_get_the_ca_back() {
        let ca = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n";
        let Publish::Create(cm) = decide("dev", None, ca) else {
            panic!("a missing one is created")
        };
        assert_eq!(cm.metadata.namespace.as_deref(), Some("dev"));
        assert_eq!(cm.data.as_ref().unwrap()["ca.crt"], ca);
        assert_eq!(cm.annotations()[DESCRIPTION_ANNOTATION], DESCRIPTION);
        assert_eq!(decide("dev", Some(&cm), ca), Publish::Nothing);
        let mut edited = cm.clone();
        edited.data = Some(BTreeMap::from([("ca.crt".into(), "stale".into())]));
        edited.labels_mut().insert("keep".into(), "me".into());
        let Publish::Update(fixed) = decide("dev", Some(&edited), ca) else {
            panic!("an edited one is put back")
        };
        assert_eq!(fixed.data, cm.data);
        assert_eq!(fixed.labels()["keep"], "me");
    }
}
