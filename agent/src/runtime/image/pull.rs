//! Pulls images from registries into the store: the client side of the OCI
//! distribution API, spoken by `oci-client`.
//!
//! A pull resolves the reference to a manifest (narrowing an index to this
//! node's platform), then brings the config and each layer blob into the
//! store, each checked against its digest and size. A blob the store already
//! holds is not fetched again; a download cut short is kept under
//! `images/partial/` and continued with a range request next time. Layers are
//! unpacked as an import unpacks them, and the reference lands in the index
//! last, so a failed pull leaves no half image behind.
//!
//! Registries are reached over HTTPS; over plain HTTP only those named by
//! `--insecure-registry` and loopback ones (`localhost`, `127.0.0.0/8`,
//! `[::1]`), which dockerd also treats as insecure without being told.

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::import::{
    ImportError, MAX_JSON_BYTES, check_image, check_layer, check_size, host_platform,
    unpack_layer_blob,
};
use super::platform::{ManifestKind, manifest_kind, select_manifest};
use super::reference::{Reference, ReferenceError};
use super::service::AuthConfig;
use super::store::{ImageStore, ImageSummary, IndexRecord, StoreError, sha256_hex};

/// What the client accepts for a manifest: OCI and Docker, images and indexes.
const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    super::platform::DOCKER_MANIFEST,
    super::platform::DOCKER_MANIFEST_LIST,
];
/// Indexes nested deeper than this are refused.
const MAX_INDEX_DEPTH: usize = 4;
/// How often a long download reports its progress in the log.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("failed to resolve reference {reference:?}: {reference}: not found")]
    NotFound { reference: String },
    #[error(
        "failed to resolve reference {reference:?}: pull access denied, repository does not exist or may require authorization: {detail}"
    )]
    Unauthorized { reference: String, detail: String },
    #[error("failed to resolve reference {reference:?}: {detail}")]
    Resolve { reference: String, detail: String },
    #[error("failed to copy {digest}: {detail}")]
    Fetch { digest: String, detail: String },
    #[error("{what} {digest}: {reason}")]
    BadManifest {
        what: &'static str,
        digest: String,
        reason: String,
    },
    #[error("no match for platform {wanted} in manifest {digest} (it has: {found})")]
    NoMatchingPlatform {
        digest: String,
        wanted: String,
        found: String,
    },
    #[error("blob {digest}: its content hashes to {actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("writing {path:?}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How registries are reached: which speak plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--insecure-registry`: `host[:port]` of registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
}

impl RegistryOptions {
    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        self.insecure_registries.iter().any(|r| r == registry) || is_loopback_registry(registry)
    }
}

/// `localhost[:port]`, `127.x.y.z[:port]`, `[::1][:port]`.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An image now in the store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub summary: ImageSummary,
    /// Blobs fetched from the registry (the rest were in the store).
    pub blobs_fetched: usize,
}

/// The registry client of one node: shared by every pull.
pub struct RegistryPuller {
    store: ImageStore,
    options: RegistryOptions,
    /// One download per blob at a time: two pulls sharing a layer must not
    /// append to the same partial file.
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One client per registry and identity: building one loads the TLS
    /// roots, and it keeps the registry's tokens for the next pull.
    clients: Mutex<HashMap<(String, String), oci_client::Client>>,
}

