//! The image garbage collector at work (kubelet's `realImageGCManager`):
//! it remembers when it first saw each image and when a container last
//! used it, reads the image filesystem, lets [`super::gc`] decide, and
//! removes images from the store. Every [`IMAGE_GC_PERIOD`] it frees space
//! down to the low threshold once usage reaches the high one (and images
//! past `--image-maximum-gc-age`); the eviction manager asks it to delete
//! every unused image before it evicts pods for disk pressure.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::gc::{
    GcPlan, IMAGE_GC_PERIOD, ImageGcError, ImageGcPolicy, ImageRecord, plan_free_space,
    plan_old_images,
};
use super::service::ImageService;
use crate::events::EventRecorder;

/// kubelet's node event reasons.
pub const FREE_DISK_SPACE_FAILED: &str = "FreeDiskSpaceFailed";
pub const IMAGE_GC_FAILED: &str = "ImageGCFailed";
pub const INVALID_DISK_CAPACITY: &str = "InvalidDiskCapacity";

#[derive(Debug, Clone, Copy)]
struct Seen {
    first_detected: SystemTime,
    last_used: Option<SystemTime>,
}

pub struct ImageGcManager {
    /// The store, through CRI's `ImageService`.
    images: Arc<dyn ImageService>,
    policy: ImageGcPolicy,
    events: EventRecorder,
    node_name: String,
    /// When the collector started (`--image-maximum-gc-age` counts from it).
    began: SystemTime,
    seen: Mutex<HashMap<String, Seen>>,
}

impl ImageGcManager {
    pub fn new(
        images: Arc<dyn ImageService>,
        policy: ImageGcPolicy,
        events: EventRecorder,
        node_name: &str,
    ) -> Self {
        ImageGcManager {
            images,
            policy,
            events,
            node_name: node_name.to_string(),
            began: SystemTime::now(),
            seen: Mutex::default(),
        }
    }

    /// kubelet's `detectImages`: records new images, marks those in use as
    /// used now, forgets removed ones; every image with its content.
    fn detect(
        &self,
        in_use: &BTreeSet<String>,
        now: SystemTime,
    ) -> Result<Vec<ImageRecord>, ImageGcError> {
        let ids: BTreeSet<String> = self
            .images
            .list_images()
            .map_err(|e| ImageGcError::Store(e.to_string()))?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut records = Vec::with_capacity(ids.len());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|id, _| ids.contains(id));
        for id in ids {
            let entry = seen.entry(id.clone()).or_insert(Seen {
                first_detected: now,
                last_used: None,
            });
            if in_use.contains(&id) {
                entry.last_used = Some(now);
            }
            let content = match self.images.image_content(&id) {
                Ok(content) => content,
                Err(e) => {
                    tracing::warn!(image = %id, "reading image content: {e}");
                    continue;
                }
            };
            records.push(ImageRecord {
                id,
                first_detected: entry.first_detected,
                last_used: entry.last_used,
                content,
            });
        }
        Ok(records)
    }

    /// Removes what `plan` names; the bytes it frees, or the errors.
    fn remove(&self, plan: &GcPlan, wanted: u64) -> Result<u64, ImageGcError> {
        let mut errors = Vec::new();
        for id in &plan.remove {
            tracing::info!(image = %id, "removing unused image");
            if let Err(e) = self.images.remove_image(id) {
                errors.push(e.to_string());
            }
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
        if errors.is_empty() {
            Ok(plan.bytes_freed)
        } else {
            Err(ImageGcError::Deletion {
                wanted,
                freed: plan.bytes_freed,
                errors: errors.join(", "),
            })
        }
    }

    /// kubelet's `GarbageCollect`: images past the maximum age, then, with
    /// the image filesystem at the high threshold, enough unused images to
    /// bring it to the low one. A shortfall is a `FreeDiskSpaceFailed` event.
    pub fn garbage_collect(&self, in_use: &BTreeSet<String>) -> Result<(), ImageGcError> {
        let now = SystemTime::now();
        let images = self.detect(in_use, now)?;
        let old = plan_old_images(&images, in_use, now, self.began, self.policy.max_age);
        if !old.remove.is_empty() {
            self.remove(&old, old.bytes_freed)?;
        }
        let fs = self
            .images
            .image_fs_info()
            .map_err(|e| ImageGcError::Store(crate::error_chain(&e)))?;
        let (capacity, available) = (fs.capacity_bytes, fs.available_bytes);
        let wanted = match self.policy.bytes_to_free(capacity, available) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.node_warning(INVALID_DISK_CAPACITY, e.to_string());
                return Err(e);
            }
        };
        tracing::info!(
            capacity,
            available,
            high_threshold = self.policy.high_threshold_percent,
            low_threshold = self.policy.low_threshold_percent,
            amount_to_free = wanted,
            "Disk usage on image filesystem is over the high threshold, trying to free bytes down to the low threshold"
        );
        let images = if old.remove.is_empty() {
            images
        } else {
            self.detect(in_use, now)?
        };
        let plan = plan_free_space(&images, in_use, wanted, now, self.policy.min_age);
        let freed = self.remove(&plan, wanted)?;
        if freed < wanted {
            let err = ImageGcError::NotEnoughFreed { wanted, freed };
            self.node_warning(FREE_DISK_SPACE_FAILED, err.to_string());
            return Err(err);
        }
        Ok(())
    }

    /// kubelet's `DeleteUnusedImages`: every unused image old enough,
    /// whatever the thresholds (the eviction manager's reclaim).
    pub fn delete_unused_images(&self, in_use: &BTreeSet<String>) -> Result<u64, ImageGcError> {
        let now = SystemTime::now();
        let images = self.detect(in_use, now)?;
        let plan = plan_free_space(&images, in_use, u64::MAX, now, self.policy.min_age);
        self.remove(&plan, u64::MAX)
    }

    fn node_warning(&self, reason: &str, message: String) {
        self.events.node_warning(&self.node_name, reason, message);
    }

    /// kubelet's image GC loop: at once, then every [`IMAGE_GC_PERIOD`]; a
    /// failure twice in a row is an `ImageGCFailed` event.
    pub async fn run(
        self: std::sync::Arc<Self>,
        in_use: impl Fn() -> BTreeSet<String> + Send + 'static,
    ) {
        let mut failed_before = false;
        loop {
            let used = in_use();
            let me = self.clone();
            let result = tokio::task::spawn_blocking(move || me.garbage_collect(&used)).await;
            match result {
                Ok(Err(e)) => {
                    if failed_before {
                        tracing::error!(
                            "Image garbage collection failed multiple times in a row: {e}"
                        );
                        self.node_warning(IMAGE_GC_FAILED, e.to_string());
                    } else {
                        tracing::error!(
                            "Image garbage collection failed once. Stats initialization may not have completed yet: {e}"
                        );
                    }
                    failed_before = true;
                }
                Ok(Ok(())) => failed_before = false,
                Err(e) => tracing::error!("image garbage collection panicked: {e}"),
            }
            tokio::time::sleep(IMAGE_GC_PERIOD).await;
        }
    }
}
