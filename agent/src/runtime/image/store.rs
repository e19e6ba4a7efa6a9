//! The content-addressed image store under `<root-dir>/images/`:
//!
//! ```text
//! images/
//!   blobs/sha256/<hex>   manifests, configs, compressed layers, as imported
//!   layers/<hex>/        each layer unpacked once, named by its diff_id, shared
//!                        read-only by every container (overlayfs lowerdirs)
//!   index.json           references -> manifest/config digests: all `resolve` reads
//!   index.lock           flock(2) serializing index updates across processes
//!   content.lock         flock(2): shared by imports and pulls, exclusive for removals
//!   tmp/                 work in progress; everything lands by rename(2)
//! ```
//!
//! Writers never modify anything in place: blobs and layers are written under
//! `tmp/` and renamed into place (an existing one wins, the copy is dropped),
//! and the index is rewritten under `index.lock` and renamed over the old one,
//! so readers never take a lock and never see half a file.
//!
//! An import or pull reuses the blobs and layers already in place, and only
//! names them in the index at its end; a removal in between would see them
//! unreferenced and delete them from under it. So imports and pulls hold a
//! [`ContentLease`] (a shared flock, across processes: `image import` runs
//! apart from the agent) from their first look at the store to their index
//! update, and a removal waits for the exclusive one.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::ImageError;
use super::import;
use super::reference::{Reference, is_sha256_hex};

const INDEX_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path:?}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image index {path:?} is not valid JSON")]
    Index {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image store is damaged: {what} ({path:?}); re-import the image")]
    Corrupt { what: String, path: PathBuf },
    #[error("invalid digest {digest:?} in the image store")]
    BadDigest { digest: String },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    }
}

/// One image as `image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalized reference (`docker.io/library/busybox:latest`); `None` for an
    /// image imported without a name.
    pub reference: Option<String>,
    /// `sha256:<hex>` of the image config: the image ID.
    pub id: String,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// Bytes of manifest, config and compressed layers.
    pub size: u64,
}

impl ImageSummary {
    /// `(repository, tag)` as `crictl images` prints them, `<none>` when absent.
    pub fn repository_and_tag(&self) -> (String, String) {
        match self.reference.as_deref().map(Reference::parse) {
            Some(Ok(r)) => (r.repository(), r.tag().unwrap_or("<none>").to_string()),
            _ => ("<none>".to_string(), "<none>".to_string()),
        }
    }
}

/// An image ready to run: its config and its unpacked layers.
#[derive(Debug, Clone)]
pub struct Image {
    /// Normalized reference the image was resolved by.
    pub reference: String,
    /// `sha256:<hex>` of the config.
    pub id: String,
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    /// Unpacked layer directories, bottom layer first.
    pub layer_dirs: Vec<PathBuf>,
    /// Pulled from its registry, not imported by the node's operator.
    pub pulled: bool,
}

/// What `index.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    pub version: u32,
    pub images: Vec<IndexRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub manifest: String,
    pub config: String,
    pub size: u64,
    /// Pulled from its registry (else imported from an archive or layout).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pulled: bool,
}

impl IndexRecord {
    fn summary(&self) -> ImageSummary {
        ImageSummary {
            reference: self.reference.clone(),
            id: self.config.clone(),
            manifest_digest: self.manifest.clone(),
            size: self.size,
        }
    }
}

impl Index {
    /// Adds or moves a reference to an image; an untagged image is kept once.
    pub(crate) fn upsert(&mut self, record: IndexRecord) {
        match &record.reference {
            Some(r) => self.images.retain(|i| {
                i.reference.as_ref() != Some(r)
                    && !(i.reference.is_none() && i.manifest == record.manifest)
            }),
            None => {
                if self.images.iter().any(|i| i.manifest == record.manifest) {
                    return;
                }
            }
        }
        self.images.push(record);
        self.images
            .sort_by(|a, b| (&a.reference, &a.manifest).cmp(&(&b.reference, &b.manifest)));
    }
}

/// A hold on the store's content: while one is held, no image removal
/// deletes a blob or layer (see the module's docs).
pub struct ContentLease {
    _lock: nix::fcntl::Flock<File>,
}

