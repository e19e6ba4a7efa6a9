//! Pod Security levels and versions, and the policy a namespace's
//! `pod-security.kubernetes.io/*` labels ask for (upstream's
//! `api.PolicyToEvaluate`): invalid values are field errors; an invalid
//! enforce level fails closed (restricted), invalid audit and warn levels
//! fail open (privileged), an invalid version means `latest`.

use std::collections::BTreeMap;
use std::fmt;

use crate::status::FieldError;

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
pub const ENFORCE_LEVEL_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
pub const AUDIT_LEVEL_LABEL: &str = "pod-security.kubernetes.io/audit";
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
pub const WARN_LEVEL_LABEL: &str = "pod-security.kubernetes.io/warn";
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// The prefix of the audit annotations (`pod-security.kubernetes.io/enforce-policy`…).
pub const AUDIT_ANNOTATION_PREFIX: &str = LABEL_PREFIX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "privileged" => Ok(Self::Privileged),
            "baseline" => Ok(Self::Baseline),
            "restricted" => Ok(Self::Restricted),
            _ => Err("must be one of privileged, baseline, restricted".to_owned()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// A policy version: `latest` or `v1.N` (upstream's checks are versioned
/// by the Kubernetes minor that introduced them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Latest,
    Minor(u32),
}

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "latest" {
            return Ok(Self::Latest);
        }
        let bad = || "must be \"latest\" or \"v1.x\"".to_owned();
        let minor = s.strip_prefix("v1.").ok_or_else(bad)?;
        // `^v1\.([0-9]|[1-9][0-9]*)$`: no sign, no leading zero.
        if minor.is_empty()
            || !minor.bytes().all(|b| b.is_ascii_digit())
            || (minor.len() > 1 && minor.starts_with('0'))
        {
            return Err(bad());
        }
        minor.parse().map(Self::Minor).map_err(|_| bad())
    }

    /// The minor whose checks apply: `latest`, and versions newer than
    /// this server, mean the newest this server knows.
    pub fn effective_minor(self, newest: u32) -> u32 {
        match self {
            Self::Latest => newest,
            Self::Minor(m) => m.min(newest),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Minor(m) => write!(f, "v1.{m}"),
        }
    }
}

/// `baseline:v1.25`, as upstream prints a level and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelVersion {
    pub level: Level,
    pub version: Version,
}

impl LevelVersion {
    pub const PRIVILEGED: Self = Self {
        level: Level::Privileged,
        version: Version::Latest,
    };

    /// Two privileged policies are the same whatever their versions.
    pub fn equivalent(&self, other: &Self) -> bool {
        (self.level == Level::Privileged && other.level == Level::Privileged) || self == other
    }
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.version)
    }
}

/// What each mode checks a namespace's pods against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

impl Default for Policy {
    /// kube-apiserver's default: every mode privileged, latest.
    fn default() -> Self {
        Self {
            enforce: LevelVersion::PRIVILEGED,
            audit: LevelVersion::PRIVILEGED,
            warn: LevelVersion::PRIVILEGED,
        }
    }
}

