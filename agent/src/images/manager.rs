//! The kubelet's image manager (`EnsureImageExists`): before a container is
//! created, makes sure its image is in the store as its `imagePullPolicy`
//! asks, pulling with the pod's `imagePullSecrets`, and says so in the
//! kubelet's events and waiting reasons:
//!
//! - `Pulled` "Container image \"x\" already present on machine"
//! - `Pulling` "Pulling image \"x\"", then `Pulled` "Successfully pulled image
//!   \"x\" in 1.2s (1.5s including waiting). Image size: N bytes." or
//!   `Failed` "Failed to pull image \"x\": …" (waiting reason `ErrImagePull`)
//! - while a failed pull backs off: `BackOff` "Back-off pulling image \"x\""
//!   (waiting reason `ImagePullBackOff`, 10 s doubling to 5 min per pod and image)
//! - `ErrImageNeverPull` for a missing image whose policy is `Never`.
//!
//! Pulls run one at a time (`--serialize-image-pulls`, the default) or up to
//! `--max-parallel-image-pulls` at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kubelab_rules::image_pull_policy::PullPolicy;
use tokio::sync::Semaphore;

use super::credentials::Keyring;
use crate::config::kubelet_config::GoDuration;
use crate::events::EventRecorder;
use crate::kubeapi::objects::ObjectGetter;
use crate::runtime::image::fake::FakeImageService;
use crate::runtime::image::{
    ImageError, ImageService, ImageSummary, PullError, Reference, RegistryOptions,
};

/// The kubelet's image pull back-off: 10 s doubling to 5 min.
pub const PULL_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const PULL_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How many pulls may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullConcurrency {
    /// `--serialize-image-pulls` (the default): one at a time.
    Serial,
    /// `--serialize-image-pulls=false`: up to this many (`None`: no limit).
    Parallel(Option<u32>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PullOptionsError {
    #[error(
        "invalid configuration: maxParallelImagePulls (--max-parallel-image-pulls) {0} must be a positive number"
    )]
    NotPositive(i32),
    #[error(
        "invalid configuration: maxParallelImagePulls (--max-parallel-image-pulls) {0} must be 1 or nil when serializeImagePulls (--serialize-image-pulls) is true"
    )]
    ParallelWhileSerialized(i32),
}

impl PullConcurrency {
    /// From the kubelet's two settings, validated as the kubelet validates them.
    pub fn from_settings(
        serialize_image_pulls: bool,
        max_parallel_image_pulls: Option<i32>,
    ) -> Result<Self, PullOptionsError> {
        match max_parallel_image_pulls {
            Some(n) if n < 1 => Err(PullOptionsError::NotPositive(n)),
            Some(n) if serialize_image_pulls && n > 1 => {
                Err(PullOptionsError::ParallelWhileSerialized(n))
            }
            _ if serialize_image_pulls => Ok(PullConcurrency::Serial),
            n => Ok(PullConcurrency::Parallel(n.map(|n| n as u32))),
        }
    }

    fn permits(self) -> Option<usize> {
        match self {
            PullConcurrency::Serial => Some(1),
            PullConcurrency::Parallel(n) => n.map(|n| n as usize),
        }
    }
}

/// Everything about pulling that the node's flags set.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub concurrency: PullConcurrency,
    pub registries: RegistryOptions,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            concurrency: PullConcurrency::Serial,
            registries: RegistryOptions::default(),
        }
    }
}

/// Whether the store has an image, and how it got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Absent,
    /// Put there by `image import`: the node's operator pinned it.
    Imported,
    /// Pulled from its registry earlier.
    Pulled,
}

/// What to do about an image, from its policy and the store (the kubelet's
/// `shouldPullImage`). One deliberate difference: `Always` re-resolves an
/// image against its registry only if it came from one. An imported image
/// is what the operator chose for this node, and often the only copy there
/// is (a node without a route to Docker Hub still runs `busybox`, which
/// defaults to `Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    UsePresent,
    Pull,
    /// `Never`, and the image is missing.
    NeverPullMissing,
}

pub fn decide(policy: PullPolicy, presence: Presence) -> PullDecision {
    match (policy, presence) {
        (PullPolicy::Always, Presence::Absent | Presence::Pulled) => PullDecision::Pull,
        (PullPolicy::IfNotPresent, Presence::Absent) => PullDecision::Pull,
        (PullPolicy::Never, Presence::Absent) => PullDecision::NeverPullMissing,
        (_, Presence::Imported | Presence::Pulled) => PullDecision::UsePresent,
    }
}

