//! Which manifest of an image index (a multi-platform image) this node runs:
//! the one for its own `os/architecture`, as containerd's default platform
//! matcher picks it. Imports and pulls both narrow indexes with it.

use oci_spec::image::{Descriptor, ImageIndex, MediaType};

/// Docker's media types, which registries still serve for many images.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `linux/amd64` on x86-64: Go's GOOS/GOARCH names, as image configs use.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    };
    format!("linux/{arch}")
}

/// What a manifest descriptor points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// One image (OCI or Docker v2 schema 2).
    Image,
    /// An index / manifest list of images.
    Index,
    Unsupported,
}

pub fn manifest_kind(media_type: &MediaType) -> ManifestKind {
    match media_type {
        MediaType::ImageManifest => ManifestKind::Image,
        MediaType::ImageIndex => ManifestKind::Index,
        MediaType::Other(m) if m == DOCKER_MANIFEST => ManifestKind::Image,
        MediaType::Other(m) if m == DOCKER_MANIFEST_LIST => ManifestKind::Index,
        _ => ManifestKind::Unsupported,
    }
}

/// The index entry for `wanted` (`linux/amd64`): an entry naming that
/// platform first, else the first entry naming none. Attestations
/// (`unknown/unknown`) and other platforms never match. `Err` lists the
/// platforms the index offers, for the error message.
pub fn select_manifest<'a>(index: &'a ImageIndex, wanted: &str) -> Result<&'a Descriptor, String> {
    let platform_of = |d: &Descriptor| {
        d.platform()
            .as_ref()
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
    };
    let manifests = index.manifests();
    if let Some(exact) = manifests
        .iter()
        .find(|d| platform_of(d).as_deref() == Some(wanted))
    {
        return Ok(exact);
    }
    if let Some(unlabelled) = manifests.iter().find(|d| d.platform().is_none()) {
        return Ok(unlabelled);
    }
    let found: Vec<String> = manifests.iter().filter_map(platform_of).collect();
    Err(if found.is_empty() {
        "no manifests".to_string()
    } else {
        found.join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[Option<(&str, &str)>]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut d = serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", format!("{i:x}").repeat(64)[..64].to_string()),
                    "size": 100 + i,
                });
                if let Some((os, arch)) = p {
                    d["platform"] = serde_json::json!({"os": os, "architecture": arch});
                }
                d
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap()
    }

    #[test]
    fn host_platform_is_go_style() {
        let p = host_platform();
        assert!(p.starts_with("linux/"));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(p, "linux/amd64");
    }

    #[test]
    fn picks_the_nodes_platform_over_others_and_attestations() {
        let idx = index(&[
            Some(("linux", "arm64")),
            Some(("unknown", "unknown")),
            Some(("linux", "amd64")),
            Some(("windows", "amd64")),
        ]);
        assert_eq!(select_manifest(&idx, "linux/amd64").unwrap().size(), 102);
        assert_eq!(select_manifest(&idx, "linux/arm64").unwrap().size(), 100);
    }

    #[test]
    fn an_entry_without_platform_is_the_fallback() {
        let idx = index(&[None, Some(("linux", "amd64"))]);
        assert_eq!(select_manifest(&idx, "linux/amd64").unwrap().size(), 101);
        assert_eq!(select_manifest(&idx, "linux/s390x").unwrap().size(), 100);
    }

    #[test]
    fn no_match_names_what_the_index_offers() {
        let idx = index(&[Some(("linux", "arm64")), Some(("linux", "ppc64le"))]);
        assert_eq!(
            select_manifest(&idx, "linux/amd64").unwrap_err(),
            "linux/arm64, linux/ppc64le"
        );
        assert_eq!(
            select_manifest(&index(&[]), "linux/amd64").unwrap_err(),
            "no manifests"
        );
    }

    #[test]
    fn media_types_of_oci_and_docker() {
        assert_eq!(
            manifest_kind(&MediaType::ImageManifest),
            ManifestKind::Image
        );
        assert_eq!(manifest_kind(&MediaType::ImageIndex), ManifestKind::Index);
        assert_eq!(
            manifest_kind(&MediaType::Other(DOCKER_MANIFEST_LIST.into())),
            ManifestKind::Index
        );
        assert_eq!(
            manifest_kind(&MediaType::Other(DOCKER_MANIFEST.into())),
            ManifestKind::Image
        );
        assert_eq!(
            manifest_kind(&MediaType::ImageConfig),
            ManifestKind::Unsupported
        );
    }
}
