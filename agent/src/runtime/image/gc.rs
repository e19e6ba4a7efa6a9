//! Image garbage collection decisions (kubelet's `images.realImageGCManager`),
//! pure: the policy (`--image-gc-high-threshold`, `--image-gc-low-threshold`,
//! `--minimum-image-ttl-duration`, `--image-maximum-gc-age`), how much to
//! free, and which unused images go, least recently used first.
//!
//! Images share content (a base layer under many images): removing an image
//! frees only what no image that stays still references, so the plan counts
//! per blob, not per image.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// kubelet's `ImageGCPeriod`: how often the high threshold is checked.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(5 * 60);

/// The kubelet's `ImageGCPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// `imageGCHighThresholdPercent`: disk usage (of the image filesystem)
    /// at or above which image GC always runs.
    pub high_threshold_percent: i32,
    /// `imageGCLowThresholdPercent`: the usage GC frees down to.
    pub low_threshold_percent: i32,
    /// `imageMinimumGCAge`: an image seen for less than this is never collected.
    pub min_age: Duration,
    /// `imageMaximumGCAge`: an image unused for longer than this is collected
    /// whatever the disk usage (zero: never).
    pub max_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(2 * 60),
            max_age: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageGcError {
    #[error(
        "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) {0} must be between 0 and 100, inclusive"
    )]
    HighThresholdRange(i32),
    #[error(
        "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {0} must be between 0 and 100, inclusive"
    )]
    LowThresholdRange(i32),
    #[error(
        "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {low} must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) {high}"
    )]
    LowAboveHigh { low: i32, high: i32 },
    #[error(
        "invalid configuration: imageMaximumGCAge {max} must be greater than imageMinimumGCAge {min}"
    )]
    MaxAgeBelowMin { max: String, min: String },
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    #[error(
        "Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {freed} bytes eligible to free."
    )]
    NotEnoughFreed { wanted: u64, freed: u64 },
    #[error(
        "wanted to free {wanted} bytes, but freed {freed} bytes space with errors in image deletion: [{errors}]"
    )]
    Deletion {
        wanted: u64,
        freed: u64,
        errors: String,
    },
    #[error("{0}")]
    Store(String),
}

impl ImageGcPolicy {
    /// The kubelet's validation of these settings, with its messages.
    pub fn validate(&self) -> Result<(), ImageGcError> {
        let (high, low) = (self.high_threshold_percent, self.low_threshold_percent);
        if !(0..=100).contains(&high) {
            return Err(ImageGcError::HighThresholdRange(high));
        }
        if !(0..=100).contains(&low) {
            return Err(ImageGcError::LowThresholdRange(low));
        }
        if low >= high {
            return Err(ImageGcError::LowAboveHigh { low, high });
        }
        if !self.max_age.is_zero() && self.max_age <= self.min_age {
            use crate::config::kubelet_config::GoDuration;
            return Err(ImageGcError::MaxAgeBelowMin {
                max: GoDuration(self.max_age).to_string(),
                min: GoDuration(self.min_age).to_string(),
            });
        }
        Ok(())
    }

    /// Bytes to free so the image filesystem's usage drops to the low
    /// threshold, when it is at or above the high one (`None`: nothing to do).
    pub fn bytes_to_free(
        &self,
        capacity: u64,
        available: u64,
    ) -> Result<Option<u64>, ImageGcError> {
        if capacity == 0 {
            return Err(ImageGcError::InvalidCapacity);
        }
        let available = available.min(capacity);
        let usage_percent = 100 - (available as u128 * 100 / capacity as u128) as i64;
        if usage_percent < i64::from(self.high_threshold_percent) {
            return Ok(None);
        }
        let target_available =
            capacity as u128 * (100 - self.low_threshold_percent.clamp(0, 100)) as u128 / 100;
        Ok(Some((target_available as u64).saturating_sub(available)))
    }
}

/// What the collector knows of one image (by image ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: String,
    /// When the collector first saw the image in the store.
    pub first_detected: SystemTime,
    /// The last time a container used it (`None`: never seen in use).
    pub last_used: Option<SystemTime>,
    /// Content the image holds on disk: (blob or layer key, bytes).
    pub content: Vec<(String, u64)>,
}

/// Which images to remove, and what removing them frees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    pub remove: Vec<String>,
    pub bytes_freed: u64,
}