/// The image store. Cheap to clone paths out of; safe to use from several
/// threads and processes at once.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `<root_dir>/images`.
    pub fn open(root_dir: &Path) -> Result<Self, ImageError> {
        let root = root_dir.join("images");
        for dir in [
            root.join("blobs").join("sha256"),
            root.join("layers"),
            root.join("tmp"),
        ] {
            fs::create_dir_all(&dir).map_err(StoreError::io("creating", &dir))?;
        }
        // Layers hold images' setuid binaries: no host user but root may reach them.
        // (overlayfs reads lower layers with the mounter's credentials, so
        // containers are unaffected.)
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(StoreError::io("setting permissions of", &root))?;
        let store = ImageStore { root };
        store.remove_stale_temps();
        Ok(store)
    }

    /// The store at `<root_dir>/images` as it is, for reading: nothing is
    /// created or cleaned up.
    pub fn at(root_dir: &Path) -> Self {
        ImageStore {
            root: root_dir.join("images"),
        }
    }

    /// The store's own directory (`<root_dir>/images`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports every image in an OCI archive (tar, optionally gzipped) or OCI
    /// layout directory, verifying all digests and unpacking new layers.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageSummary>, ImageError> {
        Ok(import::import(self, path)?)
    }

    /// All images, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        Ok(self
            .read_index()?
            .images
            .iter()
            .map(IndexRecord::summary)
            .collect())
    }

    /// Finds an image by reference (`busybox`, `busybox:1.35`,
    /// `registry:5000/app@sha256:…`) or image ID (`sha256:<config hex>`).
    /// Reads only the index and the config: no hashing, no unpacking.
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        let index = self.read_index()?;
        let not_found = || ImageError::NotFound {
            reference: reference.to_string(),
        };
        let (record, normalized) = if let Some(id) = as_image_id(reference) {
            let record = index
                .images
                .iter()
                .find(|i| i.config == id)
                .ok_or_else(not_found)?;
            let name = record.reference.clone().unwrap_or_else(|| id.clone());
            (record, name)
        } else {
            let parsed = Reference::parse(reference)?;
            let normalized = parsed.to_string();
            let record = match parsed.digest() {
                Some(digest) => index.images.iter().find(|i| {
                    // A pull by digest records the reference as written (its
                    // digest may be an index's, not the stored manifest's).
                    i.reference.as_deref() == Some(normalized.as_str())
                        || (i.manifest == digest
                            && i.reference
                                .as_deref()
                                .and_then(|r| Reference::parse(r).ok())
                                .is_some_and(|r| r.repository() == parsed.repository()))
                }),
                None => index
                    .images
                    .iter()
                    .find(|i| i.reference.as_deref() == Some(normalized.as_str())),
            };
            (record.ok_or_else(not_found)?, normalized)
        };

        let config_path = self.blob_path(&record.config)?;
        let bytes =
            fs::read(&config_path).map_err(StoreError::io("reading image config", &config_path))?;
        let config: ImageConfiguration =
            serde_json::from_slice(&bytes).map_err(|_| StoreError::Corrupt {
                what: format!("config {} is not an image configuration", record.config),
                path: config_path.clone(),
            })?;
        let layer_dirs = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|diff_id| {
                let dir = self.layer_dir(diff_id)?;
                if !dir.is_dir() {
                    return Err(StoreError::Corrupt {
                        what: format!("layer {diff_id} of {normalized} is not unpacked"),
                        path: dir,
                    });
                }
                Ok(dir)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Image {
            reference: normalized,
            id: record.config.clone(),
            manifest_digest: record.manifest.clone(),
            config,
            layer_dirs,
            pulled: record.pulled,
        })
    }

    /// The files and layer dirs an image (by image ID) holds on disk: its
    /// manifests, config and compressed layers under `blobs/`, and its
    /// unpacked layers under `layers/`. Shared with other images as it may be.
    pub fn image_content(&self, id: &str) -> Result<BTreeSet<PathBuf>, ImageError> {
        let index = self.read_index()?;
        let records: Vec<&IndexRecord> = index.images.iter().filter(|r| r.config == id).collect();
        if records.is_empty() {
            return Err(ImageError::NotFound {
                reference: id.to_string(),
            });
        }
        let mut content = BTreeSet::new();
        for record in records {
            content.extend(self.record_content(record)?);
        }
        Ok(content)
    }

    /// Removes an image (every reference to its ID, as `crictl rmi` does)
    /// and whatever of its content no other image references. Waits for
    /// imports and pulls under way to land in the index first.
    pub fn remove_image(&self, id: &str) -> Result<(), ImageError> {
        let _exclusive = self.lock_content(nix::fcntl::FlockArg::LockExclusive)?;
        let removed = self.update_index(|index| {
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut index.images)
                .into_iter()
                .partition(|r| r.config == id);
            index.images = kept;
            (gone, index.images.clone())
        })?;
        let (gone, kept) = removed;
        if gone.is_empty() {
            return Err(ImageError::NotFound {
                reference: id.to_string(),
            });
        }
        let mut still_used = BTreeSet::new();
        for record in &kept {
            // Content of an image we cannot read stays: better a leftover than
            // a layer pulled from under a container.
            match self.record_content(record) {
                Ok(c) => still_used.extend(c),
                Err(e) => {
                    tracing::warn!(image = %record.config, "reading image content: {e}");
                    return Ok(());
                }
            }
        }
        for record in &gone {
            for path in self.record_content(record).unwrap_or_default() {
                if !still_used.contains(&path) {
                    remove_tree(&path);
                }
            }
        }
        Ok(())
    }

    /// The paths of one index record's manifest, config, layer blobs and
    /// unpacked layers.
    fn record_content(&self, record: &IndexRecord) -> Result<BTreeSet<PathBuf>, StoreError> {
        let mut content = BTreeSet::new();
        let manifest_path = self.blob_path(&record.manifest)?;
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(
            &fs::read(&manifest_path)
                .map_err(StoreError::io("reading manifest", &manifest_path))?,
        )
        .map_err(|_| StoreError::Corrupt {
            what: format!("manifest {} is not an image manifest", record.manifest),
            path: manifest_path.clone(),
        })?;
        content.insert(manifest_path);
        content.insert(self.blob_path(&record.config)?);
        for layer in manifest.layers() {
            content.insert(self.blob_path(&layer.digest().to_string())?);
        }
        let config_path = self.blob_path(&record.config)?;
        let config: ImageConfiguration = serde_json::from_slice(
            &fs::read(&config_path)
                .map_err(StoreError::io("reading image config", &config_path))?,
        )
        .map_err(|_| StoreError::Corrupt {
            what: format!("config {} is not an image configuration", record.config),
            path: config_path,
        })?;
        for diff_id in config.rootfs().diff_ids() {
            content.insert(self.layer_dir(diff_id)?);
        }
        Ok(content)
    }

    /// Holds the content in place for an import or pull until it is dropped.
    pub fn lease_content(&self) -> Result<ContentLease, StoreError> {
        Ok(ContentLease {
            _lock: self.lock_content(nix::fcntl::FlockArg::LockShared)?,
        })
    }

    fn lock_content(
        &self,
        how: nix::fcntl::FlockArg,
    ) -> Result<nix::fcntl::Flock<File>, StoreError> {
        let path = self.root.join("content.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("opening", &path))?;
        nix::fcntl::Flock::lock(file, how)
            .map_err(|(_, errno)| StoreError::io("locking", &path)(errno.into()))
    }

    // ---- internals shared with `import` ----

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .root
            .join("blobs")
            .join("sha256")
            .join(sha256_hex(digest)?))
    }

    /// `layers/<hex>` for a diff_id `sha256:<hex>`.
    pub(crate) fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers").join(sha256_hex(diff_id)?))
    }

    /// A fresh, unused path under `tmp/`, named so a later `open` can tell
    /// whether the process that made it is gone.
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{nanos}-{n}-{what}", std::process::id()))
    }

    /// Moves a verified blob from `tmp` into place. If another import got
    /// there first, its (identical) copy stays.
    pub(crate) fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<PathBuf, StoreError> {
        let dest = self.blob_path(digest)?;
        if dest.exists() {
            let _ = fs::remove_file(tmp);
        } else {
            fs::rename(tmp, &dest).map_err(StoreError::io("storing blob", &dest))?;
        }
        Ok(dest)
    }

    /// Moves an unpacked layer from `tmp` into `layers/`; first one wins.
    pub(crate) fn commit_layer(&self, tmp: &Path, diff_id: &str) -> Result<PathBuf, StoreError> {
        let dest = self.layer_dir(diff_id)?;
        // The layer must be on disk before its name says it is complete.
        if let Ok(dir) = File::open(tmp) {
            // SAFETY: syncfs on a valid open descriptor.
            unsafe { libc::syncfs(dir.as_raw_fd()) };
        }
        match fs::rename(tmp, &dest) {
            Ok(()) => Ok(dest),
            Err(e)
                if dest.is_dir()
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) =>
            {
                remove_tree(tmp);
                Ok(dest)
            }
            Err(e) => Err(StoreError::io("storing layer", &dest)(e)),
        }
    }

    pub(crate) fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Index { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index {
                version: INDEX_VERSION,
                images: Vec::new(),
            }),
            Err(e) => Err(StoreError::io("reading", &path)(e)),
        }
    }

    /// Read-modify-write of the index under an exclusive flock, replaced by rename.
    pub(crate) fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> T,
    ) -> Result<T, StoreError> {
        let lock_path = self.root.join("index.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(StoreError::io("opening", &lock_path))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| StoreError::io("locking", &lock_path)(errno.into()))?;

        let mut index = self.read_index()?;
        index.version = INDEX_VERSION;
        let out = change(&mut index);
        let path = self.index_path();
        let tmp = self.temp_path("index.json");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, &index)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::io("writing", &path)(e)
        })?;
        Ok(out)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Removes `tmp/` leftovers of processes that no longer exist (a crash mid-import).
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_string_lossy()
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new("/proc").join(p.to_string()).exists());
            if !alive {
                tracing::debug!(path = ?entry.path(), "removing stale temporary file");
                remove_tree(&entry.path());
            }
        }
    }
}