/// The kubelet's `flowcontrol.Backoff` for pulls, keyed by `<pod uid>_<image>`.
#[derive(Debug, Default)]
pub struct PullBackoff {
    entries: HashMap<String, (Duration, Instant)>,
}

impl PullBackoff {
    /// A pull failed at `now`: the next is held back 10 s, then twice as
    /// long after each failure, up to 5 min; an entry idle for twice the
    /// maximum starts over.
    pub fn next(&mut self, key: &str, now: Instant) {
        let delay = match self.entries.get(key) {
            Some((d, at)) if now.duration_since(*at) <= 2 * PULL_BACKOFF_MAX => {
                (*d * 2).min(PULL_BACKOFF_MAX)
            }
            _ => PULL_BACKOFF_INITIAL,
        };
        self.entries.insert(key.to_string(), (delay, now));
    }

    /// Whether `key` is still waiting out its back-off at `now`.
    pub fn is_in_backoff(&self, key: &str, now: Instant) -> bool {
        self.entries
            .get(key)
            .is_some_and(|(d, at)| now.duration_since(*at) < *d)
    }

    /// Forgets entries whose back-off ran out long ago.
    pub fn gc(&mut self, now: Instant) {
        self.entries
            .retain(|_, (_, at)| now.duration_since(*at) <= 2 * PULL_BACKOFF_MAX);
    }
}

/// Why a container's image is not there: its waiting reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePullFailure {
    /// `ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`,
    /// `InvalidImageName` or `ErrImageInspect`.
    pub reason: &'static str,
    pub message: String,
}

pub struct ImageManager {
    /// The store and registries (CRI's `ImageService`).
    images: Arc<dyn ImageService>,
    limit: Option<Arc<Semaphore>>,
    backoff: Mutex<PullBackoff>,
    /// The last failure per back-off key, for the `ImagePullBackOff` message.
    last_errors: Mutex<HashMap<String, String>>,
    events: EventRecorder,
}

impl ImageManager {
    pub fn new(
        images: Arc<dyn ImageService>,
        concurrency: PullConcurrency,
        events: EventRecorder,
    ) -> Self {
        ImageManager {
            images,
            limit: concurrency.permits().map(|n| Arc::new(Semaphore::new(n))),
            backoff: Mutex::default(),
            last_errors: Mutex::default(),
            events,
        }
    }

    /// The image manager of a node without registries or a real store: a
    /// pretend image service that has every image.
    pub fn detached(events: EventRecorder) -> Self {
        Self::new(
            Arc::new(FakeImageService::with_every_image()),
            PullConcurrency::Parallel(None),
            events,
        )
    }

    /// The image service it pulls through.
    pub fn service(&self) -> &Arc<dyn ImageService> {
        &self.images
    }