impl RegistryPuller {
    pub fn new(store: ImageStore, options: RegistryOptions) -> Self {
        // reqwest asks rustls for the process's provider: the workspace's ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        RegistryPuller {
            store,
            options,
            blob_locks: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Pulls `image` (CRI's `PullImage`), anonymously or with `auth`.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<PulledImage, PullError> {
        let reference = Reference::parse(image)?;
        let auth = match auth {
            Some(a) => RegistryAuth::Basic(a.username.clone(), a.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        self.pull_as(&reference, auth).await
    }

    async fn pull_as(
        &self,
        reference: &Reference,
        auth: RegistryAuth,
    ) -> Result<PulledImage, PullError> {
        let started = Instant::now();
        let normalized = reference.to_string();
        // Blobs and layers it reuses stay until the index names them; the
        // lock may wait for a removal under way.
        let store = self.store.clone();
        let _lease = tokio::task::spawn_blocking(move || store.lease_content())
            .await
            .map_err(|e| PullError::Write {
                path: self.store.root().to_path_buf(),
                source: std::io::Error::other(e),
            })??;
        let registry = Session::new(self, reference, auth)?;
        tracing::info!(image = %normalized, plain_http = registry.plain_http, "resolving image");
        let (manifest_digest, manifest_bytes, manifest) = registry.image_manifest().await?;
        let mut blobs_fetched = 0;
        self.store_json_blob(&manifest_digest, &manifest_bytes)?;

        let config_desc = manifest.config();
        let config_digest = config_desc.digest().to_string();
        if config_desc.size() > MAX_JSON_BYTES {
            return Err(ImportError::SizeMismatch {
                digest: config_digest,
                expected: MAX_JSON_BYTES,
                actual: config_desc.size(),
            }
            .into());
        }
        let (config_path, fetched) = registry.blob(config_desc, "config").await?;
        blobs_fetched += usize::from(fetched);
        let config_bytes =
            fs::read(&config_path).map_err(StoreError::io("reading", &config_path))?;
        let config: ImageConfiguration = parse_json("image config", &config_digest, &config_bytes)?;
        check_image(&manifest_digest, &config_digest, &manifest, &config)?;

        let diff_ids = config.rootfs().diff_ids().clone();
        let total = diff_ids.len();
        let mut size = manifest_bytes.len() as u64 + config_desc.size();
        for (i, (layer, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
            check_layer(layer, diff_id)?;
            let label = format!("layer {}/{total}", i + 1);
            let (blob, fetched) = registry.blob(layer, &label).await?;
            blobs_fetched += usize::from(fetched);
            size += layer.size();
            let store = self.store.clone();
            let digest = layer.digest().to_string();
            let diff_id = diff_id.clone();
            tokio::task::spawn_blocking(move || {
                unpack_layer_blob(&store, &blob, &digest, &diff_id, i + 1, total)
            })
            .await
            .map_err(|e| PullError::Write {
                path: self.store.root().to_path_buf(),
                source: std::io::Error::other(e),
            })??;
        }
        let record = IndexRecord {
            reference: Some(normalized.clone()),
            manifest: manifest_digest.clone(),
            config: config_digest.clone(),
            size,
            pulled: true,
        };
        self.store.update_index(|index| index.upsert(record))?;
        tracing::info!(
            image = %normalized,
            id = %config_digest,
            size,
            blobs_fetched,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        Ok(PulledImage {
            summary: ImageSummary {
                reference: Some(normalized),
                id: config_digest,
                manifest_digest,
                size,
            },
            blobs_fetched,
        })
    }

    /// Keeps a manifest (already checked against its digest) as a blob.
    fn store_json_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), PullError> {
        if self.store.blob_path(digest)?.exists() {
            return Ok(());
        }
        let tmp = self.store.temp_path("manifest");
        fs::write(&tmp, bytes).map_err(|source| PullError::Write {
            path: tmp.clone(),
            source,
        })?;
        self.store.commit_blob(&tmp, digest)?;
        Ok(())
    }

    fn blob_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.blob_locks.lock().expect("blob locks");
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(digest.to_string()).or_default().clone()
    }
}

/// One pull's conversation with one registry, under one identity.
struct Session<'a> {
    puller: &'a RegistryPuller,
    client: oci_client::Client,
    target: oci_client::Reference,
    normalized: String,
    auth: RegistryAuth,
    plain_http: bool,
}

impl<'a> Session<'a> {
    fn new(
        puller: &'a RegistryPuller,
        reference: &Reference,
        auth: RegistryAuth,
    ) -> Result<Self, PullError> {
        let normalized = reference.to_string();
        let target: oci_client::Reference =
            normalized
                .parse()
                .map_err(|e: oci_client::ParseError| PullError::Resolve {
                    reference: normalized.clone(),
                    detail: e.to_string(),
                })?;
        let plain_http = puller.options.is_plain_http(reference.domain());
        let protocol = if plain_http {
            ClientProtocol::HttpsExcept(vec![target.resolve_registry().to_string()])
        } else {
            ClientProtocol::Https
        };
        let identity = match &auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(user, password) => format!("basic\0{user}\0{password}"),
            RegistryAuth::Bearer(token) => format!("bearer\0{token}"),
        };
        let client = puller
            .clients
            .lock()
            .expect("clients")
            .entry((reference.domain().to_string(), identity))
            .or_insert_with(|| {
                oci_client::Client::new(ClientConfig {
                    protocol,
                    // Indexes are narrowed here, with the store's own rule.
                    platform_resolver: None,
                    connect_timeout: Some(Duration::from_secs(30)),
                    read_timeout: Some(Duration::from_secs(60)),
                    ..Default::default()
                })
            })
            .clone();
        Ok(Session {
            puller,
            client,
            target,
            normalized,
            auth,
            plain_http,
        })
    }

    /// The image manifest the reference names for this node's platform:
    /// `(digest, bytes as served, parsed)`.
    async fn image_manifest(&self) -> Result<(String, Vec<u8>, ImageManifest), PullError> {
        let mut target = self.target.clone();
        for _ in 0..MAX_INDEX_DEPTH {
            let (bytes, digest) = self
                .client
                .pull_manifest_raw(&target, &self.auth, ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| self.resolve_error(e))?;
            let kind = served_kind(&bytes).map_err(|reason| PullError::BadManifest {
                what: "manifest",
                digest: digest.clone(),
                reason,
            })?;
            match kind {
                ManifestKind::Image => {
                    let manifest: ImageManifest = parse_json("manifest", &digest, &bytes)?;
                    return Ok((digest, bytes.to_vec(), manifest));
                }
                ManifestKind::Index => {
                    let index: ImageIndex = parse_json("image index", &digest, &bytes)?;
                    let wanted = host_platform();
                    let chosen = select_manifest(&index, &wanted).map_err(|found| {
                        PullError::NoMatchingPlatform {
                            digest: digest.clone(),
                            wanted: wanted.clone(),
                            found,
                        }
                    })?;
                    tracing::debug!(image = %self.normalized, index = %digest, manifest = %chosen.digest(), "index narrowed to {wanted}");
                    target = oci_client::Reference::with_digest(
                        self.target.registry().to_string(),
                        self.target.repository().to_string(),
                        chosen.digest().to_string(),
                    );
                }
                ManifestKind::Unsupported => unreachable!("served_kind refuses it"),
            }
        }
        Err(PullError::BadManifest {
            what: "image index",
            digest: self.normalized.clone(),
            reason: format!("nested more than {MAX_INDEX_DEPTH} deep"),
        })
    }

    /// Makes sure the store holds the blob `desc` names: `(path, fetched)`.
    async fn blob(&self, desc: &Descriptor, label: &str) -> Result<(PathBuf, bool), PullError> {
        let digest = desc.digest().to_string();
        let store = &self.puller.store;
        let dest = store.blob_path(&digest)?;
        if let Ok(meta) = fs::metadata(&dest) {
            check_size(&digest, desc.size(), meta.len())?;
            tracing::info!(image = %self.normalized, blob = %digest, "{label} already in the store");
            return Ok((dest, false));
        }
        let lock = self.puller.blob_lock(&digest);
        let _held = lock.lock().await;
        // Another pull may have brought it while this one waited.
        if dest.exists() {
            return Ok((dest, false));
        }
        let partial = partial_path(store, &digest)?;
        match self.download(desc, &partial, label).await {
            Ok(()) => {}
            Err(
                e @ (PullError::DigestMismatch { .. }
                | PullError::Image(ImportError::SizeMismatch { .. })),
            ) => {
                let _ = fs::remove_file(&partial);
                return Err(e);
            }
            // Anything else (a cut connection): the partial file stays for the next try.
            Err(e) => return Err(e),
        }
        Ok((store.commit_blob(&partial, &digest)?, true))
    }

    /// Fetches a blob into `partial`, continuing what an earlier try left there.
    async fn download(
        &self,
        desc: &Descriptor,
        partial: &std::path::Path,
        label: &str,
    ) -> Result<(), PullError> {
        let digest = desc.digest().to_string();
        let expected = desc.size();
        let write_err = |source| PullError::Write {
            path: partial.to_path_buf(),
            source,
        };
        let mut hasher = Sha256::new();
        let mut have = match fs::metadata(partial) {
            Ok(m) if m.len() > 0 && m.len() < expected => {
                let bytes = fs::read(partial).map_err(write_err)?;
                hasher.update(&bytes);
                m.len()
            }
            _ => 0,
        };
        let layer = oci_client::client::LayerDescriptor {
            digest: &digest,
            urls: &None,
        };
        let response = self
            .client
            .pull_blob_stream_partial(&self.target, &layer, have, None)
            .await
            .map_err(|e| PullError::Fetch {
                digest: digest.clone(),
                detail: describe(&e),
            })?;
        let mut stream = match response {
            oci_client::client::BlobResponse::Partial(s) => {
                if have > 0 {
                    tracing::info!(image = %self.normalized, blob = %digest, offset = have, "{label}: continuing an interrupted download");
                }
                s
            }
            oci_client::client::BlobResponse::Full(s) => {
                // The registry sent it all: start over.
                hasher = Sha256::new();
                have = 0;
                s
            }
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(have > 0)
            .truncate(have == 0)
            .open(partial)
            .await
            .map_err(write_err)?;
        tracing::info!(image = %self.normalized, blob = %digest, size = expected, "{label}: downloading");
        let started = Instant::now();
        let mut last_report = Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PullError::Fetch {
                digest: digest.clone(),
                detail: crate::error_chain(&e),
            })?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_err)?;
            have += chunk.len() as u64;
            if have > expected {
                break;
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                tracing::info!(
                    image = %self.normalized,
                    blob = %digest,
                    "{label}: {} of {} ({}%) in {}s",
                    super::cli::human_size(have),
                    super::cli::human_size(expected),
                    have * 100 / expected.max(1),
                    started.elapsed().as_secs()
                );
            }
        }
        file.flush().await.map_err(write_err)?;
        file.sync_all().await.map_err(write_err)?;
        check_size(&digest, expected, have)?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(PullError::DigestMismatch { digest, actual });
        }
        Ok(())
    }

    fn resolve_error(&self, e: OciDistributionError) -> PullError {
        let reference = self.normalized.clone();
        match &e {
            OciDistributionError::ImageManifestNotFoundError(_) => {
                PullError::NotFound { reference }
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|x| {
                    matches!(
                        x.code,
                        OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
                    )
                }) =>
            {
                PullError::NotFound { reference }
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => PullError::Unauthorized {
                reference,
                detail: describe(&e),
            },
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|x| {
                    matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                PullError::Unauthorized {
                    reference,
                    detail: describe(&e),
                }
            }
            _ => PullError::Resolve {
                reference,
                detail: describe(&e),
            },
        }
    }
}