/// Unused images in the order the kubelet collects them: least recently
/// used first, ties by the earliest detected.
fn eviction_order<'a>(
    images: &'a [ImageRecord],
    in_use: &BTreeSet<String>,
) -> Vec<&'a ImageRecord> {
    let mut unused: Vec<&ImageRecord> = images.iter().filter(|i| !in_use.contains(&i.id)).collect();
    unused.sort_by(|a, b| {
        (a.last_used, a.first_detected, &a.id).cmp(&(b.last_used, b.first_detected, &b.id))
    });
    unused
}

/// Tracks which content each kept image references, so a removal frees
/// only the blobs nothing else holds.
struct ContentRefs(BTreeMap<String, usize>);

impl ContentRefs {
    fn of(images: &[ImageRecord]) -> Self {
        let mut refs = BTreeMap::new();
        for image in images {
            let keys: BTreeSet<&String> = image.content.iter().map(|(k, _)| k).collect();
            for key in keys {
                *refs.entry(key.clone()).or_insert(0) += 1;
            }
        }
        ContentRefs(refs)
    }

    /// Drops `image`'s references; the bytes of content nothing references now.
    fn release(&mut self, image: &ImageRecord) -> u64 {
        let mut freed = 0;
        let mut seen = BTreeSet::new();
        for (key, size) in &image.content {
            if !seen.insert(key) {
                continue;
            }
            if let Some(n) = self.0.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    freed += size;
                }
            }
        }
        freed
    }
}

/// kubelet's `freeSpace`: unused images old enough (`min_age` since first
/// seen), in eviction order, until `bytes_to_free` would be freed.
pub fn plan_free_space(
    images: &[ImageRecord],
    in_use: &BTreeSet<String>,
    bytes_to_free: u64,
    now: SystemTime,
    min_age: Duration,
) -> GcPlan {
    let mut refs = ContentRefs::of(images);
    let mut plan = GcPlan::default();
    for image in eviction_order(images, in_use) {
        if plan.bytes_freed >= bytes_to_free {
            break;
        }
        // An image just pulled is about to be used by the container it was pulled for.
        if now.duration_since(image.first_detected).unwrap_or_default() < min_age {
            continue;
        }
        plan.bytes_freed += refs.release(image);
        plan.remove.push(image.id.clone());
    }
    plan
}