impl Policy {
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }

    pub fn equivalent(&self, other: &Self) -> bool {
        self.enforce.equivalent(&other.enforce)
            && self.audit.equivalent(&other.audit)
            && self.warn.equivalent(&other.warn)
    }

    /// The policy a namespace's labels ask for, on top of `defaults`, and
    /// the labels' errors.
    pub fn from_labels(
        labels: &BTreeMap<String, String>,
        defaults: &Policy,
    ) -> (Policy, Vec<FieldError>) {
        let mut p = *defaults;
        let mut errs = Vec::new();
        let mut invalid = |label: &str, value: &str, why: String| {
            errs.push(FieldError::invalid(
                format!("metadata.labels[{label}]"),
                value,
                why,
            ));
        };
        let mut has_enforce_level = false;
        if let Some(v) = labels.get(ENFORCE_LEVEL_LABEL) {
            match Level::parse(v) {
                Ok(l) => {
                    p.enforce.level = l;
                    has_enforce_level = true;
                }
                Err(why) => {
                    // Fail closed.
                    p.enforce.level = Level::Restricted;
                    invalid(ENFORCE_LEVEL_LABEL, v, why);
                }
            }
        }
        if let Some(v) = labels.get(ENFORCE_VERSION_LABEL) {
            p.enforce.version = Version::parse(v).unwrap_or_else(|why| {
                invalid(ENFORCE_VERSION_LABEL, v, why);
                Version::Latest
            });
        }
        if let Some(v) = labels.get(AUDIT_LEVEL_LABEL) {
            p.audit.level = Level::parse(v).unwrap_or_else(|why| {
                invalid(AUDIT_LEVEL_LABEL, v, why);
                Level::Privileged
            });
        }
        if let Some(v) = labels.get(AUDIT_VERSION_LABEL) {
            p.audit.version = Version::parse(v).unwrap_or_else(|why| {
                invalid(AUDIT_VERSION_LABEL, v, why);
                Version::Latest
            });
        }
        let has_warn_level = labels.contains_key(WARN_LEVEL_LABEL);
        if let Some(v) = labels.get(WARN_LEVEL_LABEL) {
            p.warn.level = Level::parse(v).unwrap_or_else(|why| {
                invalid(WARN_LEVEL_LABEL, v, why);
                Level::Privileged
            });
        }
        let has_warn_version = labels.contains_key(WARN_VERSION_LABEL);
        if let Some(v) = labels.get(WARN_VERSION_LABEL) {
            p.warn.version = Version::parse(v).unwrap_or_else(|why| {
                invalid(WARN_VERSION_LABEL, v, why);
                Version::Latest
            });
        }
        // Warn defaults to an explicitly set, stricter enforce level.
        if !has_warn_level && has_enforce_level && p.enforce.level > p.warn.level {
            p.warn.level = p.enforce.level;
            if !has_warn_version {
                p.warn.version = p.enforce.version;
            }
        }
        (p, errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selectors::tests::labels;

    #[test]
    fn versions_are_latest_or_v1_minor() {
        assert_eq!(Version::parse("latest"), Ok(Version::Latest));
        assert_eq!(Version::parse("v1.25"), Ok(Version::Minor(25)));
        assert_eq!(Version::parse("v1.0"), Ok(Version::Minor(0)));
        for bad in ["v1.025", "v2.1", "1.25", "v1.", "v1.-1", "Latest"] {
            assert_eq!(
                Version::parse(bad),
                Err("must be \"latest\" or \"v1.x\"".to_owned()),
                "{bad}"
            );
        }
        assert_eq!(Version::Minor(40).effective_minor(33), 33);
        assert_eq!(Version::Latest.effective_minor(33), 33);
        assert_eq!(Version::Minor(22).effective_minor(33), 22);
    }

    #[test]
    fn labels_make_the_policy_and_warn_follows_a_stricter_enforce() {
        let (p, errs) = Policy::from_labels(
            &labels(&[
                (ENFORCE_LEVEL_LABEL, "baseline"),
                (ENFORCE_VERSION_LABEL, "v1.24"),
            ]),
            &Policy::default(),
        );
        assert!(errs.is_empty());
        assert_eq!(p.enforce.to_string(), "baseline:v1.24");
        assert_eq!(p.warn.to_string(), "baseline:v1.24");
        assert_eq!(p.audit.to_string(), "privileged:latest");

        let (p, _) = Policy::from_labels(
            &labels(&[
                (ENFORCE_LEVEL_LABEL, "baseline"),
                (WARN_LEVEL_LABEL, "restricted"),
            ]),
            &Policy::default(),
        );
        assert_eq!(p.warn.to_string(), "restricted:latest");
        assert!(!p.fully_privileged());
        assert!(Policy::default().fully_privileged());
    }

    #[test]
    fn invalid_labels_are_field_errors_enforce_fails_closed() {
        let (p, errs) = Policy::from_labels(
            &labels(&[
                (ENFORCE_LEVEL_LABEL, "strict"),
                (WARN_LEVEL_LABEL, "nope"),
                (AUDIT_VERSION_LABEL, "v2"),
            ]),
            &Policy::default(),
        );
        assert_eq!(p.enforce.level, Level::Restricted);
        assert_eq!(p.warn.level, Level::Privileged);
        let messages: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: \"v2\": must be \"latest\" or \"v1.x\"",
                "metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: \"nope\": must be one of privileged, baseline, restricted",
            ]
        );
    }
}
