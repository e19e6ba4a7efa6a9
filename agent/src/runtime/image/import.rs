//! Imports OCI images: an OCI image layout directory, or the same layout in a
//! tar archive (optionally gzipped), as `docker save` (25+), `skopeo copy
//! oci-archive:` and `scripts/build-test-image.sh` write them.
//!
//! Every blob is checked against its digest and size before it enters the
//! store; every layer is unpacked once into `layers/<diff_id>` and its
//! uncompressed content checked against the config's diff_id. Image indexes
//! (multi-platform images) are narrowed to this node's platform.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

pub use super::platform::host_platform;
use super::platform::{ManifestKind, manifest_kind, select_manifest};
use super::reference::{Reference, ReferenceError, validate_digest};
use super::store::{ImageStore, ImageSummary, IndexRecord, StoreError, remove_tree, sha256_hex};
use super::unpack::{HashingReader, UnpackError, unpack_layer};

/// containerd's (and `docker save`'s) annotation for the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's annotation: a tag, or a full reference.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Bounds for JSON documents read into memory (index, manifest, config).
pub(crate) const MAX_JSON_BYTES: u64 = 8 << 20;
/// Image indexes nested deeper than this are refused (cycles would loop forever).
const MAX_INDEX_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path:?} is not an OCI image layout or archive: {reason}")]
    NotOciLayout { path: PathBuf, reason: String },
    #[error("blob {digest} is missing from {path:?}")]
    MissingBlob { digest: String, path: PathBuf },
    #[error("blob {digest} in {path:?}: its content hashes to {actual}")]
    DigestMismatch {
        digest: String,
        actual: String,
        path: PathBuf,
    },
    #[error("blob {digest}: {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    #[error("{what} {digest} is not valid JSON of its kind")]
    Json {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        what: &'static str,
        digest: String,
        media_type: String,
    },
    #[error("{path:?} has no image for {wanted} (found: {found})")]
    NoMatchingPlatform {
        path: PathBuf,
        wanted: String,
        found: String,
    },
    #[error("image {manifest} is built for {found}, but this node is {wanted}")]
    PlatformMismatch {
        manifest: String,
        found: String,
        wanted: String,
    },
    #[error(
        "manifest {manifest} lists {layers} layers but its config {config} lists {diff_ids} diff_ids"
    )]
    LayerCount {
        manifest: String,
        config: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("unpacking layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error(
        "layer {digest}: its uncompressed content hashes to {actual}, but the config says diff_id {expected}"
    )]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("image index nested more than {MAX_INDEX_DEPTH} deep at {digest}")]
    IndexTooDeep { digest: String },
    #[error("annotation {annotation}={value:?} on manifest {manifest}")]
    BadRefName {
        annotation: &'static str,
        value: String,
        manifest: String,
        #[source]
        source: ReferenceError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports all images found at `path` (archive file or layout directory).
pub(crate) fn import(store: &ImageStore, path: &Path) -> Result<Vec<ImageSummary>, ImportError> {
    let started = Instant::now();
    // Blobs and layers it reuses stay until the index names them.
    let _lease = store.lease_content()?;
    let meta = fs::metadata(path).map_err(read_err(path))?;
    let source = if meta.is_dir() {
        BlobSource::Layout(path.to_path_buf())
    } else {
        tracing::info!(archive = ?path, size = meta.len(), "reading image archive");
        BlobSource::Staged(StagedArchive::extract(store, path)?)
    };
    let layout_root = source.root();
    let layout =
        fs::read(layout_root.join("oci-layout")).map_err(|e| ImportError::NotOciLayout {
            path: path.to_path_buf(),
            reason: format!("no readable `oci-layout` file ({e})"),
        })?;
    let layout: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| ImportError::NotOciLayout {
            path: path.to_path_buf(),
            reason: format!("`oci-layout` is not JSON ({e})"),
        })?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(ImportError::NotOciLayout {
            path: path.to_path_buf(),
            reason: "`oci-layout` does not declare imageLayoutVersion 1.0.0".to_string(),
        });
    }
    let index_bytes =
        read_limited(&layout_root.join("index.json")).map_err(|e| ImportError::NotOciLayout {
            path: path.to_path_buf(),
            reason: format!("no readable `index.json` ({e})"),
        })?;
    let index: ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|source| ImportError::Json {
            what: "index.json",
            digest: path.display().to_string(),
            source,
        })?;

    let importer = Importer {
        store,
        source: &source,
        origin: path,
    };
    let wanted = host_platform();
    let mut imported = Vec::new();
    let mut seen_platforms = Vec::new();
    for desc in index.manifests() {
        if let Some(p) = desc.platform() {
            let found = format!("{}/{}", p.os(), p.architecture());
            if found != wanted {
                seen_platforms.push(found);
                continue;
            }
        }
        let name = image_name(desc)?;
        imported.push(importer.image(desc, name)?);
    }
    if imported.is_empty() {
        return Err(ImportError::NoMatchingPlatform {
            path: path.to_path_buf(),
            wanted,
            found: if seen_platforms.is_empty() {
                "no manifests".to_string()
            } else {
                seen_platforms.join(", ")
            },
        });
    }
    store.update_index(|index| {
        for record in &imported {
            index.upsert(record.clone());
        }
    })?;
    tracing::info!(
        images = imported.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "image import done"
    );
    Ok(imported
        .into_iter()
        .map(|r| ImageSummary {
            reference: r.reference,
            id: r.config,
            manifest_digest: r.manifest,
            size: r.size,
        })
        .collect())
}

