//! Registry credentials from a pod's `imagePullSecrets`, matched to an image
//! the way the kubelet's credential keyring matches them: a
//! `kubernetes.io/dockerconfigjson` secret's `.dockerconfigjson` (or a legacy
//! `.dockercfg`) maps registry keys (`registry:5000`, `*.example.com`,
//! `example.com/team`) to a user name and password; a key matches an image
//! when its host (with `*` globs per DNS label) and port are the image's and
//! its path is a prefix of the image's repository path. More specific keys
//! are tried first.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::runtime::image::AuthConfig;
use crate::runtime::image::reference::DEFAULT_DOMAIN;

pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
pub const DOCKER_CONFIG_KEY: &str = ".dockercfg";
/// Docker Hub's key in docker config files.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("secret {namespace}/{name}: {key} is not a docker config: {reason}")]
    BadDockerConfig {
        namespace: String,
        name: String,
        key: &'static str,
        reason: String,
    },
}

/// A user name and password for one registry key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key it was found under (`registry:5000`), for logs.
    pub registry: String,
    /// What a pull with it hands the image service.
    pub auth: AuthConfig,
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// base64 of `user:password`; wins over the two fields above.
    #[serde(default)]
    auth: String,
}

/// The credentials of a pod's pull secrets, keyed as the keyring keys them.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    /// (normalized key, credential), most specific key first.
    entries: Vec<(String, Credential)>,
}

impl Keyring {
    /// Reads every docker config of `secrets`. A secret with neither key adds
    /// nothing; one whose config does not parse adds nothing and is reported
    /// by name (the others still count).
    pub fn from_secrets(secrets: &[Secret]) -> (Keyring, Vec<CredentialsError>) {
        let mut keyring = Keyring::default();
        let mut errors = Vec::new();
        for secret in secrets {
            if let Err(e) = keyring.add_secret(secret) {
                errors.push(e);
            }
        }
        (keyring, errors)
    }

    fn add_secret(&mut self, secret: &Secret) -> Result<(), CredentialsError> {
        let data = secret.data.clone().unwrap_or_default();
        let bad = |key: &'static str, reason: String| CredentialsError::BadDockerConfig {
            namespace: secret.metadata.namespace.clone().unwrap_or_default(),
            name: secret.metadata.name.clone().unwrap_or_default(),
            key,
            reason,
        };
        let auths = if let Some(bytes) = data.get(DOCKER_CONFIG_JSON_KEY) {
            serde_json::from_slice::<DockerConfigJson>(&bytes.0)
                .map_err(|e| bad(DOCKER_CONFIG_JSON_KEY, e.to_string()))?
                .auths
        } else if let Some(bytes) = data.get(DOCKER_CONFIG_KEY) {
            serde_json::from_slice::<BTreeMap<String, DockerConfigEntry>>(&bytes.0)
                .map_err(|e| bad(DOCKER_CONFIG_KEY, e.to_string()))?
        } else {
            return Ok(());
        };
        let mut entries = Vec::new();
        for (location, entry) in auths {
            let (username, password) = if entry.auth.is_empty() {
                (entry.username, entry.password)
            } else {
                decode_auth(&entry.auth).map_err(|reason| {
                    bad(
                        DOCKER_CONFIG_JSON_KEY,
                        format!("auths[{location:?}].auth: {reason}"),
                    )
                })?
            };
            entries.push((location, username, password));
        }
        for (location, username, password) in entries {
            self.add(&location, username, password);
        }
        Ok(())
    }

    fn add(&mut self, location: &str, username: String, password: String) {
        let key = normalize_key(location);
        let credential = Credential {
            registry: key.clone(),
            auth: AuthConfig { username, password },
        };
        self.entries.push((key, credential));
        // Reverse lexical order puts `example.com/team` before `example.com`.
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
    }

    /// The credentials to try for `repository` (`registry:5000/team/app`),
    /// most specific first; empty: pull anonymously.
    pub fn lookup(&self, repository: &str) -> Vec<Credential> {
        let mut targets = vec![repository.to_string()];
        // Docker Hub images also match keys written for index.docker.io.
        if let Some(path) = repository.strip_prefix(&format!("{DEFAULT_DOMAIN}/")) {
            targets.push(format!("{DEFAULT_REGISTRY_HOST}/{path}"));
        }
        let mut found: Vec<Credential> = Vec::new();
        for (key, credential) in &self.entries {
            if targets.iter().any(|t| key_matches(key, t)) && !found.contains(credential) {
                found.push(credential.clone());
            }
        }
        found
    }
}

fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    match text.split_once(':') {
        Some((user, password)) => Ok((user.to_string(), password.to_string())),
        None => Err("not of the form user:password".to_string()),
    }
}

