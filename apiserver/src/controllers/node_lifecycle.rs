//! The node lifecycle controller (kube-controller-manager's
//! `nodelifecycle`): notices nodes whose kubelet went quiet and keeps the
//! node taints that follow from conditions and `spec.unschedulable`.
//!
//! Health: a node is heard from when its Lease in `kube-node-lease` is
//! renewed or its Ready condition's heartbeat moves. Every
//! `--node-monitor-period` each node is checked; one not heard from for
//! `--node-monitor-grace-period` gets every condition set to `Unknown`
//! (`NodeStatusUnknown`, "Kubelet stopped posting node status."), its pods
//! marked not ready, and a `NodeNotReady` event.
//!
//! Taints (the controller's `doNoScheduleTaintingPass` and
//! `doNoExecuteTaintingPass`): Ready Unknown → `unreachable`, Ready False →
//! `not-ready`, both `NoSchedule` and `NoExecute`; pressure conditions →
//! their `NoSchedule` taints; `spec.unschedulable` (cordon) →
//! `unschedulable:NoSchedule`. Taints it adds carry `timeAdded`; taints it
//! does not own are left alone. Node changes from the store's change feed
//! get their taint pass at once (a cordon, a kubelet posting Ready again).
//!
//! Evicting pods from `NoExecute`-tainted nodes (the taint eviction
//! controller) is not done here.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use std::sync::Arc;
use tokio::time::Instant;

use crate::api::Api;
use crate::api::events::NODE_CONTROLLER;
use crate::api::object;
use crate::kinds::Kind;
use crate::status::ApiError;
use crate::storage::{EventType, StorageError, WatchStream};

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The conditions a kubelet posts, which go `Unknown` when it stops.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
const RELIST_BACKOFF: Duration = Duration::from_secs(1);
const WRITE_ATTEMPTS: usize = 5;

/// kube-controller-manager's node monitor flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLifecycleOptions {
    /// `--node-monitor-period`: how often node health is checked.
    pub monitor_period: Duration,
    /// `--node-monitor-grace-period`: silence after which a node is Unknown.
    pub grace_period: Duration,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        Self {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
        }
    }
}

/// A Go duration as flags take it: `40s`, `500ms`, `1m30s`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 40s, 500ms, 1m30s)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

fn time(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Sets the kubelet's conditions to `Unknown` as the controller does when
/// the grace period has passed; `true` if anything changed.
pub fn mark_unknown(status: &mut NodeStatus, created: Option<&Time>, now: Timestamp) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for kind in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: kind.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.cloned(),
                    last_transition_time: Some(time(now)),
                });
                changed = true;
            }
        }
    }
    changed
}

fn condition_status<'a>(node: &'a Node, kind: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

/// The taints this controller owns (and may remove).
fn owned(key: &str, effect: &str) -> bool {
    match effect {
        NO_SCHEDULE => [
            TAINT_UNREACHABLE,
            TAINT_NOT_READY,
            TAINT_UNSCHEDULABLE,
            TAINT_MEMORY_PRESSURE,
            TAINT_DISK_PRESSURE,
            TAINT_PID_PRESSURE,
            TAINT_NETWORK_UNAVAILABLE,
        ]
        .contains(&key),
        NO_EXECUTE => key == TAINT_UNREACHABLE || key == TAINT_NOT_READY,
        _ => false,
    }
}