/// The name an index entry carries: containerd's full-name annotation first,
/// else OCI's `ref.name` when it is a full reference. A bare tag (`latest`)
/// names no repository, so such an image is imported untagged.
fn image_name(desc: &Descriptor) -> Result<Option<String>, ImportError> {
    let annotations = desc.annotations().clone().unwrap_or_default();
    let (annotation, value) = match (
        annotations.get(ANNOTATION_IMAGE_NAME),
        annotations.get(ANNOTATION_REF_NAME),
    ) {
        (Some(v), _) => (ANNOTATION_IMAGE_NAME, v),
        (None, Some(v)) if v.contains(['/', ':', '@']) => (ANNOTATION_REF_NAME, v),
        (None, Some(v)) => {
            tracing::warn!(
                tag = %v,
                manifest = %desc.digest(),
                "ref.name is a bare tag without a repository; importing the image untagged"
            );
            return Ok(None);
        }
        (None, None) => return Ok(None),
    };
    Reference::parse(value)
        .map(|r| Some(r.to_string()))
        .map_err(|source| ImportError::BadRefName {
            annotation,
            value: value.clone(),
            manifest: desc.digest().to_string(),
            source,
        })
}

struct Importer<'a> {
    store: &'a ImageStore,
    source: &'a BlobSource,
    origin: &'a Path,
}

