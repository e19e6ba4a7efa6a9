//! The CNI spec's wire types: results, errors and their codes, versions.
//! Unknown fields of a result are kept (`extra`) so a result passed through a
//! chain (`prevResult`) loses nothing.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ip::IpPrefix;

/// The version this project's plugins speak by default.
pub const CURRENT_VERSION: &str = "1.0.0";
/// Versions the plugins accept (and write results for).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The spec's well-known error codes (CNI spec, "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Plugin-specific codes start at 100.
    pub const INTERNAL: u32 = 100;
}

/// A plugin's error as written on stdout (`{cniVersion, code, msg, details}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn io(msg: impl Into<String>, e: impl std::fmt::Display) -> Self {
        CniError::new(code::IO_FAILURE, msg).with_details(e.to_string())
    }

    pub fn config(msg: impl Into<String>) -> Self {
        CniError::new(code::INVALID_CONFIG, msg)
    }

    pub fn internal(msg: impl Into<String>, e: impl std::fmt::Display) -> Self {
        CniError::new(code::INTERNAL, msg).with_details(e.to_string())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; empty on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpPrefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Only in results before 1.0.0 ("4" or "6").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpPrefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// An ADD result (also what `prevResult` holds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CniResult {
    /// The result as written for `version`: before 1.0.0 each IP carries its
    /// family as `"version"`, from 1.0.0 on it must not.
    pub fn for_version(&self, version: &str) -> CniResult {
        let mut out = self.clone();
        out.cni_version = version.to_string();
        let legacy = version_lt(version, "1.0.0");
        for ip in &mut out.ips {
            ip.version = legacy.then(|| if ip.address.addr.is_ipv4() { "4" } else { "6" }.into());
        }
        out
    }
}

/// `a < b` for dotted versions ("0.4.0" < "1.0.0"); unparsable parts count as 0.
pub fn version_lt(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI versions: config is {version:?}, plugin supports {SUPPORTED_VERSIONS:?}"
            ),
        ))
    }
}

/// The output of `VERSION`.
pub fn version_info(requested: &str) -> Value {
    let version = if requested.is_empty() {
        CURRENT_VERSION
    } else {
        requested
    };
    serde_json::json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_round_trips_and_versions_its_ips() {
        let text = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/proc/1/ns/net"}],"ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let r: CniResult = serde_json::from_str(text).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/24");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/proc/1/ns/net"}],"ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}]}"#
        );
        let old = serde_json::to_value(r.for_version("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
    }

    #[test]
    fn errors_serialize_as_the_spec_says() {
        let e = CniError {
            cni_version: "1.0.0".into(),
            ..CniError::new(code::INVALID_ENV, "CNI_NETNS is required")
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_NETNS is required"}"#
        );
        assert_eq!(check_version("0.2.0").unwrap_err().code, 1);
        assert!(version_lt("0.4.0", "1.0.0") && !version_lt("1.1.0", "1.0.0"));
    }
}
