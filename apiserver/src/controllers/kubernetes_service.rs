//! The `kubernetes` service in `default`, as kube-apiserver's own
//! controllers keep it (`pkg/controlplane/controller/kubernetesservice`
//! and the endpoint reconciler): cluster IP the service range's first
//! address, port 443 (`https`) to the apiserver's secure port, and an
//! `Endpoints` and an EndpointSlice named `kubernetes` pointing at the
//! advertised address. Reconciled at startup, then every [`INTERVAL`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::endpoints_render::SERVICE_NAME_LABEL;
use crate::api::Api;
use crate::status::ApiError;

/// kube-apiserver's `--endpoint-reconciler` interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";

/// What the `kubernetes` service points at.
#[derive(Debug, Clone)]
pub struct KubernetesService {
    pub cluster_ip: IpAddr,
    pub advertise_address: IpAddr,
    pub secure_port: u16,
}

impl KubernetesService {
    fn service(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": self.cluster_ip.to_string(),
                "sessionAffinity": "None",
                "ports": self.service_ports()}})
    }

    fn service_ports(&self) -> Value {
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.secure_port}])
    }

    fn endpoints(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                // Its slice is written here, not mirrored.
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": self.advertise_address.to_string()}],
                "ports": [{"name": "https", "port": self.secure_port, "protocol": "TCP"}]}]})
    }

    fn endpoint_slice(&self) -> Value {
        let address_type = match self.advertise_address {
            IpAddr::V4(_) => "IPv4",
            IpAddr::V6(_) => "IPv6",
        };
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {SERVICE_NAME_LABEL: NAME}},
            "addressType": address_type,
            "endpoints": [{"addresses": [self.advertise_address.to_string()],
                "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": self.secure_port, "protocol": "TCP"}]})
    }

    /// Creates what is missing and corrects what differs.
    pub async fn reconcile(&self, api: &Api) -> Result<(), ApiError> {
        let services = api.kind("", "v1", "services");
        match api.get(services.as_ref(), Some(NAMESPACE), NAME).await {
            Err(e) if e.code == 404 => {
                api.create_object(services.as_ref(), self.service()).await?;
            }
            Err(e) => return Err(e),
            Ok(mut current) => {
                // The cluster IP is immutable; the ports follow the flags.
                if current["spec"]["ports"] != self.service_ports() {
                    current["spec"]["ports"] = self.service_ports();
                    api.update_object(services.as_ref(), current, false).await?;
                }
            }
        }
        let endpoints = self.endpoints();
        put_if_changed(api, ("", "endpoints"), endpoints, &["subsets"]).await?;
        put_if_changed(
            api,
            ("discovery.k8s.io", "endpointslices"),
            self.endpoint_slice(),
            &["addressType", "endpoints", "ports"],
        )
        .await?;
        Ok(())
    }

    /// Reconciles every [`INTERVAL`] for the life of the process.
    pub async fn run(self, api: Arc<Api>) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.reset();
        loop {
            tick.tick().await;
            if let Err(e) = self.reconcile(&api).await {
                tracing::warn!("reconciling the kubernetes service: {}", e.message);
            }
        }
    }
}

/// Creates `desired`, or updates the stored object when one of `fields`
/// (or the labels) differs.
async fn put_if_changed(
    api: &Api,
    (group, plural): (&str, &str),
    desired: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    let kind = api.kind(group, "v1", plural);
    match api.get(kind.as_ref(), Some(NAMESPACE), NAME).await {
        Err(e) if e.code == 404 => {
            api.create_object(kind.as_ref(), desired).await?;
        }
        Err(e) => return Err(e),
        Ok(mut current) => {
            let mut changed = false;
            for f in fields {
                if current[*f] != desired[*f] {
                    current[*f] = desired[*f].clone();
                    changed = true;
                }
            }
            if current["metadata"]["labels"] != desired["metadata"]["labels"] {
                current["metadata"]["labels"] = desired["metadata"]["labels"].clone();
                changed = true;
            }
            if changed {
                api.update_object(kind.as_ref(), current, false).await?;
            }
        }
    }
    Ok(())
}
