//! The watches all hollow nodes of a process share: one watch of the pods
//! bound to any node, split into one reflector store per hollow node (each
//! node's pod source, status manager and event sink read their own), and
//! one watch of the Nodes (the status the apiserver has, the pod CIDRs node
//! IPAM assigns). A thousand nodes cost two watches, not three thousand.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::context::AgentContext;

/// One hollow node's share of the pod watch.
struct NodePods {
    writer: Writer<Pod>,
    changes: Arc<watch::Sender<u64>>,
}

/// The pods bound to the hollow nodes of this process, by node.
#[derive(Default)]
pub struct PodsByNode {
    nodes: HashMap<String, NodePods>,
}

impl PodsByNode {
    /// Adds a node: the store of its pods, and a counter bumped whenever
    /// that store changed.
    pub fn add(&mut self, node: &str) -> (Store<Pod>, Arc<watch::Sender<u64>>) {
        let (store, writer) = reflector::store();
        let changes = Arc::new(watch::Sender::new(0));
        self.nodes.insert(
            node.to_string(),
            NodePods {
                writer,
                changes: changes.clone(),
            },
        );
        (store, changes)
    }

    fn node_of(&mut self, pod: &Pod) -> Option<&mut NodePods> {
        let node = pod.spec.as_ref()?.node_name.as_deref()?;
        self.nodes.get_mut(node)
    }

    /// Watches every bound pod (re-listing with back-off after errors) and
    /// hands each to its node's store. A re-list swaps every store whole.
    pub async fn run(mut self, client: Client) {
        let api: Api<Pod> = Api::all(client);
        let cfg = watcher::Config::default().fields("spec.nodeName!=");
        // As a real node's pod source: field ownership is the apiserver's,
        // and without it a status write changes nothing the node keeps.
        let pods = watcher(api, cfg)
            .default_backoff()
            .modify(|pod| pod.managed_fields_mut().clear());
        let mut stream = std::pin::pin!(pods);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => {
                    for n in self.nodes.values_mut() {
                        n.writer.apply_watcher_event(&watcher::Event::Init);
                    }
                }
                Ok(watcher::Event::InitApply(pod)) => {
                    if let Some(n) = self.node_of(&pod) {
                        n.writer
                            .apply_watcher_event(&watcher::Event::InitApply(pod));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    for n in self.nodes.values_mut() {
                        n.writer.apply_watcher_event(&watcher::Event::InitDone);
                        n.changes.send_modify(|g| *g += 1);
                    }
                }
                Ok(event @ (watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                    let (watcher::Event::Apply(pod) | watcher::Event::Delete(pod)) = &event else {
                        continue;
                    };
                    let Some(n) = self.node_of(pod) else {
                        continue;
                    };
                    n.writer.apply_watcher_event(&event);
                    n.changes.send_modify(|g| *g += 1);
                }
                Err(e) => tracing::warn!("watching the pods of the hollow nodes: {e}"),
            }
        }
    }
}

/// Keeps `writer`'s store of Nodes current, and gives each hollow node (of
/// `contexts`) the pod CIDR the cluster assigned it.
pub async fn watch_nodes(
    client: Client,
    writer: Writer<Node>,
    contexts: HashMap<String, Arc<AgentContext>>,
) {
    let api: Api<Node> = Api::all(client);
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                if let (Some(ctx), Some(cidr)) = (contexts.get(name), cidr)
                    && !cidr.is_empty()
                {
                    ctx.network.set_node_pod_cidr(cidr);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the nodes: {e}"),
        }
    }
}
