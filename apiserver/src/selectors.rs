//! `labelSelector` and `fieldSelector` query parameters, with the grammar of
//! apimachinery's `labels.Parse` and `fields.ParseSelector`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

/// Splits on commas that are not inside `( )`.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn set_values(rest: &str, term: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            format!("unable to parse requirement: {term:?}: expected a parenthesised set of values")
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let bad_key = |k: &str| format!("unable to parse requirement: invalid label key {k:?}");
            let req = if let Some(key) = term.strip_prefix('!') {
                let key = key.trim();
                if !valid_key(key) {
                    return Err(bad_key(key));
                }
                LabelRequirement::DoesNotExist(key.to_owned())
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelRequirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelRequirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = term.split_once(char::is_whitespace) {
                let rest = rest.trim_start();
                if let Some(r) = rest.strip_prefix("notin") {
                    LabelRequirement::NotIn(k.to_owned(), set_values(r, term)?)
                } else if let Some(r) = rest.strip_prefix("in") {
                    LabelRequirement::In(k.to_owned(), set_values(r, term)?)
                } else {
                    return Err(format!(
                        "unable to parse requirement: {term:?}: expected an operator"
                    ));
                }
            } else {
                LabelRequirement::Exists(term.to_owned())
            };
            let key = match &req {
                LabelRequirement::Equals(k, _)
                | LabelRequirement::NotEquals(k, _)
                | LabelRequirement::In(k, _)
                | LabelRequirement::NotIn(k, _)
                | LabelRequirement::Exists(k)
                | LabelRequirement::DoesNotExist(k) => k,
            };
            if !valid_key(key) {
                return Err(bad_key(key));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            reqs.push(FieldRequirement {
                field: field.trim().to_owned(),
                value: value.trim().to_owned(),
                negate,
            });
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `value_of` returns a field's value or `None` if the kind does not
    /// support selecting on it (checked up front by [`Self::unsupported`]).
    pub fn matches(&self, value_of: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| {
            let v = value_of(&r.field).unwrap_or_default();
            (v == r.value) != r.negate
        })
    }

    /// The first field not in `supported`, for the 400 kube-apiserver sends.
    pub fn unsupported<'a>(&'a self, supported: &[&str]) -> Option<&'a str> {
        self.0
            .iter()
            .map(|r| r.field.as_str())
            .find(|f| !supported.contains(f))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A label map from pairs (tests elsewhere use it too).
    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(&[("env", "dev"), ("tier", "web")]);
        for (sel, want) in [
            ("env=dev", true),
            ("env==dev", true),
            ("env!=dev", false),
            ("env in (dev, prod)", true),
            ("env notin (dev,prod)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("env=dev,tier in (web),!missing", true),
            ("env=prod", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("env in dev").is_err());
    }

    #[test]
    fn field_selector_equality_and_negation() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        let get = |phase: &'static str| {
            move |k: &str| match k {
                "spec.nodeName" => Some("n1".to_owned()),
                "status.phase" => Some(phase.to_owned()),
                _ => None,
            }
        };
        assert!(f.matches(get("Running")));
        assert!(!f.matches(get("Failed")));
        assert_eq!(f.unsupported(&["spec.nodeName"]), Some("status.phase"));
        // An empty value selects objects where the field is unset.
        assert!(
            FieldSelector::parse("spec.nodeName=")
                .unwrap()
                .matches(|_| None)
        );
    }
}
