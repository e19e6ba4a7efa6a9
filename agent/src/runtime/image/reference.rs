//! Image references as a pod's `image` field spells them, normalized the way
//! Docker and containerd do: `busybox` is `docker.io/library/busybox:latest`.
//!
//! Grammar (distribution/reference): `[domain[:port]/]path[:tag][@digest]`.
//! The first path component is a domain only if it contains `.` or `:` or is
//! `localhost`; otherwise the image lives on Docker Hub, where single-component
//! names are official images under `library/`.

use std::fmt;
use std::str::FromStr;

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_MAX: usize = 255;
const TAG_MAX: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
}

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `s`; a reference with neither tag nor digest gets `:latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Invalid {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|r| invalid(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (s, None),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                (name, Some(tag[1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(|r| invalid(&r))?;
        }
        let (domain, path) = split_domain(name);
        if domain.is_empty() {
            return Err(invalid("empty registry domain"));
        }
        validate_domain(&domain).map_err(|r| invalid(&r))?;
        validate_path(&path).map_err(|r| invalid(&r))?;
        if domain.len() + 1 + path.len() > NAME_TOTAL_MAX {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// Registry host (and port): `docker.io`, `registry:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path inside the registry: `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The repository: `docker.io/library/busybox` (what `crictl images` shows as IMAGE).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Manifest digest (`sha256:<hex>`) when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Normalizes a reference string: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize(s: &str) -> Result<String, ReferenceError> {
    Reference::parse(s).map(|r| r.to_string())
}

fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path
    };
    (domain, path)
}

/// `host[:port]`; host labels are alphanumerics and `-`, separated by `.`.
/// IPv6 literals (`[::1]:5000`) are accepted as bracketed.
fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if domain.starts_with('[') {
        match domain.find(']') {
            Some(end) => {
                let port = domain[end + 1..].strip_prefix(':');
                if domain[end + 1..].is_empty() || port.is_some() {
                    (&domain[..=end], port)
                } else {
                    return Err(format!("malformed registry {domain:?}"));
                }
            }
            None => return Err(format!("malformed registry {domain:?}")),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("registry port {port:?} is not a number"));
    }
    if host.starts_with('[') {
        let inner = &host[1..host.len() - 1];
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("malformed registry {domain:?}"));
        }
        return Ok(());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("malformed registry {domain:?}"));
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by `/`.
fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty repository name".to_string());
    }
    for component in path.split('/') {
        if !is_valid_path_component(component) {
            return Err(format!(
                "repository name component {component:?} must be lowercase letters, digits \
                 and separators (`.`, `_`, `__`, `-`) between them"
            ));
        }
    }
    Ok(())
}

fn is_valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or any number of `-`.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-128 of [A-Za-z0-9_.-], not starting with `.` or `-`"
        ))
    }
}

/// Only sha256 digests are supported: `sha256:<64 lowercase hex>`.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_sha256_hex(hex) => Ok(()),
        Some(("sha256", _)) => Err(format!(
            "digest {digest:?} must be sha256 followed by 64 lowercase hex digits"
        )),
        Some((alg, _)) => Err(format!(
            "digest algorithm {alg:?} is not supported (only sha256)"
        )),
        None => Err(format!(
            "digest {digest:?} has no algorithm (expected sha256:<hex>)"
        )),
    }
}

pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2d93ac2a5d4b2b8bd5b5c2e0a0e2c7a8f3c3f1c5b1a6f8a1b8c4b8f1e9d0a1b2";

    fn norm(s: &str) -> String {
        normalize(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn official_image_gets_library_and_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.35"), "docker.io/library/busybox:1.35");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox:1"),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn user_repo_on_docker_hub() {
        assert_eq!(norm("bitnami/redis:7"), "docker.io/bitnami/redis:7");
    }

    #[test]
    fn registry_with_port_is_a_domain_not_a_tag() {
        let r = Reference::parse("registry:5000/name:tag").unwrap();
        assert_eq!(r.domain(), "registry:5000");
        assert_eq!(r.path(), "name");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.to_string(), "registry:5000/name:tag");
        assert_eq!(norm("registry:5000/a/b"), "registry:5000/a/b:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("quay.io/coreos/etcd:v3.5"), "quay.io/coreos/etcd:v3.5");
        assert_eq!(norm("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
    }

    #[test]
    fn digest_references_keep_no_default_tag() {
        let r = Reference::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{DIGEST}"));
        let r = Reference::parse(&format!("busybox:1.35@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), Some("1.35"));
        assert_eq!(r.repository(), "docker.io/library/busybox");
    }

    #[test]
    fn invalid_references_are_refused_with_the_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busy box",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "-a",
            "a..b",
            ":tag",
            "registry:port/x",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            let ReferenceError::Invalid { reference, .. } = &err;
            assert_eq!(reference, bad);
        }
    }

    #[test]
    fn separators_in_path_components() {
        assert_eq!(
            norm("a__b/c-d---e/f.g"),
            "docker.io/a__b/c-d---e/f.g:latest"
        );
        assert!(Reference::parse("a___b").is_err());
        assert!(Reference::parse("a_").is_err());
    }
}