/// `(key, effect)` of every controller taint the node should carry.
pub fn desired_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match condition_status(node, "Ready") {
        Some("False") => {
            out.push((TAINT_NOT_READY, NO_SCHEDULE));
            out.push((TAINT_NOT_READY, NO_EXECUTE));
        }
        Some("Unknown") => {
            out.push((TAINT_UNREACHABLE, NO_SCHEDULE));
            out.push((TAINT_UNREACHABLE, NO_EXECUTE));
        }
        _ => {}
    }
    for (kind, key) in [
        ("MemoryPressure", TAINT_MEMORY_PRESSURE),
        ("DiskPressure", TAINT_DISK_PRESSURE),
        ("PIDPressure", TAINT_PID_PRESSURE),
        ("NetworkUnavailable", TAINT_NETWORK_UNAVAILABLE),
    ] {
        if condition_status(node, kind) == Some("True") {
            out.push((key, NO_SCHEDULE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((TAINT_UNSCHEDULABLE, NO_SCHEDULE));
    }
    out
}

/// The node's taints with the controller's brought to `desired`: others
/// kept as they are, existing ones keep their `timeAdded`, new ones get now.
pub fn reconcile_taints(current: &[Taint], desired: &[(&str, &str)], now: Timestamp) -> Vec<Taint> {
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !owned(&t.key, &t.effect) || desired.contains(&(t.key.as_str(), t.effect.as_str()))
        })
        .cloned()
        .collect();
    for (key, effect) in desired {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                time_added: Some(time(now)),
                value: None,
            });
        }
    }
    out
}

/// When a node was last heard from, and the marks it was heard by.
struct Health {
    probe: Instant,
    heartbeat: Option<Time>,
    lease_renew: Option<String>,
}

pub struct NodeLifecycleController {
    api: Arc<Api>,
    opts: NodeLifecycleOptions,
    nodes: Arc<dyn Kind>,
    leases: Arc<dyn Kind>,
    pods: Arc<dyn Kind>,
    health: HashMap<String, Health>,
}

#[derive(Debug, thiserror::Error)]
enum ControllerError {
    #[error("{0}")]
    Api(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<ApiError> for ControllerError {
    fn from(e: ApiError) -> Self {
        ControllerError::Api(e.message)
    }
}

fn ready_heartbeat(node: &Node) -> Option<Time> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .clone()
}

impl NodeLifecycleController {
    pub fn new(api: Arc<Api>, opts: NodeLifecycleOptions) -> Self {
        Self {
            nodes: api.kind("", "v1", "nodes"),
            leases: api.kind("coordination.k8s.io", "v1", "leases"),
            pods: api.kind("", "v1", "pods"),
            api,
            opts,
            health: HashMap::new(),
        }
    }

