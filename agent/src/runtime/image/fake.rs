//! An image service that only pretends (CRI's fake `ImageService`, as
//! kubemark's hollow kubelet uses it): images are names in a map, pulls
//! succeed at once unless told to fail, nothing touches a disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::ImageError;
use super::pull::PullError;
use super::reference::normalize;
use super::service::{AuthConfig, ImageFsInfo, ImageService, ImageStatus};
use super::store::ImageSummary;

/// Bytes every pretend image takes.
const FAKE_IMAGE_SIZE: u64 = 1 << 20;

#[derive(Default)]
struct State {
    /// Normalized reference → (image ID, pinned).
    images: BTreeMap<String, (String, bool)>,
    /// Normalized references whose pulls fail.
    failing: BTreeSet<String>,
    /// User names whose pulls are refused, as a registry refuses a bad login.
    refused_users: BTreeSet<String>,
    /// (normalized reference, user name) of every pull, in order.
    pulls: Vec<(String, Option<String>)>,
}

pub struct FakeImageService {
    /// Every image counts as present (pinned) whether pulled or not: a
    /// hollow node runs whatever it is given.
    every_image_present: bool,
    state: Mutex<State>,
}

impl FakeImageService {
    /// An empty store: images arrive by pulls.
    pub fn empty() -> Self {
        FakeImageService {
            every_image_present: false,
            state: Mutex::default(),
        }
    }

    /// A store that has every image, as imported ones (hollow nodes); it
    /// lists those it was asked about.
    pub fn with_every_image() -> Self {
        FakeImageService {
            every_image_present: true,
            state: Mutex::default(),
        }
    }

    /// Puts `image` in the store as `image import` would (pinned).
    pub fn import(&self, image: &str) {
        let name = normalize(image).unwrap_or_else(|_| image.to_string());
        self.state()
            .images
            .insert(name.clone(), (fake_id(&name), true));
    }

    /// Pulls of `image` fail with "not found" from now on.
    pub fn fail_pulls_of(&self, image: &str) {
        let name = normalize(image).unwrap_or_else(|_| image.to_string());
        self.state().failing.insert(name);
    }

    /// Pulls as `username` are refused from now on.
    pub fn refuse_user(&self, username: &str) {
        self.state().refused_users.insert(username.to_string());
    }

    /// The references pulled so far, in order.
    pub fn pulls(&self) -> Vec<String> {
        self.state().pulls.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Who each pull so far was made as (`None`: anonymously), in order.
    pub fn pull_users(&self) -> Vec<Option<String>> {
        self.state().pulls.iter().map(|(_, u)| u.clone()).collect()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn fake_id(name: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(name.as_bytes())))
}

impl ImageService for FakeImageService {
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a AuthConfig>,
    ) -> BoxFuture<'a, Result<ImageSummary, PullError>> {
        Box::pin(async move {
            let name = normalize(image)?;
            let mut state = self.state();
            let user = auth.map(|a| a.username.clone());
            state.pulls.push((name.clone(), user.clone()));
            if state.failing.contains(&name) {
                return Err(PullError::NotFound { reference: name });
            }
            if let Some(user) = user.filter(|u| state.refused_users.contains(u)) {
                return Err(PullError::Unauthorized {
                    reference: name,
                    detail: format!("401 Unauthorized for {user:?}"),
                });
            }
            let id = fake_id(&name);
            state.images.insert(name.clone(), (id.clone(), false));
            Ok(ImageSummary {
                reference: Some(name),
                manifest_digest: id.clone(),
                id,
                size: FAKE_IMAGE_SIZE,
            })
        })
    }

    fn image_status(&self, image: &str) -> Result<Option<ImageStatus>, ImageError> {
        let name = normalize(image)?;
        let mut state = self.state();
        let found = match state.images.get(&name) {
            Some((id, pinned)) => Some((id.clone(), *pinned)),
            None if self.every_image_present => {
                // Found now, so listed from now on, as kubemark's hollow
                // nodes list the images of the pods they ran.
                let id = fake_id(&name);
                state.images.insert(name.clone(), (id.clone(), true));
                Some((id, true))
            }
            None => None,
        };
        Ok(found.map(|(id, pinned)| ImageStatus {
            id,
            reference: name,
            size: FAKE_IMAGE_SIZE,
            pinned,
        }))
    }

    fn list_images(&self) -> Result<Vec<ImageSummary>, ImageError> {
        Ok(self
            .state()
            .images
            .iter()
            .map(|(name, (id, _))| ImageSummary {
                reference: Some(name.clone()),
                id: id.clone(),
                manifest_digest: id.clone(),
                size: FAKE_IMAGE_SIZE,
            })
            .collect())
    }

    fn remove_image(&self, id: &str) -> Result<(), ImageError> {
        let mut state = self.state();
        let before = state.images.len();
        state.images.retain(|_, (i, _)| i != id);
        if state.images.len() == before {
            return Err(ImageError::NotFound {
                reference: id.to_string(),
            });
        }
        Ok(())
    }

    fn image_fs_info(&self) -> Result<ImageFsInfo, ImageError> {
        Ok(ImageFsInfo {
            capacity_bytes: 100 << 30,
            available_bytes: 100 << 30,
        })
    }

    fn image_content(&self, id: &str) -> Result<Vec<(String, u64)>, ImageError> {
        Ok(vec![(id.to_string(), FAKE_IMAGE_SIZE)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(service: &FakeImageService) -> Vec<String> {
        service
            .list_images()
            .unwrap()
            .into_iter()
            .filter_map(|i| i.reference)
            .collect()
    }

    #[test]
    fn a_store_with_every_image_lists_those_it_was_asked_about() {
        let service = FakeImageService::with_every_image();
        assert!(listed(&service).is_empty());
        let found = service.image_status("busybox").unwrap().unwrap();
        assert!(found.pinned);
        assert_eq!(listed(&service), ["docker.io/library/busybox:latest"]);
        // Asked again: the same image, listed once.
        assert_eq!(service.image_status("busybox:latest").unwrap(), Some(found));
        assert_eq!(listed(&service).len(), 1);
        // An empty store finds nothing it was not given.
        assert_eq!(
            FakeImageService::empty().image_status("busybox").unwrap(),
            None
        );
    }
}