/// The registry's own words for a failure, with the causes of a transport error.
fn describe(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            let errors: Vec<String> = envelope
                .errors
                .iter()
                .map(|x| format!("{:?}: {}", x.code, x.message))
                .collect();
            format!("{url}: {}", errors.join("; "))
        }
        OciDistributionError::UnauthorizedError { url } => format!("{url}: 401 Unauthorized"),
        other => crate::error_chain(other),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &str,
    bytes: &[u8],
) -> Result<T, PullError> {
    serde_json::from_slice(bytes).map_err(|e| PullError::BadManifest {
        what,
        digest: digest.to_string(),
        reason: e.to_string(),
    })
}

/// Whether the served JSON is an image or an index: its `mediaType`, else
/// its shape (OCI lets an image manifest leave `mediaType` out).
fn served_kind(bytes: &[u8]) -> Result<ManifestKind, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let kind = match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => manifest_kind(&MediaType::from(m)),
        None if value.get("manifests").is_some() => ManifestKind::Index,
        None if value.get("layers").is_some() => ManifestKind::Image,
        None => ManifestKind::Unsupported,
    };
    match kind {
        ManifestKind::Unsupported => Err(format!(
            "unsupported manifest media type {:?}",
            value
                .get("mediaType")
                .and_then(|m| m.as_str())
                .unwrap_or("")
        )),
        k => Ok(k),
    }
}