impl Importer<'_> {
    /// Imports the image a top-level index entry points at.
    fn image(&self, desc: &Descriptor, name: Option<String>) -> Result<IndexRecord, ImportError> {
        let (manifest_desc, manifest) = self.manifest_for_platform(desc, 0)?;
        let manifest_digest = manifest_desc.digest().to_string();
        let config_desc = manifest.config();
        let config_digest = config_desc.digest().to_string();
        let config_bytes = self.json_blob(config_desc)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| ImportError::Json {
                what: "image config",
                digest: config_digest.clone(),
                source,
            })?;
        check_image(&manifest_digest, &config_digest, &manifest, &config)?;
        let diff_ids = config.rootfs().diff_ids();
        let label = name.as_deref().unwrap_or(&manifest_digest);
        tracing::info!(image = %label, layers = diff_ids.len(), "importing image");
        let total = diff_ids.len();
        let mut size = manifest_desc.size() + config_desc.size();
        for (i, (layer, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
            self.layer(layer, diff_id, i + 1, total)?;
            size += layer.size();
        }
        Ok(IndexRecord {
            reference: name,
            manifest: manifest_digest,
            config: config_digest,
            size,
            pulled: false,
        })
    }

    /// Follows image indexes down to the manifest for this node's platform.
    fn manifest_for_platform(
        &self,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<(Descriptor, ImageManifest), ImportError> {
        let digest = desc.digest().to_string();
        match manifest_kind(desc.media_type()) {
            ManifestKind::Image => {}
            ManifestKind::Index => return self.manifest_from_index(desc, depth),
            ManifestKind::Unsupported => {
                return Err(ImportError::UnsupportedMediaType {
                    what: "manifest",
                    digest,
                    media_type: desc.media_type().to_string(),
                });
            }
        }
        let bytes = self.json_blob(desc)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|source| ImportError::Json {
                what: "manifest",
                digest,
                source,
            })?;
        Ok((desc.clone(), manifest))
    }

    fn manifest_from_index(
        &self,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<(Descriptor, ImageManifest), ImportError> {
        let digest = desc.digest().to_string();
        if depth >= MAX_INDEX_DEPTH {
            return Err(ImportError::IndexTooDeep { digest });
        }
        let bytes = self.json_blob(desc)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| ImportError::Json {
                what: "image index",
                digest: digest.clone(),
                source,
            })?;
        let wanted = host_platform();
        match select_manifest(&index, &wanted) {
            Ok(m) => self.manifest_for_platform(m, depth + 1),
            Err(found) => Err(ImportError::NoMatchingPlatform {
                path: self.origin.join(format!("<index {digest}>")),
                wanted,
                found,
            }),
        }
    }

    /// Brings a layer blob into the store and makes sure it is unpacked.
    fn layer(
        &self,
        desc: &Descriptor,
        diff_id: &str,
        n: usize,
        total: usize,
    ) -> Result<(), ImportError> {
        check_layer(desc, diff_id)?;
        let blob = self.ingest(desc)?;
        unpack_layer_blob(
            self.store,
            &blob,
            &desc.digest().to_string(),
            diff_id,
            n,
            total,
        )
    }

    /// Reads a small JSON blob (manifest, index, config) after storing it.
    fn json_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ImportError> {
        if desc.size() > MAX_JSON_BYTES {
            return Err(ImportError::SizeMismatch {
                digest: desc.digest().to_string(),
                expected: MAX_JSON_BYTES,
                actual: desc.size(),
            });
        }
        let path = self.ingest(desc)?;
        fs::read(&path).map_err(read_err(&path))
    }

    /// Makes sure the store holds the blob `desc` names, verified; returns its path.
    fn ingest(&self, desc: &Descriptor) -> Result<PathBuf, ImportError> {
        let digest = desc.digest().to_string();
        validate_digest(&digest).map_err(|reason| ImportError::InvalidDigest {
            digest: digest.clone(),
            reason,
        })?;
        let dest = self.store.blob_path(&digest)?;
        if let Ok(meta) = fs::metadata(&dest) {
            // Already verified when it entered the store.
            check_size(&digest, desc.size(), meta.len())?;
            return Ok(dest);
        }
        let src = self.source.blob_path(&digest)?;
        let src_meta = fs::metadata(&src).map_err(|_| ImportError::MissingBlob {
            digest: digest.clone(),
            path: self.origin.to_path_buf(),
        })?;
        check_size(&digest, desc.size(), src_meta.len())?;
        match self.source {
            // Staged blobs were verified against their names as they were extracted.
            BlobSource::Staged(_) => Ok(self.store.commit_blob(&src, &digest)?),
            BlobSource::Layout(_) => {
                let tmp = self.store.temp_path("blob");
                let copied = copy_verified(&src, &tmp, &digest);
                match copied {
                    Ok(()) => Ok(self.store.commit_blob(&tmp, &digest)?),
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        Err(e)
                    }
                }
            }
        }
    }
}

/// An image this node can run: built for its platform, one diff_id per layer.
pub(crate) fn check_image(
    manifest_digest: &str,
    config_digest: &str,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<(), ImportError> {
    let found = format!("{}/{}", config.os(), config.architecture());
    let wanted = host_platform();
    if found != wanted {
        return Err(ImportError::PlatformMismatch {
            manifest: manifest_digest.to_string(),
            found,
            wanted,
        });
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImportError::LayerCount {
            manifest: manifest_digest.to_string(),
            config: config_digest.to_string(),
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        });
    }
    Ok(())
}

