//! Storage: core `v1` PersistentVolume and PersistentVolumeClaim,
//! `storage.k8s.io/v1` StorageClass. Defaults as `SetDefaults_*` in
//! `pkg/apis/core/v1` and `pkg/apis/storage/v1`, validation as
//! `pkg/apis/core/validation` / `pkg/apis/storage/validation`, the
//! protection finalizers the `StorageObjectInUseProtection` admission plugin
//! adds, and the columns kube-apiserver's printers give.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::FieldError;

/// Finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Finalizer that keeps a volume while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// Annotation marking the cluster's default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const RECLAIM_POLICIES: [&str; 3] = ["Delete", "Recycle", "Retain"];
const VOLUME_MODES: [&str; 2] = ["Block", "Filesystem"];
const BINDING_MODES: [&str; 2] = ["Immediate", "WaitForFirstConsumer"];

/// `GetAccessModesAsString`: `RWO,ROX,RWX,RWOP` in that order.
pub fn access_modes_string(modes: Option<&Vec<String>>) -> String {
    let modes = modes.map(Vec::as_slice).unwrap_or_default();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| modes.iter().any(|x| x == m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn add_finalizer(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, f: &str) {
    let fs = meta.finalizers.get_or_insert_with(Vec::new);
    if !fs.iter().any(|x| x == f) {
        fs.push(f.to_owned());
    }
}

fn validate_access_modes(field: &str, modes: Option<&Vec<String>>, what: &str) -> Vec<FieldError> {
    let modes = modes.map(Vec::as_slice).unwrap_or_default();
    if modes.is_empty() {
        return vec![FieldError::required(field, what)];
    }
    let mut errs: Vec<FieldError> = modes
        .iter()
        .filter(|m| !ACCESS_MODES.contains(&m.as_str()))
        .map(|m| FieldError::not_supported(field, m, &ACCESS_MODES))
        .collect();
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            field,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    errs
}

fn validate_storage_quantity(field: &str, q: Option<&Quantity>) -> Vec<FieldError> {
    match q {
        None => vec![FieldError::required(field, "")],
        Some(q) => match kubelab_rules::quantity::value(q) {
            Err(_) => vec![FieldError::invalid(field, &q.0, "must be a valid quantity")],
            Ok(v) if v <= 0 => vec![FieldError::invalid(
                field,
                &q.0,
                "must be greater than zero",
            )],
            Ok(_) => Vec::new(),
        },
    }
}

fn storage_of(m: Option<&BTreeMap<String, Quantity>>) -> Option<&Quantity> {
    m.and_then(|m| m.get("storage"))
}

/// The volume sources a PersistentVolume names, by field name.
fn volume_sources(spec: &k8s_openapi::api::core::v1::PersistentVolumeSpec) -> Vec<&'static str> {
    let present = [
        (
            "awsElasticBlockStore",
            spec.aws_elastic_block_store.is_some(),
        ),
        ("azureDisk", spec.azure_disk.is_some()),
        ("azureFile", spec.azure_file.is_some()),
        ("cephfs", spec.cephfs.is_some()),
        ("cinder", spec.cinder.is_some()),
        ("csi", spec.csi.is_some()),
        ("fc", spec.fc.is_some()),
        ("flexVolume", spec.flex_volume.is_some()),
        ("flocker", spec.flocker.is_some()),
        ("gcePersistentDisk", spec.gce_persistent_disk.is_some()),
        ("glusterfs", spec.glusterfs.is_some()),
        ("hostPath", spec.host_path.is_some()),
        ("iscsi", spec.iscsi.is_some()),
        ("local", spec.local.is_some()),
        ("nfs", spec.nfs.is_some()),
        (
            "photonPersistentDisk",
            spec.photon_persistent_disk.is_some(),
        ),
        ("portworxVolume", spec.portworx_volume.is_some()),
        ("quobyte", spec.quobyte.is_some()),
        ("rbd", spec.rbd.is_some()),
        ("scaleIO", spec.scale_io.is_some()),
        ("storageos", spec.storageos.is_some()),
        ("vsphereVolume", spec.vsphere_volume.is_some()),
    ];
    present
        .into_iter()
        .filter(|(_, p)| *p)
        .map(|(n, _)| n)
        .collect()
}

/// An absolute path without `..` elements (`validatePathNoBacksteps`
/// plus the absolute-path rule of local volumes).
fn host_path_errors(field: &str, path: &str, absolute: bool) -> Vec<FieldError> {
    if path.is_empty() {
        return vec![FieldError::required(field, "")];
    }
    let mut errs = Vec::new();
    if absolute && !path.starts_with('/') {
        errs.push(FieldError::invalid(field, path, "must be an absolute path"));
    }
    if path.split('/').any(|p| p == "..") {
        errs.push(FieldError::invalid(field, path, "must not contain '..'"));
    }
    errs
}

impl KindSpec for PersistentVolume {
    const SHORT_NAMES: &'static [&'static str] = &["pv"];
    const HAS_STATUS: bool = true;

    /// `SetDefaults_PersistentVolume`, and the protection finalizer.
    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| "Retain".into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        self.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: Some("Pending".into()),
            last_phase_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            )),
            ..Default::default()
        });
        add_finalizer(&mut self.metadata, PV_PROTECTION);
    }

    fn prepare_update(&mut self, old: &Self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| "Retain".into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        if self.status.is_none() {
            self.status = old.status.clone();
        }
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = validate_access_modes("spec.accessModes", spec.access_modes.as_ref(), "");
        match &spec.capacity {
            None => errs.push(FieldError::required("spec.capacity", "")),
            Some(c) => {
                for k in c.keys().filter(|k| *k != "storage") {
                    errs.push(FieldError::not_supported("spec.capacity", k, &["storage"]));
                }
                errs.extend(validate_storage_quantity(
                    "spec.capacity[storage]",
                    storage_of(Some(c)),
                ));
            }
        }
        if let Some(p) = &spec.persistent_volume_reclaim_policy
            && !RECLAIM_POLICIES.contains(&p.as_str())
        {
            errs.push(FieldError::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                &RECLAIM_POLICIES,
            ));
        }
        if let Some(m) = &spec.volume_mode
            && !VOLUME_MODES.contains(&m.as_str())
        {
            errs.push(FieldError::not_supported(
                "spec.volumeMode",
                m,
                &VOLUME_MODES,
            ));
        }
        if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
            errs.extend(super::validation::dns1123_subdomain(
                "spec.storageClassName",
                class,
            ));
        }
        let sources = volume_sources(spec);
        match sources.as_slice() {
            [] => errs.push(FieldError::required("spec", "must specify a volume type")),
            [_] => {}
            [_, rest @ ..] => {
                for s in rest {
                    errs.push(FieldError::forbidden(
                        format!("spec.{s}"),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
        if let Some(h) = &spec.host_path {
            errs.extend(host_path_errors("spec.hostPath.path", &h.path, false));
        }
        if let Some(l) = &spec.local {
            errs.extend(host_path_errors("spec.local.path", &l.path, true));
            if spec
                .node_affinity
                .as_ref()
                .and_then(|a| a.required.as_ref())
                .is_none()
            {
                errs.push(FieldError::required(
                    "spec.nodeAffinity",
                    "Local volumes require node affinity",
                ));
            }
        }
        if let Some(req) = spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
            && let Err(e) = kubelab_rules::node_affinity::validate_node_selector(req)
        {
            errs.push(FieldError::invalid_raw(
                "spec.nodeAffinity.required",
                "",
                e.to_string(),
            ));
        }
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            // `ValidatePersistentVolumeUpdate`: the source and the node
            // affinity stay what the data was written with.
            if volume_sources(old_spec) == sources
                && (old_spec.host_path != spec.host_path || old_spec.local != spec.local)
            {
                errs.push(FieldError::forbidden(
                    "spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation",
                ));
            }
            if old_spec.node_affinity.is_some() && old_spec.node_affinity != spec.node_affinity {
                errs.push(FieldError::forbidden(
                    "spec.nodeAffinity",
                    "field is immutable",
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Capacity", "string", 0),
            col("Access Modes", "string", 0),
            col("Reclaim Policy", "string", 0),
            col("Status", "string", 0),
            col("Claim", "string", 0),
            col("StorageClass", "string", 0),
            col("VolumeAttributesClass", "string", 0),
            col("Reason", "string", 0),
            age_col(),
            col("VolumeMode", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let claim = spec
            .claim_ref
            .as_ref()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.namespace.clone().unwrap_or_default(),
                    r.name.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            storage_of(spec.capacity.as_ref())
                .map(|q| q.0.clone())
                .unwrap_or_default()
                .into(),
            access_modes_string(spec.access_modes.as_ref()).into(),
            spec.persistent_volume_reclaim_policy
                .unwrap_or_default()
                .into(),
            status.phase.unwrap_or_default().into(),
            claim.into(),
            spec.storage_class_name.unwrap_or_default().into(),
            spec.volume_attributes_class_name
                .unwrap_or_else(|| "<unset>".into())
                .into(),
            status.reason.unwrap_or_default().into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            spec.volume_mode
                .unwrap_or_else(|| "Filesystem".into())
                .into(),
        ]
    }
}

impl KindSpec for PersistentVolumeClaim {
    const SHORT_NAMES: &'static [&'static str] = &["pvc"];
    const HAS_STATUS: bool = true;

    /// `SetDefaults_PersistentVolumeClaim`, and the protection finalizer.
    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        self.status = Some(k8s_openapi::api::core::v1::PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        add_finalizer(&mut self.metadata, PVC_PROTECTION);
    }

    fn prepare_update(&mut self, old: &Self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        if self.status.is_none() {
            self.status = old.status.clone();
        }
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = validate_access_modes(
            "spec.accessModes",
            spec.access_modes.as_ref(),
            "at least 1 access mode is required",
        );
        if let Some(sel) = &spec.selector
            && let Err(e) = kubelab_rules::selector::validate(sel)
        {
            errs.push(FieldError::invalid_raw(
                "spec.selector",
                super::validation::go_label_selector(sel),
                e.to_string(),
            ));
        }
        errs.extend(validate_storage_quantity(
            "spec.resources[storage]",
            storage_of(spec.resources.as_ref().and_then(|r| r.requests.as_ref())),
        ));
        if let Some(m) = &spec.volume_mode
            && !VOLUME_MODES.contains(&m.as_str())
        {
            errs.push(FieldError::not_supported(
                "spec.volumeMode",
                m,
                &VOLUME_MODES,
            ));
        }
        if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
            errs.extend(super::validation::dns1123_subdomain(
                "spec.storageClassName",
                class,
            ));
        }
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            // Only the size may change, and an unset volumeName may be set
            // once (the binder does it).
            let mut a = spec.clone();
            let mut b = old_spec.clone();
            a.resources = None;
            b.resources = None;
            if b.volume_name.as_deref().unwrap_or("").is_empty() {
                b.volume_name = a.volume_name.clone();
            }
            // A claim without a class may get one (the default, later).
            if b.storage_class_name.is_none() {
                b.storage_class_name = a.storage_class_name.clone();
            }
            if a != b {
                errs.push(FieldError::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Status", "string", 0),
            col("Volume", "string", 0),
            col("Capacity", "string", 0),
            col("Access Modes", "string", 0),
            col("StorageClass", "string", 0),
            col("VolumeAttributesClass", "string", 0),
            age_col(),
            col("VolumeMode", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let phase = if self.metadata.deletion_timestamp.is_some() {
            "Terminating".to_owned()
        } else {
            status.phase.clone().unwrap_or_default()
        };
        // Capacity and modes are what the bound volume gives.
        let (capacity, modes) = if spec.volume_name.as_deref().unwrap_or("").is_empty() {
            (String::new(), String::new())
        } else {
            (
                storage_of(status.capacity.as_ref())
                    .map(|q| q.0.clone())
                    .unwrap_or_default(),
                access_modes_string(status.access_modes.as_ref()),
            )
        };
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            phase.into(),
            spec.volume_name.unwrap_or_default().into(),
            capacity.into(),
            modes.into(),
            spec.storage_class_name.unwrap_or_default().into(),
            status
                .current_volume_attributes_class_name
                .unwrap_or_else(|| "<unset>".into())
                .into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            spec.volume_mode
                .unwrap_or_else(|| "Filesystem".into())
                .into(),
        ]
    }
}

/// Whether the class is marked as the cluster's default.
pub fn is_default_class(sc: &StorageClass) -> bool {
    sc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

impl KindSpec for StorageClass {
    const SHORT_NAMES: &'static [&'static str] = &["sc"];

    /// `SetDefaults_StorageClass`.
    fn prepare_create(&mut self) {
        self.reclaim_policy.get_or_insert_with(|| "Delete".into());
        self.volume_binding_mode
            .get_or_insert_with(|| "Immediate".into());
    }

    fn prepare_update(&mut self, _old: &Self) {
        self.prepare_create();
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.provisioner.is_empty() {
            errs.push(FieldError::required("provisioner", ""));
        } else if self.provisioner.len() > 63 {
            errs.push(FieldError::invalid(
                "provisioner",
                &self.provisioner,
                "must be no more than 63 characters",
            ));
        }
        if let Some(p) = &self.reclaim_policy
            && !["Delete", "Retain"].contains(&p.as_str())
        {
            errs.push(FieldError::not_supported(
                "reclaimPolicy",
                p,
                &["Delete", "Retain"],
            ));
        }
        if let Some(m) = &self.volume_binding_mode
            && !BINDING_MODES.contains(&m.as_str())
        {
            errs.push(FieldError::not_supported(
                "volumeBindingMode",
                m,
                &BINDING_MODES,
            ));
        }
        if let Some(old) = old {
            if old.parameters != self.parameters {
                errs.push(FieldError::forbidden(
                    "parameters",
                    "updates to parameters are forbidden.",
                ));
            }
            if old.provisioner != self.provisioner {
                errs.push(FieldError::forbidden(
                    "provisioner",
                    "updates to provisioner are forbidden.",
                ));
            }
            if old.reclaim_policy != self.reclaim_policy {
                errs.push(FieldError::forbidden(
                    "reclaimPolicy",
                    "updates to reclaimPolicy are forbidden.",
                ));
            }
            if old.volume_binding_mode != self.volume_binding_mode {
                errs.push(FieldError::forbidden(
                    "volumeBindingMode",
                    "field is immutable",
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Provisioner", "string", 0),
            col("ReclaimPolicy", "string", 0),
            col("VolumeBindingMode", "string", 0),
            col("AllowVolumeExpansion", "string", 0),
            age_col(),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let mut name = self.metadata.name.clone().unwrap_or_default();
        if is_default_class(self) {
            name.push_str(" (default)");
        }
        vec![
            name.into(),
            self.provisioner.clone().into(),
            self.reclaim_policy.clone().unwrap_or_default().into(),
            self.volume_binding_mode.clone().unwrap_or_default().into(),
            self.allow_volume_expansion.unwrap_or(false).into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn volumes_need_modes_capacity_and_exactly_one_source() {
        let mut pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv0"}, "spec": {}}))
        .unwrap();
        pv.prepare_create();
        assert_eq!(
            messages(&pv.validate(None)),
            [
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec: Required value: must specify a volume type",
            ]
        );
        let mut pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv0"},
            "spec": {"accessModes": ["ReadWriteOnce", "Sometimes"], "capacity": {"storage": "1Gi"},
                "hostPath": {"path": "/data"}, "local": {"path": "data/../x"}}}))
        .unwrap();
        pv.prepare_create();
        assert_eq!(
            messages(&pv.validate(None)),
            [
                "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.local: Forbidden: may not specify more than 1 volume type",
                "spec.local.path: Invalid value: \"data/../x\": must be an absolute path",
                "spec.local.path: Invalid value: \"data/../x\": must not contain '..'",
                "spec.nodeAffinity: Required value: Local volumes require node affinity",
            ]
        );
        assert_eq!(
            pv.spec
                .as_ref()
                .unwrap()
                .persistent_volume_reclaim_policy
                .as_deref(),
            Some("Retain")
        );
        assert_eq!(pv.metadata.finalizers, Some(vec![PV_PROTECTION.into()]));
    }

    #[test]
    fn claims_are_immutable_but_for_size_and_binding() {
        let mut pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap();
        pvc.prepare_create();
        assert!(pvc.validate(None).is_empty());
        assert_eq!(
            pvc.status.as_ref().unwrap().phase.as_deref(),
            Some("Pending")
        );
        let mut bound = pvc.clone();
        bound.spec.as_mut().unwrap().volume_name = Some("pv0".into());
        assert!(bound.validate(Some(&pvc)).is_empty());
        let mut changed = bound.clone();
        changed.spec.as_mut().unwrap().access_modes = Some(vec!["ReadWriteMany".into()]);
        assert_eq!(
            messages(&changed.validate(Some(&bound))),
            [
                "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
            ]
        );
        let mut empty: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {}})).unwrap();
        empty.prepare_create();
        assert_eq!(
            messages(&empty.validate(None)),
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
            ]
        );
    }

    #[test]
    fn tables_print_as_kubectl() {
        let now = jiff::Timestamp::now();
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv0"},
            "spec": {"accessModes": ["ReadWriteMany", "ReadWriteOnce"], "capacity": {"storage": "8Gi"},
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "standard",
                "claimRef": {"namespace": "default", "name": "data"}, "hostPath": {"path": "/x"}},
            "status": {"phase": "Bound"}})).unwrap();
        let cells = pv.cells(now);
        assert_eq!(PersistentVolume::columns().len(), cells.len());
        assert_eq!(
            cells[1..7],
            [
                json!("8Gi"),
                json!("RWO,RWX"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("standard")
            ]
        );
        let sc: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "local-path", "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
            "provisioner": "rancher.io/local-path"}))
        .unwrap();
        assert_eq!(sc.cells(now)[0], "local-path (default)");
    }
}