    /// Makes sure `container`'s image is in the store, as its policy says.
    pub async fn ensure_image_exists(
        &self,
        pod: &Pod,
        container: &Container,
        objects: &dyn ObjectGetter,
    ) -> Result<(), ImagePullFailure> {
        let image = container.image.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let key = format!(
            "{namespace}/{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let name = Some(container.name.as_str());
        let presence = match self.images.image_status(&image) {
            Ok(Some(found)) if found.pinned => Presence::Imported,
            Ok(Some(_)) => Presence::Pulled,
            Ok(None) => Presence::Absent,
            Err(ImageError::Reference(e)) => {
                let message = format!(
                    "Failed to apply default image tag {image:?}: couldn't parse image reference {image:?}: {e}"
                );
                self.events
                    .warning(&key, name, "InspectFailed", message.clone());
                return Err(ImagePullFailure {
                    reason: "InvalidImageName",
                    message,
                });
            }
            Err(e) => {
                let message = format!(
                    "Failed to inspect image {image:?}: {}",
                    crate::error_chain(&e)
                );
                self.events
                    .warning(&key, name, "InspectFailed", message.clone());
                return Err(ImagePullFailure {
                    reason: "ErrImageInspect",
                    message,
                });
            }
        };
        let policy = PullPolicy::of_container(&image, container.image_pull_policy.as_deref());
        match decide(policy, presence) {
            PullDecision::UsePresent => {
                self.events.normal(
                    &key,
                    name,
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                );
                return Ok(());
            }
            PullDecision::NeverPullMissing => {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.events
                    .warning(&key, name, "ErrImageNeverPull", message.clone());
                return Err(ImagePullFailure {
                    reason: "ErrImageNeverPull",
                    message,
                });
            }
            PullDecision::Pull => {}
        }

        let backoff_key = format!("{}_{image}", pod.metadata.uid.as_deref().unwrap_or(&key));
        if self
            .backoff
            .lock()
            .expect("backoff")
            .is_in_backoff(&backoff_key, Instant::now())
        {
            let message = format!("Back-off pulling image {image:?}");
            self.events.normal(&key, name, "BackOff", message.clone());
            let previous = self
                .last_errors
                .lock()
                .expect("last errors")
                .get(&backoff_key)
                .cloned();
            return Err(ImagePullFailure {
                reason: "ImagePullBackOff",
                message: match previous {
                    Some(p) => format!("{message}: {p}"),
                    None => message,
                },
            });
        }

        let keyring = self.keyring(pod, &key, objects);
        self.events
            .normal(&key, name, "Pulling", format!("Pulling image {image:?}"));
        let started = Instant::now();
        let _permit = match &self.limit {
            Some(limit) => Some(limit.clone().acquire_owned().await.expect("never closed")),
            None => None,
        };
        let pull_started = Instant::now();
        let result = self.pull_with(&image, &keyring).await;
        drop(_permit);
        match result {
            Ok(pulled) => {
                let ms = |d: Duration| GoDuration(Duration::from_millis(d.as_millis() as u64));
                self.events.normal(
                    &key,
                    name,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {} ({} including waiting). Image size: {} bytes.",
                        ms(pull_started.elapsed()),
                        ms(started.elapsed()),
                        pulled.size
                    ),
                );
                self.backoff.lock().expect("backoff").gc(Instant::now());
                self.last_errors
                    .lock()
                    .expect("last errors")
                    .remove(&backoff_key);
                Ok(())
            }
            Err(errors) => {
                let message = pull_failure_message(&image, &errors);
                self.events.warning(
                    &key,
                    name,
                    "Failed",
                    format!("Failed to pull image {image:?}: {message}"),
                );
                self.backoff
                    .lock()
                    .expect("backoff")
                    .next(&backoff_key, Instant::now());
                self.last_errors
                    .lock()
                    .expect("last errors")
                    .insert(backoff_key, format!("ErrImagePull: {message}"));
                Err(ImagePullFailure {
                    reason: "ErrImagePull",
                    message,
                })
            }
        }
    }

    /// Pulls `image` as the kubelet's runtime manager does: anonymously
    /// when the keyring has nothing for its repository, else with each
    /// matching credential, most specific first, until one succeeds; the
    /// errors of every try.
    async fn pull_with(
        &self,
        image: &str,
        keyring: &Keyring,
    ) -> Result<ImageSummary, Vec<PullError>> {
        let credentials = Reference::parse(image)
            .map(|r| keyring.lookup(&r.repository()))
            .unwrap_or_default();
        if credentials.is_empty() {
            return self
                .images
                .pull_image(image, None)
                .await
                .map_err(|e| vec![e]);
        }
        let mut errors = Vec::new();
        for credential in credentials {
            tracing::debug!(
                image,
                registry = %credential.registry,
                username = %credential.auth.username,
                "pulling with credentials"
            );
            match self.images.pull_image(image, Some(&credential.auth)).await {
                Ok(pulled) => return Ok(pulled),
                Err(e) => errors.push(e),
            }
        }
        Err(errors)
    }

    /// The pod's pull secrets, read through the API; those that cannot be
    /// read are named in a `FailedToRetrieveImagePullSecret` event and the
    /// pull goes on without them, as the kubelet does.
    fn keyring(&self, pod: &Pod, key: &str, objects: &dyn ObjectGetter) -> Keyring {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !n.is_empty())
            .collect();
        let mut secrets: Vec<Secret> = Vec::new();
        let mut failed = Vec::new();
        for name in names {
            match objects.secret(namespace, &name) {
                Ok(secret) => secrets.push((*secret).clone()),
                Err(e) => {
                    tracing::warn!(pod = %key, secret = %name, "image pull secret: {e}");
                    failed.push(name);
                }
            }
        }
        if !failed.is_empty() {
            self.events.warning(
                key,
                None,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    failed.join(", ")
                ),
            );
        }
        let (keyring, errors) = Keyring::from_secrets(&secrets);
        for e in errors {
            tracing::warn!(pod = %key, "image pull secret: {e}");
        }
        keyring
    }
}