/// A layer descriptor the store can unpack, with a well-formed diff_id.
pub(crate) fn check_layer(desc: &Descriptor, diff_id: &str) -> Result<(), ImportError> {
    match desc.media_type() {
        MediaType::ImageLayer
        | MediaType::ImageLayerGzip
        | MediaType::ImageLayerZstd
        | MediaType::ImageLayerNonDistributable
        | MediaType::ImageLayerNonDistributableGzip
        | MediaType::ImageLayerNonDistributableZstd => {}
        MediaType::Other(m) if m == DOCKER_LAYER || m == DOCKER_FOREIGN_LAYER => {}
        other => {
            return Err(ImportError::UnsupportedMediaType {
                what: "layer",
                digest: desc.digest().to_string(),
                media_type: other.to_string(),
            });
        }
    }
    validate_digest(diff_id).map_err(|reason| ImportError::InvalidDigest {
        digest: diff_id.to_string(),
        reason,
    })
}

/// Unpacks a stored layer blob into `layers/<diff_id>` unless it is there
/// already, checking its uncompressed content against `diff_id`.
pub(crate) fn unpack_layer_blob(
    store: &ImageStore,
    blob: &Path,
    digest: &str,
    diff_id: &str,
    n: usize,
    total: usize,
) -> Result<(), ImportError> {
    let layer_dir = store.layer_dir(diff_id)?;
    if layer_dir.is_dir() {
        tracing::info!(layer = %digest, "layer {n}/{total} already unpacked");
        return Ok(());
    }
    let size = fs::metadata(blob).map(|m| m.len()).unwrap_or(0);
    tracing::info!(layer = %digest, size, "unpacking layer {n}/{total}");
    let started = Instant::now();
    let tmp = store.temp_path("layer");
    fs::create_dir(&tmp).map_err(StoreError::io("creating", &tmp))?;
    let unpack = || -> Result<(), ImportError> {
        let file = File::open(blob).map_err(read_err(blob))?;
        let unpacked = unpack_layer(file, &tmp).map_err(|source| ImportError::Unpack {
            digest: digest.to_string(),
            source,
        })?;
        if unpacked.diff_id != diff_id {
            return Err(ImportError::DiffIdMismatch {
                digest: digest.to_string(),
                expected: diff_id.to_string(),
                actual: unpacked.diff_id,
            });
        }
        tracing::info!(
            layer = %digest,
            entries = unpacked.entries,
            uncompressed = unpacked.uncompressed_size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "unpacked layer {n}/{total}"
        );
        Ok(())
    };
    if let Err(e) = unpack() {
        remove_tree(&tmp);
        return Err(e);
    }
    store.commit_layer(&tmp, diff_id)?;
    Ok(())
}

pub(crate) fn check_size(digest: &str, expected: u64, actual: u64) -> Result<(), ImportError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImportError::SizeMismatch {
            digest: digest.to_string(),
            expected,
            actual,
        })
    }
}

/// Copies `src` to `dest`, hashing on the way, and fails unless the hash is `digest`.
fn copy_verified(src: &Path, dest: &Path, digest: &str) -> Result<(), ImportError> {
    let input = File::open(src).map_err(read_err(src))?;
    write_verified(BufReader::new(input), dest, digest, src)
}

/// Writes `reader` to `dest` (created, synced) and checks its sha256 against `digest`.
fn write_verified<R: Read>(
    reader: R,
    dest: &Path,
    digest: &str,
    origin: &Path,
) -> Result<(), ImportError> {
    let mut hashing = HashingReader::new(reader);
    let mut out = File::create_new(dest).map_err(StoreError::io("creating", dest))?;
    io::copy(&mut hashing, &mut out).map_err(read_err(origin))?;
    out.sync_all().map_err(StoreError::io("syncing", dest))?;
    let (actual, _) = hashing.finish();
    if actual != digest {
        return Err(ImportError::DigestMismatch {
            digest: digest.to_string(),
            actual,
            path: origin.to_path_buf(),
        });
    }
    Ok(())
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(MAX_JSON_BYTES)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Where an import reads blobs from.
enum BlobSource {
    /// An OCI layout directory, read in place (and verified while copying).
    Layout(PathBuf),
    /// An archive extracted under the store's `tmp/` (blobs verified while extracting).
    Staged(StagedArchive),
}

impl BlobSource {
    fn root(&self) -> PathBuf {
        match self {
            BlobSource::Layout(p) => p.clone(),
            BlobSource::Staged(s) => s.dir.clone(),
        }
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .root()
            .join("blobs")
            .join("sha256")
            .join(sha256_hex(digest)?))
    }
}