/// kubelet's `freeOldImages`: with a maximum age, unused images not used
/// for longer than it, once the collector itself has run that long (so a
/// restart does not take every image it has not yet seen used).
pub fn plan_old_images(
    images: &[ImageRecord],
    in_use: &BTreeSet<String>,
    now: SystemTime,
    began: SystemTime,
    max_age: Duration,
) -> GcPlan {
    let mut plan = GcPlan::default();
    if max_age.is_zero() || now.duration_since(began).unwrap_or_default() <= max_age {
        return plan;
    }
    let mut refs = ContentRefs::of(images);
    for image in eviction_order(images, in_use) {
        let idle = image
            .last_used
            .map_or(Duration::MAX, |t| now.duration_since(t).unwrap_or_default());
        if idle > max_age {
            plan.bytes_freed += refs.release(image);
            plan.remove.push(image.id.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn image(id: &str, detected: u64, used: Option<u64>, content: &[(&str, u64)]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            first_detected: at(detected),
            last_used: used.map(at),
            content: content.iter().map(|(k, s)| (k.to_string(), *s)).collect(),
        }
    }

    fn ids(plan: &GcPlan) -> Vec<&str> {
        plan.remove.iter().map(String::as_str).collect()
    }

    #[test]
    fn defaults_are_the_kubelets() {
        let p = ImageGcPolicy::default();
        assert_eq!(
            (p.high_threshold_percent, p.low_threshold_percent),
            (85, 80)
        );
        assert_eq!(p.min_age, Duration::from_secs(120));
        assert_eq!(p.max_age, Duration::ZERO);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn validation_speaks_the_kubelets_words() {
        let p = |high, low| ImageGcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            ..Default::default()
        };
        assert_eq!(
            p(101, 80).validate().unwrap_err().to_string(),
            "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) 101 must be between 0 and 100, inclusive"
        );
        assert_eq!(
            p(85, -1).validate().unwrap_err().to_string(),
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) -1 must be between 0 and 100, inclusive"
        );
        assert_eq!(
            p(70, 80).validate().unwrap_err().to_string(),
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 80 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 70"
        );
        assert!(p(80, 80).validate().is_err());
        let ages = ImageGcPolicy {
            max_age: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(
            ages.validate().unwrap_err().to_string(),
            "invalid configuration: imageMaximumGCAge 1m0s must be greater than imageMinimumGCAge 2m0s"
        );
    }

    #[test]
    fn frees_down_to_the_low_threshold_once_at_the_high_one() {
        let p = ImageGcPolicy::default();
        // 84% used: below the high threshold.
        assert_eq!(p.bytes_to_free(100 * MIB, 16 * MIB), Ok(None));
        // 85% used: to 80% used is 5 MiB.
        assert_eq!(p.bytes_to_free(100 * MIB, 15 * MIB), Ok(Some(5 * MIB)));
        // More available than capacity counts as capacity.
        assert_eq!(p.bytes_to_free(100 * MIB, 200 * MIB), Ok(None));
        assert_eq!(
            p.bytes_to_free(0, 0).unwrap_err().to_string(),
            "invalid capacity 0 on image filesystem"
        );
    }

    #[test]
    fn least_recently_used_unused_images_go_first_until_enough_is_freed() {
        let images = [
            image("running", 0, Some(500), &[("r", 10 * MIB)]),
            image("recent", 0, Some(400), &[("b", 10 * MIB)]),
            image("never-used", 50, None, &[("c", 10 * MIB)]),
            image("old", 0, Some(100), &[("a", 10 * MIB)]),
        ];
        let in_use = BTreeSet::from(["running".to_string()]);
        let plan = plan_free_space(&images, &in_use, 15 * MIB, at(1000), Duration::ZERO);
        assert_eq!(ids(&plan), ["never-used", "old"]);
        assert_eq!(plan.bytes_freed, 20 * MIB);
        // Asking for everything never takes an image in use.
        let all = plan_free_space(&images, &in_use, u64::MAX, at(1000), Duration::ZERO);
        assert_eq!(ids(&all), ["never-used", "old", "recent"]);
    }

    #[test]
    fn ties_in_last_use_go_by_first_detection() {
        let images = [
            image("later", 20, None, &[("b", MIB)]),
            image("earlier", 10, None, &[("a", MIB)]),
        ];
        let plan = plan_free_space(&images, &BTreeSet::new(), MIB, at(1000), Duration::ZERO);
        assert_eq!(ids(&plan), ["earlier"]);
    }

    #[test]
    fn images_younger_than_the_minimum_age_stay() {
        let images = [
            image("fresh", 950, None, &[("a", MIB)]),
            image("aged", 100, Some(900), &[("b", MIB)]),
        ];
        let plan = plan_free_space(
            &images,
            &BTreeSet::new(),
            u64::MAX,
            at(1000),
            Duration::from_secs(120),
        );
        assert_eq!(ids(&plan), ["aged"]);
    }

    #[test]
    fn shared_content_is_freed_only_with_its_last_image() {
        // `app` and `tool` share the base layer with the running `base` image;
        // `app` and `tool` also share a middle layer.
        let images = [
            image("base", 0, Some(900), &[("base", 50 * MIB)]),
            image(
                "app",
                0,
                Some(100),
                &[("base", 50 * MIB), ("mid", 8 * MIB), ("app", MIB)],
            ),
            image(
                "tool",
                0,
                Some(200),
                &[("base", 50 * MIB), ("mid", 8 * MIB), ("tool", 2 * MIB)],
            ),
        ];
        let in_use = BTreeSet::from(["base".to_string()]);
        let one = plan_free_space(&images, &in_use, MIB, at(1000), Duration::ZERO);
        assert_eq!(ids(&one), ["app"]);
        assert_eq!(one.bytes_freed, MIB, "mid stays for tool, base for base");
        let both = plan_free_space(&images, &in_use, 4 * MIB, at(1000), Duration::ZERO);
        assert_eq!(ids(&both), ["app", "tool"]);
        assert_eq!(both.bytes_freed, MIB + 8 * MIB + 2 * MIB);
    }

    #[test]
    fn old_images_go_only_with_a_maximum_age_and_after_it_has_passed_since_start() {
        let images = [
            image("idle", 0, Some(100), &[("a", MIB)]),
            image("busy", 0, Some(990), &[("b", MIB)]),
            image("running", 0, Some(100), &[("c", MIB)]),
        ];
        let in_use = BTreeSet::from(["running".to_string()]);
        let max = Duration::from_secs(300);
        assert_eq!(
            plan_old_images(&images, &in_use, at(1000), at(0), Duration::ZERO),
            GcPlan::default()
        );
        // The collector started 200 s ago: too early to judge.
        assert_eq!(
            plan_old_images(&images, &in_use, at(1000), at(800), max),
            GcPlan::default()
        );
        let plan = plan_old_images(&images, &in_use, at(1000), at(0), max);
        assert_eq!(ids(&plan), ["idle"]);
        assert_eq!(plan.bytes_freed, MIB);
    }
}