/// The runtime's words for a failed pull, as containerd words them; one
/// cause per credential tried.
fn pull_failure_message(image: &str, errors: &[PullError]) -> String {
    let normalized =
        crate::runtime::image::reference::normalize(image).unwrap_or_else(|_| image.to_string());
    let causes: Vec<String> = errors.iter().map(|e| crate::error_chain(e)).collect();
    format!(
        "failed to pull and unpack image {normalized:?}: {}",
        causes.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_like_should_pull_image() {
        use PullDecision::*;
        use PullPolicy::*;
        assert_eq!(decide(Always, Presence::Pulled), Pull);
        assert_eq!(decide(Always, Presence::Absent), Pull);
        assert_eq!(decide(IfNotPresent, Presence::Pulled), UsePresent);
        assert_eq!(decide(IfNotPresent, Presence::Absent), Pull);
        assert_eq!(decide(Never, Presence::Pulled), UsePresent);
        assert_eq!(decide(Never, Presence::Absent), NeverPullMissing);
        // Imported images are the operator's: used as they are.
        assert_eq!(decide(Always, Presence::Imported), UsePresent);
        assert_eq!(decide(IfNotPresent, Presence::Imported), UsePresent);
        assert_eq!(decide(Never, Presence::Imported), UsePresent);
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets_when_idle() {
        let mut b = PullBackoff::default();
        let t0 = Instant::now();
        assert!(!b.is_in_backoff("k", t0));
        let mut at = t0;
        let mut delays = Vec::new();
        for _ in 0..7 {
            b.next("k", at);
            delays.push(b.entries["k"].0.as_secs());
            assert!(b.is_in_backoff("k", at + Duration::from_secs(9)));
            at += b.entries["k"].0;
            assert!(!b.is_in_backoff("k", at));
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        // Idle for more than twice the maximum: back to 10 s.
        b.next("k", at + Duration::from_secs(601));
        assert_eq!(b.entries["k"].0, PULL_BACKOFF_INITIAL);
        b.gc(at + Duration::from_secs(601 + 601));
        assert!(b.entries.is_empty());
        // Keys are independent.
        b.next("a", t0);
        assert!(!b.is_in_backoff("b", t0));
    }

    #[test]
    fn pull_settings_are_validated_like_the_kubelets() {
        assert_eq!(
            PullConcurrency::from_settings(true, None),
            Ok(PullConcurrency::Serial)
        );
        assert_eq!(
            PullConcurrency::from_settings(true, Some(1)),
            Ok(PullConcurrency::Serial)
        );
        assert_eq!(
            PullConcurrency::from_settings(false, Some(3)),
            Ok(PullConcurrency::Parallel(Some(3)))
        );
        assert_eq!(
            PullConcurrency::from_settings(false, None),
            Ok(PullConcurrency::Parallel(None))
        );
        assert_eq!(
            PullConcurrency::from_settings(true, Some(2))
                .unwrap_err()
                .to_string(),
            "invalid configuration: maxParallelImagePulls (--max-parallel-image-pulls) 2 must be 1 or nil when serializeImagePulls (--serialize-image-pulls) is true"
        );
        assert!(PullConcurrency::from_settings(false, Some(0)).is_err());
    }

    fn pod_with(image: &str, policy: Option<&str>) -> (Pod, Container) {
        let container = Container {
            name: "web".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(str::to_string),
            ..Default::default()
        };
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("uid-1".into());
        (pod, container)
    }

    fn reasons(events: &EventRecorder) -> Vec<String> {
        events.list().into_iter().map(|e| e.reason).collect()
    }

    #[tokio::test]
    async fn pulls_through_the_image_service_as_the_policy_says() {
        let service = Arc::new(FakeImageService::empty());
        let events = EventRecorder::default();
        let manager = ImageManager::new(service.clone(), PullConcurrency::Serial, events.clone());
        let objects = crate::kubeapi::objects::NoApiObjects;

        // Absent, IfNotPresent: pulled once, then present.
        let (pod, c) = pod_with("app:v1", Some("IfNotPresent"));
        manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap();
        manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap();
        assert_eq!(service.pulls(), ["docker.io/library/app:v1"]);
        assert_eq!(reasons(&events), ["Pulling", "Pulled", "Pulled"]);
        assert!(
            events.list()[2]
                .message
                .contains("already present on machine")
        );

        // A pinned (imported) image is used as it is, even with Always.
        service.import("busybox");
        let (pod, c) = pod_with("busybox", None);
        manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap();
        assert_eq!(service.pulls().len(), 1);

        // Never, and missing.
        let (pod, c) = pod_with("gone:v1", Some("Never"));
        let failure = manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap_err();
        assert_eq!(failure.reason, "ErrImageNeverPull");
    }

    #[tokio::test]
    async fn a_failed_pull_is_err_image_pull_then_image_pull_back_off() {
        let service = Arc::new(FakeImageService::empty());
        service.fail_pulls_of("app:nope");
        let events = EventRecorder::default();
        let manager = ImageManager::new(service.clone(), PullConcurrency::Serial, events.clone());
        let objects = crate::kubeapi::objects::NoApiObjects;
        let (pod, c) = pod_with("app:nope", None);
        let first = manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap_err();
        assert_eq!(first.reason, "ErrImagePull");
        let second = manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap_err();
        assert_eq!(second.reason, "ImagePullBackOff");
        assert!(
            second
                .message
                .starts_with("Back-off pulling image \"app:nope\": ErrImagePull: "),
            "{}",
            second.message
        );
        assert_eq!(service.pulls().len(), 1, "no pull while backing off");
        assert_eq!(reasons(&events), ["Pulling", "Failed", "BackOff"]);
    }

    #[tokio::test]
    async fn pull_secrets_become_one_auth_config_per_try_most_specific_first() {
        use k8s_openapi::ByteString;
        let service = Arc::new(FakeImageService::empty());
        let events = EventRecorder::default();
        let manager = ImageManager::new(service.clone(), PullConcurrency::Serial, events.clone());
        let config = serde_json::json!({"auths": {
            "r:5000": {"username": "host", "password": "x"},
            "r:5000/team": {"username": "team", "password": "y"},
        }});
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("regcred".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some(
                [(
                    super::super::credentials::DOCKER_CONFIG_JSON_KEY.to_string(),
                    ByteString(config.to_string().into_bytes()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let objects = crate::kubeapi::objects::InMemoryObjects {
            secrets: vec![secret],
            ..Default::default()
        };
        let with_regcred = |image: &str| {
            let (mut pod, c) = pod_with(image, None);
            pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
                image_pull_secrets: Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
                    name: "regcred".into(),
                }]),
                ..Default::default()
            });
            (pod, c)
        };
        let (pod, c) = with_regcred("r:5000/team/app:v1");

        // The team's login is refused: the host-wide one is tried next.
        service.refuse_user("team");
        manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap();
        assert_eq!(
            service.pull_users(),
            [Some("team".to_string()), Some("host".to_string())]
        );

        // Both refused: one cause per try, in the order tried.
        service.refuse_user("host");
        let (pod, c) = with_regcred("r:5000/team/app:v2");
        let failure = manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap_err();
        assert_eq!(failure.reason, "ErrImagePull");
        assert_eq!(
            failure.message,
            "failed to pull and unpack image \"r:5000/team/app:v2\": \
             failed to resolve reference \"r:5000/team/app:v2\": pull access denied, repository does not exist or may require authorization: 401 Unauthorized for \"team\", \
             failed to resolve reference \"r:5000/team/app:v2\": pull access denied, repository does not exist or may require authorization: 401 Unauthorized for \"host\""
        );

        // An image no secret covers is pulled anonymously.
        let (pod, c) = pod_with("other:5000/app", None);
        manager
            .ensure_image_exists(&pod, &c, &objects)
            .await
            .unwrap();
        assert_eq!(service.pull_users().last(), Some(&None));
    }

    #[test]
    fn failures_read_like_containerds() {
        let e = PullError::NotFound {
            reference: "127.0.0.1:5000/busybox:nope".into(),
        };
        assert_eq!(
            pull_failure_message("127.0.0.1:5000/busybox:nope", &[e]),
            "failed to pull and unpack image \"127.0.0.1:5000/busybox:nope\": failed to resolve reference \"127.0.0.1:5000/busybox:nope\": 127.0.0.1:5000/busybox:nope: not found"
        );
    }
}