/// An archive's `oci-layout`, `index.json` and blobs, extracted under the
/// store's `tmp/`, removed on drop. Only those names are extracted, each to a
/// path the importer builds itself, so the archive's own entry names can never
/// point anywhere else.
struct StagedArchive {
    dir: PathBuf,
}

impl StagedArchive {
    fn extract(store: &ImageStore, path: &Path) -> Result<Self, ImportError> {
        let dir = store.temp_path("archive");
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(StoreError::io("creating", &blobs))?;
        let staged = StagedArchive { dir };

        let mut reader =
            BufReader::with_capacity(256 * 1024, File::open(path).map_err(read_err(path))?);
        let gzipped = io::BufRead::fill_buf(&mut reader)
            .map_err(read_err(path))?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzipped {
            Box::new(flate2::read::MultiGzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut archive = tar::Archive::new(reader);
        let mut blob_count = 0u64;
        let mut seen: HashSet<String> = HashSet::new();
        for entry in archive.entries().map_err(read_err(path))? {
            let mut entry = entry.map_err(read_err(path))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw);
            let name = name.trim_start_matches("./");
            match name {
                "oci-layout" | "index.json" => {
                    let dest = staged.dir.join(name);
                    let mut out = File::create(&dest).map_err(StoreError::io("creating", &dest))?;
                    io::copy(&mut (&mut entry).take(MAX_JSON_BYTES), &mut out)
                        .map_err(read_err(path))?;
                }
                _ => {
                    let Some(hex) = name.strip_prefix("blobs/sha256/") else {
                        tracing::debug!(entry = %name, "ignoring archive entry");
                        continue;
                    };
                    let digest = format!("sha256:{hex}");
                    if sha256_hex(&digest).is_err() {
                        tracing::warn!(entry = %name, "ignoring blob with a malformed name");
                        continue;
                    }
                    if !seen.insert(digest.clone()) || store.blob_path(&digest)?.exists() {
                        continue;
                    }
                    let size = entry.header().size().unwrap_or(0);
                    tracing::info!(blob = %digest, size, "reading blob");
                    let dest = blobs.join(hex);
                    write_verified(&mut entry, &dest, &digest, path)?;
                    blob_count += 1;
                }
            }
        }
        tracing::debug!(archive = ?path, blobs = blob_count, "archive extracted");
        Ok(staged)
    }
}

impl Drop for StagedArchive {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc_with(annotations: &[(&str, &str)]) -> Descriptor {
        let mut d = Descriptor::new(
            MediaType::ImageManifest,
            1,
            oci_spec::image::Digest::try_from(format!("sha256:{}", "a".repeat(64))).unwrap(),
        );
        d.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        d
    }

    #[test]
    fn image_names_from_annotations() {
        assert_eq!(
            image_name(&desc_with(&[(ANNOTATION_REF_NAME, "busybox:latest")]))
                .unwrap()
                .as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            image_name(&desc_with(&[
                (ANNOTATION_REF_NAME, "1.35"),
                (ANNOTATION_IMAGE_NAME, "docker.io/library/busybox:1.35")
            ]))
            .unwrap()
            .as_deref(),
            Some("docker.io/library/busybox:1.35")
        );
        assert_eq!(
            image_name(&desc_with(&[(ANNOTATION_REF_NAME, "latest")])).unwrap(),
            None
        );
        assert_eq!(image_name(&desc_with(&[])).unwrap(), None);
        assert!(image_name(&desc_with(&[(ANNOTATION_REF_NAME, "Bad:Name:x")])).is_err());
    }
}
