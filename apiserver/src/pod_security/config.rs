//! `--admission-control-config-file`: kube-apiserver's
//! AdmissionConfiguration, of which the `PodSecurity` plugin's
//! PodSecurityConfiguration (`pod-security.admission.config.k8s.io/v1`,
//! inline as `configuration` or in a file named by `path`) sets the
//! defaults of unlabelled namespaces and the exemptions.

use std::path::Path;

use serde::Deserialize;

use super::Error;
use super::admission::{Exemptions, PodSecurity};
use super::level::{Level, LevelVersion, Policy, Version};

const PLUGIN_NAME: &str = "PodSecurity";
const API_VERSIONS: &[&str] = &[
    "pod-security.admission.config.k8s.io/v1",
    "pod-security.admission.config.k8s.io/v1beta1",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionConfiguration {
    #[serde(default)]
    plugins: Vec<AdmissionPluginConfiguration>,
}

#[derive(Debug, Deserialize)]
struct AdmissionPluginConfiguration {
    name: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    configuration: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSecurityConfiguration {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    defaults: PodSecurityDefaults,
    #[serde(default)]
    exemptions: PodSecurityExemptions,
}

#[derive(Debug, Default, Deserialize)]
struct PodSecurityDefaults {
    #[serde(default)]
    enforce: String,
    #[serde(default, rename = "enforce-version")]
    enforce_version: String,
    #[serde(default)]
    audit: String,
    #[serde(default, rename = "audit-version")]
    audit_version: String,
    #[serde(default)]
    warn: String,
    #[serde(default, rename = "warn-version")]
    warn_version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSecurityExemptions {
    #[serde(default)]
    usernames: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    runtime_classes: Vec<String>,
}

/// The plugin as the file configures it; a file without a `PodSecurity`
/// entry leaves kube-apiserver's defaults (privileged, no exemptions).
pub fn load(path: &Path) -> Result<PodSecurity, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse = |text: &str| -> Result<serde_json::Value, Error> {
        serde_yaml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    let file: AdmissionConfiguration =
        serde_json::from_value(parse(&text)?).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let Some(plugin) = file.plugins.into_iter().find(|p| p.name == PLUGIN_NAME) else {
        return Ok(PodSecurity::default());
    };
    let raw = match (plugin.configuration, plugin.path) {
        (Some(inline), _) => inline,
        (None, Some(p)) => {
            // Relative paths are relative to the AdmissionConfiguration file.
            let p = path.parent().unwrap_or(Path::new(".")).join(p);
            let text = std::fs::read_to_string(&p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?;
            parse(&text)?
        }
        (None, None) => return Ok(PodSecurity::default()),
    };
    from_configuration(raw).map_err(|message| Error::Invalid {
        path: path.to_owned(),
        message,
    })
}

/// A PodSecurityConfiguration, defaulted (privileged, latest) and checked.
fn from_configuration(raw: serde_json::Value) -> Result<PodSecurity, String> {
    let c: PodSecurityConfiguration = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    if !API_VERSIONS.contains(&c.api_version.as_str()) || c.kind != "PodSecurityConfiguration" {
        return Err(format!(
            "expected a PodSecurityConfiguration of {}, got kind {:?} of {:?}",
            API_VERSIONS.join(" or "),
            c.kind,
            c.api_version
        ));
    }
    let d = &c.defaults;
    let mut errs = Vec::new();
    let mut level_version = |mode: &str, level: &str, version: &str| {
        let level = if level.is_empty() {
            "privileged"
        } else {
            level
        };
        let version = if version.is_empty() {
            "latest"
        } else {
            version
        };
        let l = Level::parse(level).unwrap_or_else(|why| {
            errs.push(format!("defaults.{mode}: Invalid value: {level:?}: {why}"));
            Level::Privileged
        });
        let v = Version::parse(version).unwrap_or_else(|why| {
            errs.push(format!(
                "defaults.{mode}-version: Invalid value: {version:?}: {why}"
            ));
            Version::Latest
        });
        LevelVersion {
            level: l,
            version: v,
        }
    };
    let defaults = Policy {
        enforce: level_version("enforce", &d.enforce, &d.enforce_version),
        warn: level_version("warn", &d.warn, &d.warn_version),
        audit: level_version("audit", &d.audit, &d.audit_version),
    };
    let e = c.exemptions;
    for (field, list) in [
        ("namespaces", &e.namespaces),
        ("runtimeClasses", &e.runtime_classes),
        ("usernames", &e.usernames),
    ] {
        for (i, item) in list.iter().enumerate() {
            if item.is_empty() {
                errs.push(format!(
                    "exemptions.{field}[{i}]: Invalid value: \"\": must not be empty"
                ));
            } else if list[..i].contains(item) {
                errs.push(format!(
                    "exemptions.{field}[{i}]: Duplicate value: {item:?}"
                ));
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs.join(", "));
    }
    Ok(PodSecurity {
        defaults,
        exemptions: Exemptions {
            usernames: e.usernames,
            namespaces: e.namespaces,
            runtime_classes: e.runtime_classes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admission_configuration_sets_defaults_and_exemptions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admission.yaml");
        std::fs::write(
            &file,
            "apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
      enforce-version: v1.30
      warn: restricted
    exemptions:
      namespaces: [kube-system]
      usernames: [admin]
",
        )
        .unwrap();
        let psa = load(&file).unwrap();
        assert_eq!(psa.defaults.enforce.to_string(), "baseline:v1.30");
        assert_eq!(psa.defaults.warn.to_string(), "restricted:latest");
        assert_eq!(psa.defaults.audit.to_string(), "privileged:latest");
        assert_eq!(psa.exemptions.namespaces, ["kube-system"]);
        assert_eq!(psa.exemptions.usernames, ["admin"]);
    }

    #[test]
    fn bad_defaults_are_refused_with_the_field() {
        let err = from_configuration(serde_json::json!({
            "apiVersion": "pod-security.admission.config.k8s.io/v1",
            "kind": "PodSecurityConfiguration",
            "defaults": {"enforce": "strict"},
            "exemptions": {"namespaces": ["a", "a"]},
        }))
        .unwrap_err();
        assert_eq!(
            err,
            "defaults.enforce: Invalid value: \"strict\": must be one of privileged, baseline, restricted, exemptions.namespaces[1]: Duplicate value: \"a\""
        );
        // Without a PodSecurity entry: kube-apiserver's defaults.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admission.yaml");
        std::fs::write(
            &file,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins: []\n",
        )
        .unwrap();
        assert_eq!(load(&file).unwrap(), PodSecurity::default());
    }
}