/// Removes a file or a directory tree, best effort (for cleanup paths).
pub(crate) fn remove_tree(path: &Path) {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = res {
        tracing::warn!(path = ?path, error = %e, "could not remove temporary files");
    }
}

/// `sha256:<hex>` → `<hex>`, refusing anything that is not a well-formed sha256
/// digest (the hex becomes a file name).
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(hex),
        _ => Err(StoreError::BadDigest {
            digest: digest.to_string(),
        }),
    }
}

/// `sha256:<64 hex>` or bare 64 hex: an image ID rather than a reference.
fn as_image_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    is_sha256_hex(hex).then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(reference: Option<&str>, manifest: &str) -> IndexRecord {
        IndexRecord {
            reference: reference.map(str::to_string),
            manifest: manifest.to_string(),
            config: format!("c-{manifest}"),
            size: 1,
            pulled: false,
        }
    }

    /// Writes an image of one layer (`layer`, its diff_id) into the store's
    /// blobs and layers, without indexing it: as an import does before its
    /// index update.
    fn write_image(store: &ImageStore, name: &str, layer: &str) -> IndexRecord {
        use sha2::{Digest, Sha256};
        let digest = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
        let write = |b: &[u8]| {
            let d = digest(b);
            fs::write(store.blob_path(&d).unwrap(), b).unwrap();
            d
        };
        let diff_id = digest(layer.as_bytes());
        let dir = store.layer_dir(&diff_id).unwrap();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("file"), layer).unwrap();
        let blob = write(layer.as_bytes());
        let config = serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "name": name})
        .to_string();
        let config_digest = write(config.as_bytes());
        let manifest = serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": blob, "size": layer.len()}]})
        .to_string();
        IndexRecord {
            reference: Some(format!("docker.io/library/{name}")),
            manifest: write(manifest.as_bytes()),
            config: config_digest,
            size: 1,
            pulled: false,
        }
    }

    #[test]
    fn a_removal_waits_for_an_import_that_reuses_its_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let old = write_image(&store, "old:v1", "shared layer");
        store.update_index(|i| i.upsert(old.clone())).unwrap();
        let layer = store.resolve("old:v1").unwrap().layer_dirs[0].clone();

        // An import finds the shared layer in place and reuses it...
        let lease = store.lease_content().unwrap();
        let new = write_image(&store, "new:v1", "shared layer");
        // ...while the collector removes the only image indexed with it.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let remover = {
            let (store, done, id) = (store.clone(), done.clone(), old.config.clone());
            std::thread::spawn(move || {
                let result = store.remove_image(&id);
                done.store(true, Ordering::SeqCst);
                result
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            !done.load(Ordering::SeqCst),
            "the removal waits for the import"
        );
        assert!(layer.join("file").exists());
        store.update_index(|i| i.upsert(new)).unwrap();
        drop(lease);
        remover.join().unwrap().unwrap();

        // The old image is gone; the layer the new one reuses is not.
        assert!(matches!(
            store.resolve("old:v1"),
            Err(ImageError::NotFound { .. })
        ));
        let image = store.resolve("new:v1").unwrap();
        assert_eq!(image.layer_dirs, [layer.clone()]);
        assert!(layer.join("file").exists());
        // Once nothing references it, it goes.
        store.remove_image(&image.id).unwrap();
        assert!(!layer.exists());
    }

    #[test]
    fn upsert_moves_tags_and_keeps_untagged_once() {
        let mut index = Index::default();
        index.upsert(rec(None, "m1"));
        index.upsert(rec(None, "m1"));
        assert_eq!(index.images.len(), 1);
        index.upsert(rec(Some("a:1"), "m1"));
        assert_eq!(index.images, vec![rec(Some("a:1"), "m1")]);
        index.upsert(rec(Some("a:1"), "m2"));
        index.upsert(rec(Some("a:2"), "m2"));
        assert_eq!(
            index.images,
            vec![rec(Some("a:1"), "m2"), rec(Some("a:2"), "m2")]
        );
    }

    #[test]
    fn digests_become_file_names_only_when_well_formed() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(sha256_hex(&good).unwrap(), "a".repeat(64));
        for bad in [
            "sha256:../../etc",
            "sha512:abcd",
            "a".repeat(64).as_str(),
            "sha256:",
        ] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_ids_are_told_from_references() {
        let hex = "b".repeat(64);
        assert_eq!(as_image_id(&hex), Some(format!("sha256:{hex}")));
        assert_eq!(
            as_image_id(&format!("sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(as_image_id("busybox"), None);
    }
}