    /// Runs for the life of the process.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.opts.monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut feed: Option<WatchStream> = None;
        loop {
            if feed.is_none() {
                feed = match self.watch_nodes().await {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!("node lifecycle controller: watching nodes: {e}");
                        tokio::time::sleep(RELIST_BACKOFF).await;
                        continue;
                    }
                };
            }
            let stream = feed.as_mut().expect("feed set above");
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.monitor().await {
                        tracing::warn!("node lifecycle controller: {e}");
                    }
                }
                event = stream.next() => match event {
                    Some(Ok(e)) if e.event_type == EventType::Put => {
                        if let Ok(node) = serde_json::from_slice::<Node>(&e.value)
                            && let Err(err) = self.taint_pass(&node).await
                        {
                            tracing::warn!("node lifecycle controller: tainting: {err}");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::info!("node lifecycle controller: node feed: {e}; watching again");
                        feed = None;
                    }
                    None => feed = None,
                },
            }
        }
    }

    async fn watch_nodes(&self) -> Result<WatchStream, StorageError> {
        let rev = self.api.store.current_revision().await?;
        self.api
            .store
            .watch(&self.nodes.info().key_prefix(None), rev)
            .await
    }

    /// One health check of every node, then its taint pass.
    async fn monitor(&mut self) -> Result<(), ControllerError> {
        let store = &self.api.store;
        let (node_kvs, _) = store.list(&self.nodes.info().key_prefix(None)).await?;
        let (lease_kvs, _) = store
            .list(&self.leases.info().key_prefix(Some(LEASE_NAMESPACE)))
            .await?;
        let renewals: HashMap<String, String> = lease_kvs
            .iter()
            .map(object::decode)
            .map(|l| {
                (
                    object::name(&l).to_owned(),
                    l["spec"]["renewTime"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let now = Instant::now();
        let mut seen = Vec::new();
        for kv in &node_kvs {
            let Ok(node) = serde_json::from_slice::<Node>(&kv.value) else {
                continue;
            };
            let name = node.metadata.name.clone().unwrap_or_default();
            seen.push(name.clone());
            let heartbeat = ready_heartbeat(&node);
            let lease_renew = renewals.get(&name).cloned();
            let health = self.health.entry(name.clone()).or_insert_with(|| Health {
                probe: now,
                heartbeat: heartbeat.clone(),
                lease_renew: lease_renew.clone(),
            });
            if health.heartbeat != heartbeat || health.lease_renew != lease_renew {
                health.probe = now;
                health.heartbeat = heartbeat;
                health.lease_renew = lease_renew;
            }
            let silent = now.duration_since(health.probe) > self.opts.grace_period;
            let node = if silent {
                self.mark_node_unknown(&name).await?.unwrap_or(node)
            } else {
                node
            };
            self.taint_pass(&node).await?;
        }
        self.health.retain(|n, _| seen.contains(n));
        Ok(())
    }

    /// Reads the node, lets `change` edit it, writes it back if it changed
    /// (spec, or status with `status_only`); retries on conflicts.
    async fn update_node(
        &self,
        name: &str,
        status_only: bool,
        change: impl Fn(&mut Node) -> bool,
    ) -> Result<Option<Node>, ControllerError> {
        let key = self.nodes.info().key(None, name);
        for _ in 0..WRITE_ATTEMPTS {
            let Some(kv) = self.api.store.get(&key).await? else {
                return Ok(None);
            };
            let Ok(mut node) = serde_json::from_value::<Node>(object::decode(&kv)) else {
                return Ok(None);
            };
            if !change(&mut node) {
                return Ok(None);
            }
            let mut obj = serde_json::to_value(&node).expect("Node serializes");
            obj["apiVersion"] = "v1".into();
            obj["kind"] = "Node".into();
            match self
                .api
                .update_object(self.nodes.as_ref(), obj, status_only)
                .await
            {
                Ok(v) => return Ok(serde_json::from_value(v).ok()),
                Err(e) if e.code == 409 => continue,
                Err(e) if e.code == 404 => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// The node's conditions go Unknown; on the Ready transition, its pods
    /// are marked not ready and an event says so. Returns the updated node.
    async fn mark_node_unknown(&self, name: &str) -> Result<Option<Node>, ControllerError> {
        let was_ready = std::sync::Mutex::new(false);
        let updated = self
            .update_node(name, true, |node| {
                *was_ready.lock().expect("lock") = condition_status(node, "Ready") == Some("True");
                let created = node.metadata.creation_timestamp.clone();
                let status = node.status.get_or_insert_with(Default::default);
                mark_unknown(status, created.as_ref(), Timestamp::now())
            })
            .await?;
        let Some(node) = updated else {
            return Ok(None);
        };
        tracing::info!(node = %name, "node stopped posting status: conditions Unknown");
        if *was_ready.lock().expect("lock") {
            let obj = json_of(&node, "Node");
            self.api
                .record_event(
                    &obj,
                    NODE_CONTROLLER,
                    "Normal",
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
            self.mark_pods_not_ready(name).await?;
        }
        Ok(Some(node))
    }

    /// `MarkPodsNotReady`: the Ready condition of every pod on the node
    /// goes False; the kubelet sets it again when it is back.
    async fn mark_pods_not_ready(&self, node_name: &str) -> Result<(), ControllerError> {
        let (kvs, _) = self
            .api
            .store
            .list(&self.pods.info().key_prefix(None))
            .await?;
        for kv in kvs {
            let Ok(mut pod) = serde_json::from_value::<Pod>(object::decode(&kv)) else {
                continue;
            };
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node_name) {
                continue;
            }
            let Some(ready) = pod
                .status
                .as_mut()
                .and_then(|s| s.conditions.as_mut())
                .and_then(|c| c.iter_mut().find(|c| c.type_ == "Ready"))
            else {
                continue;
            };
            if ready.status != "True" {
                continue;
            }
            ready.status = "False".into();
            ready.last_transition_time = Some(time(Timestamp::now()));
            let obj = json_of(&pod, "Pod");
            match self
                .api
                .update_object(self.pods.as_ref(), obj.clone(), true)
                .await
            {
                Ok(_) => {
                    self.api
                        .record_event(
                            &obj,
                            NODE_CONTROLLER,
                            "Warning",
                            "NodeNotReady",
                            "Node is not ready",
                        )
                        .await
                }
                // Changed meanwhile (its kubelet is back, or it is gone).
                Err(e) if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Brings the node's controller taints to what its state asks for.
    async fn taint_pass(&self, node: &Node) -> Result<(), ControllerError> {
        let desired = desired_taints(node);
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if reconcile_taints(&current, &desired, Timestamp::now()) == current {
            return Ok(());
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        // Decided again on the stored node: it may have moved on.
        let written = self
            .update_node(&name, false, |n| {
                let desired = desired_taints(n);
                let spec = n.spec.get_or_insert_with(Default::default);
                let current = spec.taints.clone().unwrap_or_default();
                let wanted = reconcile_taints(&current, &desired, Timestamp::now());
                if wanted == current {
                    return false;
                }
                spec.taints = (!wanted.is_empty()).then_some(wanted);
                true
            })
            .await?;
        if let Some(n) = written {
            let keys: Vec<String> = n
                .spec
                .and_then(|s| s.taints)
                .unwrap_or_default()
                .iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect();
            tracing::info!(node = %name, taints = ?keys, "node taints updated");
        }
        Ok(())
    }
}

fn json_of<T: serde::Serialize>(obj: &T, kind: &str) -> Value {
    let mut v = serde_json::to_value(obj).expect("serializes");
    v["apiVersion"] = "v1".into();
    v["kind"] = kind.into();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn node(ready: &str, unschedulable: bool, taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: None,
            value: None,
        }
    }

    #[test]
    fn a_silent_node_goes_unknown_with_the_controllers_wording() {
        let mut status = node("True", false, vec![]).status.unwrap();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        assert!(mark_unknown(&mut status, None, now));
        let conds = status.conditions.as_ref().unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        let never = conds.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(never.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(conds.len(), 4);
        assert!(!mark_unknown(&mut status, None, now), "already Unknown");
    }

    #[test]
    fn taints_follow_ready_and_cordon_and_leave_others_alone() {
        let unknown = node("Unknown", false, vec![]);
        assert_eq!(
            desired_taints(&unknown),
            [
                (TAINT_UNREACHABLE, NO_SCHEDULE),
                (TAINT_UNREACHABLE, NO_EXECUTE)
            ]
        );
        let cordoned = node("True", true, vec![]);
        assert_eq!(
            desired_taints(&cordoned),
            [(TAINT_UNSCHEDULABLE, NO_SCHEDULE)]
        );
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mine = Taint {
            time_added: Some(Time(Timestamp::UNIX_EPOCH)),
            ..taint(TAINT_UNREACHABLE, NO_EXECUTE)
        };
        let users = taint("dedicated", NO_SCHEDULE);
        let current = vec![users.clone(), mine.clone()];
        let wanted = reconcile_taints(&current, &desired_taints(&unknown), now);
        assert_eq!(wanted.len(), 3);
        assert_eq!(wanted[0], users, "a user's taint stays");
        assert_eq!(wanted[1], mine, "an existing taint keeps its timeAdded");
        assert_eq!(wanted[2].key, TAINT_UNREACHABLE);
        assert_eq!(wanted[2].effect, NO_SCHEDULE);
        assert_eq!(wanted[2].time_added, Some(Time(now)));
        // Ready again: the controller's taints go, the user's stays.
        let back = reconcile_taints(&wanted, &desired_taints(&node("True", false, vec![])), now);
        assert_eq!(back, [users]);
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(parse_duration("40s").unwrap(), Duration::from_secs(40));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("40").is_err());
        assert!(parse_duration("4x").is_err());
        assert!(parse_duration("").is_err());
    }
}
