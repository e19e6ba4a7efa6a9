//! What an authenticated user may do (`--authorization-mode`): everything
//! (`AlwaysAllow`), or what the apiserver answers to a SubjectAccessReview
//! of the request's attributes (`Webhook`), cached as kubelet caches it:
//! allowed answers for `cacheAuthorizedTTL`, denials for
//! `cacheUnauthorizedTTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;

use super::attributes::RequestAttributes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { reason: String },
}

/// The SubjectAccessReview the webhook sends for a request (what kubelet's
/// webhook authorizer puts in its spec).
pub fn subject_access_review(attrs: &RequestAttributes) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(attrs.user.name.clone()),
            uid: Some(attrs.user.uid.clone()).filter(|u| !u.is_empty()),
            groups: Some(attrs.user.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(attrs.verb.to_owned()),
                group: Some(String::new()),
                version: Some(attrs.api_version.to_owned()),
                resource: Some(attrs.resource.to_owned()),
                subresource: Some(attrs.subresource.to_owned()),
                name: Some(attrs.name.clone()),
                namespace: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub struct SarWebhook {
    client: kube::Client,
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    /// Keyed by the review's spec as JSON: same user, groups and attributes.
    cache: Mutex<HashMap<String, (Instant, Decision)>>,
}

impl SarWebhook {
    pub fn new(client: kube::Client, authorized_ttl: Duration, unauthorized_ttl: Duration) -> Self {
        Self {
            client,
            authorized_ttl,
            unauthorized_ttl,
            cache: Mutex::default(),
        }
    }

    fn ttl(&self, d: &Decision) -> Duration {
        match d {
            Decision::Allow => self.authorized_ttl,
            Decision::Deny { .. } => self.unauthorized_ttl,
        }
    }

    async fn authorize(&self, attrs: &RequestAttributes) -> Result<Decision, kube::Error> {
        let review = subject_access_review(attrs);
        let key = serde_json::to_string(&review.spec).unwrap_or_default();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, d)) = cache.get(&key)
                && at.elapsed() < self.ttl(d)
            {
                return Ok(d.clone());
            }
        }
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        let decision = if status.allowed && status.denied != Some(true) {
            Decision::Allow
        } else {
            Decision::Deny {
                reason: status.reason.unwrap_or_default(),
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let longest = self.authorized_ttl.max(self.unauthorized_ttl);
        cache.retain(|_, (at, _)| at.elapsed() < longest);
        cache.insert(key, (Instant::now(), decision.clone()));
        Ok(decision)
    }
}

pub enum Authorizer {
    AlwaysAllow,
    Webhook(SarWebhook),
}

impl Authorizer {
    pub async fn authorize(&self, attrs: &RequestAttributes) -> Result<Decision, kube::Error> {
        match self {
            Authorizer::AlwaysAllow => Ok(Decision::Allow),
            Authorizer::Webhook(w) => w.authorize(attrs).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::UserInfo;
    use crate::server::auth::attributes::request_attributes;
    use axum::http::Method;

    #[test]
    fn the_review_carries_the_user_and_the_nodes_subresource() {
        let user = UserInfo {
            name: "bob".into(),
            uid: "42".into(),
            groups: vec!["system:authenticated".into()],
        };
        let review = subject_access_review(&request_attributes(
            user,
            &Method::GET,
            "/containerLogs/default/web/main",
            "node1",
        ));
        assert_eq!(
            serde_json::to_value(&review.spec).unwrap(),
            serde_json::json!({
                "user": "bob",
                "uid": "42",
                "groups": ["system:authenticated"],
                "resourceAttributes": {
                    "verb": "get", "group": "", "version": "v1", "resource": "nodes",
                    "subresource": "proxy", "name": "node1", "namespace": "",
                },
            })
        );
    }
}