/// `images/partial/<hex>`: outlives the process (unlike `tmp/`), so a pull
/// cut short continues where it stopped.
fn partial_path(store: &ImageStore, digest: &str) -> Result<PathBuf, PullError> {
    let dir = store.root().join("partial");
    fs::create_dir_all(&dir).map_err(StoreError::io("creating", &dir))?;
    Ok(dir.join(sha256_hex(digest)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_speak_plain_http() {
        let options = RegistryOptions {
            insecure_registries: vec!["registry.lab:5000".into()],
        };
        for plain in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "registry.lab:5000",
        ] {
            assert!(options.is_plain_http(plain), "{plain}");
        }
        for tls in [
            "docker.io",
            "registry.lab",
            "10.0.0.1:5000",
            "registry.lab:5001",
        ] {
            assert!(!options.is_plain_http(tls), "{tls}");
        }
    }

    #[test]
    fn served_manifests_are_told_apart() {
        let oci_index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(served_kind(oci_index), Ok(ManifestKind::Index));
        let bare_image = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(served_kind(bare_image), Ok(ManifestKind::Image));
        let docker_list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert_eq!(served_kind(docker_list), Ok(ManifestKind::Index));
        let schema1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(served_kind(schema1).unwrap_err().contains("unsupported"));
    }
}
