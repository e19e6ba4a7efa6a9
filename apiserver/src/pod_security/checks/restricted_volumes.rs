//! restricted `restrictedVolumes`: only volume types that bring no host
//! or network storage in (configMap, csi, downwardAPI, emptyDir,
//! ephemeral, image, persistentVolumeClaim, projected, secret).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, join_quote, pluralize};

fn allowed(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.image.is_some()
        || v.persistent_volume_claim.is_some()
        || v.projected.is_some()
        || v.secret.is_some()
}

/// The volume's type as the API spells the field.
fn volume_type(v: &Volume) -> &'static str {
    let types = [
        (v.host_path.is_some(), "hostPath"),
        (v.gce_persistent_disk.is_some(), "gcePersistentDisk"),
        (v.aws_elastic_block_store.is_some(), "awsElasticBlockStore"),
        (v.git_repo.is_some(), "gitRepo"),
        (v.nfs.is_some(), "nfs"),
        (v.iscsi.is_some(), "iscsi"),
        (v.glusterfs.is_some(), "glusterfs"),
        (v.rbd.is_some(), "rbd"),
        (v.flex_volume.is_some(), "flexVolume"),
        (v.cinder.is_some(), "cinder"),
        (v.cephfs.is_some(), "cephfs"),
        (v.flocker.is_some(), "flocker"),
        (v.fc.is_some(), "fc"),
        (v.azure_file.is_some(), "azureFile"),
        (v.vsphere_volume.is_some(), "vsphereVolume"),
        (v.quobyte.is_some(), "quobyte"),
        (v.azure_disk.is_some(), "azureDisk"),
        (v.photon_persistent_disk.is_some(), "photonPersistentDisk"),
        (v.portworx_volume.is_some(), "portworxVolume"),
        (v.scale_io.is_some(), "scaleIO"),
        (v.storageos.is_some(), "storageos"),
    ];
    types
        .into_iter()
        .find(|(set, _)| *set)
        .map_or("unknown", |(_, name)| name)
}

pub fn restricted_volumes_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in spec.volumes.iter().flatten().filter(|v| !allowed(v)) {
        bad.push(v.name.as_str());
        types.insert(volume_type(v));
    }
    (!bad.is_empty()).then(|| {
        Forbidden::new(
            "restricted volume types",
            format!(
                "{} {} {} {} {}",
                pluralize("volume", "volumes", bad.len()),
                join_quote(&bad),
                pluralize("uses", "use", bad.len()),
                pluralize(
                    "restricted volume type",
                    "restricted volume types",
                    types.len()
                ),
                join_quote(&types.into_iter().collect::<Vec<_>>())
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn only_the_restricted_volume_types_pass() {
        let (m, s) = test_pod(serde_json::json!({
            "containers": [{"name": "a"}],
            "volumes": [
                {"name": "host", "hostPath": {"path": "/"}},
                {"name": "share", "nfs": {"server": "s", "path": "/"}},
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        }));
        assert_eq!(
            restricted_volumes_1_0(&m, &s),
            Some(Forbidden::new(
                "restricted volume types",
                "volumes \"host\", \"share\" use restricted volume types \"hostPath\", \"nfs\""
            ))
        );
    }
}
