//! Feature gates (`--feature-gates`, KubeletConfiguration `featureGates`):
//! the ones the agent acts on, with the kubelet's defaults.

use std::collections::BTreeMap;

/// The gates the agent reads, and their defaults.
pub const KNOWN_GATES: [(&str, bool); 3] = [
    // Alpha: memory.min/memory.high from requests and limits (cgroup v2).
    ("MemoryQoS", false),
    // Beta, on since 1.30: LimitedSwap is possible.
    ("NodeSwap", true),
    // Beta, on since 1.34: PSI in /stats/summary and /metrics.
    ("KubeletPSI", true),
];

/// The gates in force: defaults, then the config file, then the flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates(BTreeMap<String, bool>);

impl FeatureGates {
    /// `file`'s gates with `flag`'s on top.
    pub fn merged(file: &BTreeMap<String, bool>, flag: &BTreeMap<String, bool>) -> Self {
        let mut gates = file.clone();
        gates.extend(flag.iter().map(|(k, v)| (k.clone(), *v)));
        FeatureGates(gates)
    }

    pub fn enabled(&self, gate: &str) -> bool {
        self.0.get(gate).copied().unwrap_or_else(|| {
            KNOWN_GATES
                .iter()
                .find(|(name, _)| *name == gate)
                .is_some_and(|(_, default)| *default)
        })
    }

    /// Gates set that the agent does not act on (for a log line).
    pub fn unknown(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_GATES.iter().any(|(name, _)| name == k))
            .collect()
    }
}

/// `--feature-gates` text, `Name=true,Other=false`, as the kubelet reads it.
pub fn parse_feature_gates(text: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut gates = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(format!("missing bool value for {part}"));
        };
        let on = match value.trim() {
            "true" | "True" | "TRUE" | "t" | "T" | "1" => true,
            "false" | "False" | "FALSE" | "f" | "F" | "0" => false,
            other => {
                return Err(format!(
                    "invalid value of {}={other}, err: strconv.ParseBool: parsing {other:?}: invalid syntax",
                    name.trim()
                ));
            }
        };
        gates.insert(name.trim().to_string(), on);
    }
    Ok(gates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_over_file_over_defaults() {
        let file = parse_feature_gates("MemoryQoS=true,NodeSwap=false").unwrap();
        let flag =
            parse_feature_gates("NodeSwap=true, KubeletPSI=false,SomethingElse=true").unwrap();
        let gates = FeatureGates::merged(&file, &flag);
        assert!(gates.enabled("MemoryQoS"));
        assert!(gates.enabled("NodeSwap"));
        assert!(!gates.enabled("KubeletPSI"));
        assert_eq!(gates.unknown(), vec!["SomethingElse"]);
        let defaults = FeatureGates::default();
        assert!(!defaults.enabled("MemoryQoS"));
        assert!(defaults.enabled("NodeSwap") && defaults.enabled("KubeletPSI"));
        assert!(!defaults.enabled("NoSuchGate"));
    }

    #[test]
    fn bad_gates() {
        assert_eq!(
            parse_feature_gates("MemoryQoS").unwrap_err(),
            "missing bool value for MemoryQoS"
        );
        assert_eq!(
            parse_feature_gates("MemoryQoS=yes").unwrap_err(),
            r#"invalid value of MemoryQoS=yes, err: strconv.ParseBool: parsing "yes": invalid syntax"#
        );
        assert_eq!(parse_feature_gates("").unwrap(), BTreeMap::new());
    }
}
