//! A container's `imagePullPolicy` and its default (`SetDefaults_Container`):
//! `Always` when the image's tag is `latest` (or it names none), else
//! `IfNotPresent`. The apiserver defaults API pods with it, the node its
//! static pods and any pod that reaches it without a policy.

/// `Always`, `IfNotPresent` or `Never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The value the API spells.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }

    /// A container's policy: the one it names, else the default for its
    /// image. An unknown name (validation refuses it) reads as the default.
    pub fn of_container(image: &str, policy: Option<&str>) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => default_pull_policy(image),
        }
    }
}

/// The default for an image: `ParseImageName` gives an image with neither tag
/// nor digest the tag `latest`, and that tag means `Always`. A reference that
/// does not parse has no tag, so `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> PullPolicy {
    match image_tag(image) {
        Some("latest") => PullPolicy::Always,
        _ => PullPolicy::IfNotPresent,
    }
}

/// The tag `ParseImageName` reports: the one written, else `latest` for a
/// reference without a digest, else none.
fn image_tag(image: &str) -> Option<&str> {
    if image.is_empty() || image.trim() != image {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    // The tag follows the last ':' after the last '/': a ':' before it is a port.
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => Some(tag),
        Some(_) => None,
        None if digest.is_none() => Some("latest"),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::PullPolicy::*;
    use super::*;

    #[test]
    fn latest_or_no_tag_pulls_always() {
        for image in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox",
            "127.0.0.1:5000/busybox",
            "127.0.0.1:5000/busybox:latest",
            "localhost:5000/team/app:latest@sha256:0123",
        ] {
            assert_eq!(default_pull_policy(image), Always, "{image}");
        }
    }

    #[test]
    fn other_tags_and_digests_pull_if_not_present() {
        for image in [
            "busybox:1.35",
            "127.0.0.1:5000/busybox:1",
            "busybox@sha256:0123",
            "registry:5000/app@sha256:0123",
            "",
        ] {
            assert_eq!(default_pull_policy(image), IfNotPresent, "{image:?}");
        }
    }

    #[test]
    fn a_named_policy_wins_over_the_default() {
        assert_eq!(PullPolicy::of_container("busybox", Some("Never")), Never);
        assert_eq!(
            PullPolicy::of_container("busybox:1", Some("Always")),
            Always
        );
        assert_eq!(PullPolicy::of_container("busybox", Some("")), Always);
        assert_eq!(PullPolicy::of_container("busybox:1", None), IfNotPresent);
        assert_eq!(IfNotPresent.as_str(), "IfNotPresent");
    }
}