/// `https://registry:5000/v1/` → `registry:5000`; `example.com/team/` →
/// `example.com/team`: scheme and API version dropped, as the keyring does.
fn normalize_key(location: &str) -> String {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, format!("/{path}")),
        None => (rest, String::new()),
    };
    let path = path
        .strip_prefix("/v1")
        .or_else(|| path.strip_prefix("/v2"))
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .unwrap_or(&path);
    let path = path.trim_end_matches('/');
    format!("{host}{path}")
}

/// Whether keyring `key` (`*.example.com:443/team`) covers `target`
/// (`registry.example.com:443/team/app`).
fn key_matches(key: &str, target: &str) -> bool {
    let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
    let (target_host, target_path) = target.split_once('/').unwrap_or((target, ""));
    let (key_name, key_port) = split_port(key_host);
    let (target_name, target_port) = split_port(target_host);
    if key_port != target_port {
        return false;
    }
    let key_labels: Vec<&str> = key_name.split('.').collect();
    let target_labels: Vec<&str> = target_name.split('.').collect();
    if key_labels.len() != target_labels.len()
        || !key_labels
            .iter()
            .zip(&target_labels)
            .all(|(k, t)| glob_matches(&k.to_ascii_lowercase(), &t.to_ascii_lowercase()))
    {
        return false;
    }
    // A plain prefix, as the keyring compares URL paths.
    target_path.starts_with(key_path)
}

fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (host, None),
    }
}

/// A shell glob of `*` and `?` over one DNS label (`filepath.Match`'s use here).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(name: &str, key: &str, json: serde_json::Value) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(
                [(key.to_string(), ByteString(json.to_string().into_bytes()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn users(creds: &[Credential]) -> Vec<&str> {
        creds.iter().map(|c| c.auth.username.as_str()).collect()
    }

    #[test]
    fn auth_field_and_plain_fields() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let keyring = Keyring::from_secrets(&[secret(
            "regcred",
            DOCKER_CONFIG_JSON_KEY,
            serde_json::json!({"auths": {
                "127.0.0.1:5000": {"auth": auth},
                "https://registry.example.com/v1/": {"username": "bob", "password": "pw"},
            }}),
        )])
        .0;
        let found = keyring.lookup("127.0.0.1:5000/busybox");
        assert_eq!(users(&found), ["alice"]);
        assert_eq!(found[0].auth.password, "s3cret");
        assert_eq!(
            users(&keyring.lookup("registry.example.com/team/app")),
            ["bob"]
        );
        assert!(keyring.lookup("127.0.0.1:5001/busybox").is_empty());
        assert!(keyring.lookup("docker.io/library/busybox").is_empty());
    }

    #[test]
    fn legacy_dockercfg_and_docker_hub() {
        let keyring = Keyring::from_secrets(&[secret(
            "old",
            DOCKER_CONFIG_KEY,
            serde_json::json!({"https://index.docker.io/v1/": {"username": "hub", "password": "x"}}),
        )])
        .0;
        assert_eq!(users(&keyring.lookup("docker.io/library/busybox")), ["hub"]);
    }

    #[test]
    fn more_specific_keys_first_and_globs_per_label() {
        let keyring = Keyring::from_secrets(&[secret(
            "many",
            DOCKER_CONFIG_JSON_KEY,
            serde_json::json!({"auths": {
                "example.com": {"username": "host", "password": "x"},
                "example.com/team": {"username": "team", "password": "x"},
                "*.example.com": {"username": "glob", "password": "x"},
            }}),
        )])
        .0;
        assert_eq!(
            users(&keyring.lookup("example.com/team/app")),
            ["team", "host"]
        );
        assert_eq!(users(&keyring.lookup("example.com/other")), ["host"]);
        assert_eq!(users(&keyring.lookup("eu.example.com/app")), ["glob"]);
        // A glob covers one label only.
        assert!(keyring.lookup("a.b.example.com/app").is_empty());
    }

    #[test]
    fn a_broken_config_names_its_secret() {
        let mut s = secret("broken", DOCKER_CONFIG_JSON_KEY, serde_json::json!({}));
        s.data = Some(
            [(
                DOCKER_CONFIG_JSON_KEY.to_string(),
                ByteString(b"{not json".to_vec()),
            )]
            .into_iter()
            .collect(),
        );
        let good = secret(
            "good",
            DOCKER_CONFIG_JSON_KEY,
            serde_json::json!({"auths": {"r:5000": {"username": "u", "password": "p"}}}),
        );
        let (keyring, errors) = Keyring::from_secrets(&[s, good]);
        assert_eq!(users(&keyring.lookup("r:5000/app")), ["u"]);
        let err = errors[0].to_string();
        assert!(
            err.starts_with("secret default/broken: .dockerconfigjson is not a docker config"),
            "{err}"
        );
    }

    #[test]
    fn keys_are_normalized() {
        assert_eq!(
            normalize_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalize_key("http://r:5000"), "r:5000");
        assert_eq!(normalize_key("r:5000/team/"), "r:5000/team");
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("reg?stry", "registry"));
        assert!(!glob_matches("reg*x", "registry"));
    }
}
