//! CustomResourceDefinition (`apiextensions.k8s.io/v1`): defaults,
//! validation with the apiextensions-apiserver's messages, and what its
//! naming and establishing controllers decide (`status.acceptedNames`,
//! `NamesAccepted`, `Established`), as pure functions.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionCondition, CustomResourceDefinitionNames,
    CustomResourceDefinitionStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::KindSpec;
use super::structural_schema;
use super::table::{Column, col, name_col};
use super::validation::dns1123_subdomain;
use crate::status::FieldError;

/// The finalizer that holds a CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn dns1035_errors(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut msgs = Vec::new();
    if s.len() > 63 {
        msgs.push("must be no more than 63 characters".to_owned());
    }
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-';
    if !ok {
        msgs.push(DNS1035_MSG.to_owned());
    }
    (!msgs.is_empty()).then(|| msgs.join(","))
}

fn names_errors(n: &CustomResourceDefinitionNames, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let singular = n.singular.as_deref().unwrap_or("");
    let list_kind = n.list_kind.as_deref().unwrap_or("");
    for (field, value, mixed) in [
        ("plural", n.plural.as_str(), false),
        ("singular", singular, false),
        ("kind", n.kind.as_str(), true),
        ("listKind", list_kind, true),
    ] {
        if value.is_empty() {
            continue;
        }
        let checked = if mixed {
            value.to_lowercase()
        } else {
            value.to_owned()
        };
        if let Some(m) = dns1035_errors(&checked) {
            let detail = if mixed {
                format!("may have mixed case, but should otherwise match: {m}")
            } else {
                m
            };
            errs.push(FieldError::invalid(
                format!("{path}.{field}"),
                value,
                detail,
            ));
        }
    }
    for (i, s) in n.short_names.iter().flatten().enumerate() {
        if let Some(m) = dns1035_errors(s) {
            errs.push(FieldError::invalid(format!("{path}.shortNames[{i}]"), s, m));
        }
    }
    if !n.kind.is_empty() && n.kind == list_kind {
        errs.push(FieldError::invalid(
            format!("{path}.listKind"),
            list_kind,
            "kind and listKind may not be the same",
        ));
    }
    for (i, c) in n.categories.iter().flatten().enumerate() {
        if let Some(m) = dns1035_errors(c) {
            errs.push(FieldError::invalid(format!("{path}.categories[{i}]"), c, m));
        }
    }
    errs
}

const PRINTER_COLUMN_TYPES: [&str; 5] = ["boolean", "date", "integer", "number", "string"];
const PRINTER_COLUMN_FORMATS: [&str; 9] = [
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "password",
    "uri",
];

fn spec_errors(crd: &CustomResourceDefinition) -> Vec<FieldError> {
    let spec = &crd.spec;
    let mut errs = Vec::new();
    if spec.group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else {
        let e = dns1123_subdomain("spec.group", &spec.group);
        if !e.is_empty() {
            errs.extend(e);
        } else if !spec.group.contains('.') {
            errs.push(FieldError::invalid(
                "spec.group",
                &spec.group,
                "should be a domain with at least one dot",
            ));
        }
    }
    match spec.scope.as_str() {
        "" => errs.push(FieldError::required("spec.scope", "")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(FieldError::not_supported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    let mut seen = std::collections::HashSet::new();
    let mut unique = true;
    let mut storage = 0;
    let versions_value = || {
        format!(
            "[]apiextensions.CustomResourceDefinitionVersion{{{}}}",
            spec.versions
                .iter()
                .map(|v| format!(
                    "apiextensions.CustomResourceDefinitionVersion{{Name:{:?}, Served:{}, Storage:{}}}",
                    v.name, v.served, v.storage
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if spec.versions.is_empty() {
        errs.push(FieldError::invalid_raw(
            "spec.versions",
            versions_value(),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in spec.versions.iter().enumerate() {
        let vp = format!("spec.versions[{i}]");
        if v.storage {
            storage += 1;
        }
        if !seen.insert(v.name.as_str()) {
            unique = false;
        }
        if let Some(m) = dns1035_errors(&v.name) {
            errs.push(FieldError::invalid(format!("{vp}.name"), &v.name, m));
        }
        match v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => errs.push(FieldError::required(
                format!("{vp}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(s) => errs.extend(structural_schema::structural_errors(
                s,
                &format!("{vp}.schema.openAPIV3Schema"),
            )),
        }
        for (j, c) in v.additional_printer_columns.iter().flatten().enumerate() {
            let cp = format!("{vp}.additionalPrinterColumns[{j}]");
            if c.name.is_empty() {
                errs.push(FieldError::required(format!("{cp}.name"), ""));
            }
            let types = format!("must be one of {}", PRINTER_COLUMN_TYPES.join(","));
            if c.type_.is_empty() {
                errs.push(FieldError::required(format!("{cp}.type"), types));
            } else if !PRINTER_COLUMN_TYPES.contains(&c.type_.as_str()) {
                errs.push(FieldError::invalid(format!("{cp}.type"), &c.type_, types));
            }
            if let Some(f) = c.format.as_deref().filter(|f| !f.is_empty())
                && !PRINTER_COLUMN_FORMATS.contains(&f)
            {
                errs.push(FieldError::invalid(
                    format!("{cp}.format"),
                    f,
                    format!("must be one of {}", PRINTER_COLUMN_FORMATS.join(",")),
                ));
            }
            if c.json_path.is_empty() {
                errs.push(FieldError::required(format!("{cp}.jsonPath"), ""));
            }
        }
        if let Some(scale) = v.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
            let sp = format!("{vp}.subresources.scale");
            for (field, path) in [
                ("specReplicasPath", Some(scale.spec_replicas_path.as_str())),
                (
                    "statusReplicasPath",
                    Some(scale.status_replicas_path.as_str()),
                ),
                ("labelSelectorPath", scale.label_selector_path.as_deref()),
            ] {
                let Some(path) = path else { continue };
                if path.is_empty() {
                    errs.push(FieldError::required(format!("{sp}.{field}"), ""));
                } else if !path.starts_with('.') {
                    errs.push(FieldError::invalid(
                        format!("{sp}.{field}"),
                        path,
                        "should be a json path under either .spec or .status",
                    ));
                }
            }
        }
    }
    if !unique {
        errs.push(FieldError::invalid_raw(
            "spec.versions",
            versions_value(),
            "must contain unique version names",
        ));
    }
    if storage != 1 && !spec.versions.is_empty() {
        errs.push(FieldError::invalid_raw(
            "spec.versions",
            versions_value(),
            "must have exactly one version marked as storage version",
        ));
    }
    let n = &spec.names;
    if n.plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if n.singular.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.names.singular", ""));
    }
    if n.kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if n.list_kind.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.names.listKind", ""));
    }
    errs.extend(names_errors(n, "spec.names"));
    if let Some(c) = &spec.conversion
        && c.strategy != "None"
        && c.strategy != "Webhook"
    {
        errs.push(FieldError::not_supported(
            "spec.conversion.strategy",
            &c.strategy,
            &["None", "Webhook"],
        ));
    }
    errs
}

fn stored_versions_errors(crd: &CustomResourceDefinition) -> Vec<FieldError> {
    let stored: Vec<String> = crd
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    let mut errs = Vec::new();
    for (i, v) in stored.iter().enumerate() {
        if !crd.spec.versions.iter().any(|sv| &sv.name == v) {
            errs.push(FieldError::invalid(
                format!("status.storedVersions[{i}]"),
                v,
                "must appear in spec.versions",
            ));
        }
    }
    errs
}

/// `status.storedVersions` with the storage version added.
fn record_storage_version(crd: &mut CustomResourceDefinition) {
    let Some(storage) = crd.spec.versions.iter().find(|v| v.storage) else {
        return;
    };
    let status = crd.status.get_or_insert_with(Default::default);
    let stored = status.stored_versions.get_or_insert_with(Vec::new);
    if !stored.contains(&storage.name) {
        stored.push(storage.name.clone());
    }
}

fn set_defaults(crd: &mut CustomResourceDefinition) {
    let n = &mut crd.spec.names;
    if n.singular.as_deref().unwrap_or("").is_empty() && !n.kind.is_empty() {
        n.singular = Some(n.kind.to_lowercase());
    }
    if n.list_kind.as_deref().unwrap_or("").is_empty() && !n.kind.is_empty() {
        n.list_kind = Some(format!("{}List", n.kind));
    }
    let conversion = crd.spec.conversion.get_or_insert_with(Default::default);
    if conversion.strategy.is_empty() {
        conversion.strategy = "None".into();
    }
}

impl KindSpec for CustomResourceDefinition {
    const SHORT_NAMES: &'static [&'static str] = &["crd", "crds"];
    const CATEGORIES: &'static [&'static str] = &["api-extensions"];
    const HAS_STATUS: bool = true;

    fn prepare_create(&mut self) {
        set_defaults(self);
        // Status is the controllers' to fill; only the storage version is known.
        self.status = None;
        record_storage_version(self);
        let finalizers = self.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
            finalizers.push(CLEANUP_FINALIZER.to_owned());
        }
    }

    fn prepare_update(&mut self, _old: &Self) {
        set_defaults(self);
        record_storage_version(self);
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = self.metadata.name.as_deref().unwrap_or("");
        let want = format!("{}.{}", self.spec.names.plural, self.spec.group);
        if !name.is_empty() && name != want {
            errs.push(FieldError::invalid(
                "metadata.name",
                name,
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
        errs.extend(spec_errors(self));
        if let Some(old) = old {
            let established = is_condition_true(old, "Established");
            let immutable = |errs: &mut Vec<FieldError>, field: &str, new: &str, old: &str| {
                if new != old {
                    errs.push(FieldError::invalid(field, new, "field is immutable"));
                }
            };
            if established {
                immutable(&mut errs, "spec.scope", &self.spec.scope, &old.spec.scope);
                immutable(
                    &mut errs,
                    "spec.names.kind",
                    &self.spec.names.kind,
                    &old.spec.names.kind,
                );
            }
            immutable(&mut errs, "spec.group", &self.spec.group, &old.spec.group);
            immutable(
                &mut errs,
                "spec.names.plural",
                &self.spec.names.plural,
                &old.spec.names.plural,
            );
        }
        errs.extend(stored_versions_errors(self));
        errs
    }

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Created At", "date", 0)]
    }

    fn cells(&self, _now: jiff::Timestamp) -> Vec<Value> {
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            self.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| Value::from(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
                .unwrap_or(Value::Null),
        ]
    }
}

pub fn is_condition_true(crd: &CustomResourceDefinition, type_: &str) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The names other CRDs of a group hold: resource names (plural, singular,
/// short names) and kinds (kind, list kind).
#[derive(Default)]
pub struct TakenNames {
    resources: std::collections::HashSet<String>,
    kinds: std::collections::HashSet<String>,
}

impl TakenNames {
    pub fn add(&mut self, accepted: &CustomResourceDefinitionNames) {
        let mut add = |s: &str| {
            if !s.is_empty() {
                self.resources.insert(s.to_owned());
            }
        };
        add(&accepted.plural);
        add(accepted.singular.as_deref().unwrap_or(""));
        for s in accepted.short_names.iter().flatten() {
            add(s);
        }
        for k in [
            accepted.kind.as_str(),
            accepted.list_kind.as_deref().unwrap_or(""),
        ] {
            if !k.is_empty() {
                self.kinds.insert(k.to_owned());
            }
        }
    }
}

fn fresh_or_same(
    requested: &str,
    accepted: &str,
    taken: &std::collections::HashSet<String>,
) -> Result<(), String> {
    if requested == accepted || !taken.contains(requested) {
        Ok(())
    } else {
        Err(format!("{requested:?} is already in use"))
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> CustomResourceDefinitionCondition {
    CustomResourceDefinitionCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
    }
}

/// What the naming and establishing controllers make of a CRD, given the
/// names other CRDs of its group have been granted: its new status (the
/// names accepted, `NamesAccepted`, `Established`, and `Terminating` once
/// deleted), keeping transition times of conditions that did not change.
pub fn decide_status(
    crd: &CustomResourceDefinition,
    taken: &TakenNames,
) -> CustomResourceDefinitionStatus {
    let old = crd.status.clone().unwrap_or_default();
    let accepted = old.accepted_names.clone().unwrap_or_default();
    let requested = &crd.spec.names;
    let mut names = accepted.clone();
    let mut conflict: Option<(&str, String)> = None;
    let mut note = |reason: &'static str, e: String| {
        conflict = Some((reason, e));
    };
    match fresh_or_same(&requested.plural, &accepted.plural, &taken.resources) {
        Ok(()) => names.plural = requested.plural.clone(),
        Err(e) => note("PluralConflict", e),
    }
    let singular = requested.singular.clone().unwrap_or_default();
    match fresh_or_same(
        &singular,
        accepted.singular.as_deref().unwrap_or(""),
        &taken.resources,
    ) {
        Ok(()) => names.singular = Some(singular),
        Err(e) => note("SingularConflict", e),
    }
    if requested.short_names != accepted.short_names {
        let mine: Vec<&String> = accepted.short_names.iter().flatten().collect();
        let errs: Vec<String> = requested
            .short_names
            .iter()
            .flatten()
            .filter(|s| !mine.contains(s))
            .filter_map(|s| fresh_or_same(s, "", &taken.resources).err())
            .collect();
        if errs.is_empty() {
            names.short_names = requested.short_names.clone();
        } else if errs.len() == 1 {
            note("ShortNamesConflict", errs[0].clone());
        } else {
            note("ShortNamesConflict", format!("[{}]", errs.join(", ")));
        }
    }
    match fresh_or_same(&requested.kind, &accepted.kind, &taken.kinds) {
        Ok(()) => names.kind = requested.kind.clone(),
        Err(e) => note("KindConflict", e),
    }
    let list_kind = requested.list_kind.clone().unwrap_or_default();
    match fresh_or_same(
        &list_kind,
        accepted.list_kind.as_deref().unwrap_or(""),
        &taken.kinds,
    ) {
        Ok(()) => names.list_kind = Some(list_kind),
        Err(e) => note("ListKindConflict", e),
    }
    names.categories = requested.categories.clone();

    let names_accepted = match &conflict {
        Some((reason, message)) => condition("NamesAccepted", "False", reason, message),
        None => condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
    };
    let was_established = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Established")
        .cloned();
    let established = match (was_established, conflict.is_none()) {
        (Some(c), _) if c.status == "True" => c,
        (_, true) => condition(
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        ),
        (Some(c), false) => c,
        (None, false) => condition(
            "Established",
            "False",
            "NotAccepted",
            "not all names are accepted",
        ),
    };
    let mut conditions = vec![names_accepted, established];
    if crd.metadata.deletion_timestamp.is_some() {
        conditions.push(condition(
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    // A condition that did not change keeps the time it last changed.
    for c in &mut conditions {
        if let Some(prev) = old.conditions.iter().flatten().find(|p| p.type_ == c.type_)
            && prev.status == c.status
            && prev.reason == c.reason
            && prev.message == c.message
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    CustomResourceDefinitionStatus {
        accepted_names: Some(names),
        conditions: Some(conditions),
        stored_versions: old.stored_versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(plural: &str, kind: &str, short: &[&str]) -> CustomResourceDefinition {
        let mut c: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": format!("{plural}.stable.example.com")},
            "spec": {
                "group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": plural, "kind": kind, "shortNames": short},
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object"}}}]
            }
        }))
        .unwrap();
        c.prepare_create();
        c
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn create_defaults_names_and_records_the_storage_version() {
        let c = crd("crontabs", "CronTab", &["ct"]);
        assert_eq!(c.spec.names.singular.as_deref(), Some("crontab"));
        assert_eq!(c.spec.names.list_kind.as_deref(), Some("CronTabList"));
        assert_eq!(c.status.unwrap().stored_versions.unwrap(), vec!["v1"]);
        assert_eq!(c.metadata.finalizers.unwrap(), vec![CLEANUP_FINALIZER]);
        assert!(crd("crontabs", "CronTab", &[]).validate(None).is_empty());
    }

    #[test]
    fn bad_specs_are_refused_with_upstreams_messages() {
        let mut c = crd("crontabs", "CronTab", &["Bad"]);
        c.metadata.name = Some("wrong".into());
        c.spec.group = "nodot".into();
        c.spec.scope = "Global".into();
        c.spec.versions[0].storage = false;
        let got = messages(&c.validate(None));
        for want in [
            r#"metadata.name: Invalid value: "wrong": must be spec.names.plural+"."+spec.group"#,
            r#"spec.group: Invalid value: "nodot": should be a domain with at least one dot"#,
            r#"spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced""#,
            r#"spec.names.shortNames[0]: Invalid value: "Bad": a DNS-1035 label"#,
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{want} not in {got:#?}"
            );
        }
        assert!(
            got.iter()
                .any(|g| g.starts_with("spec.versions: Invalid value: ")
                    && g.ends_with("must have exactly one version marked as storage version")),
            "{got:#?}"
        );
    }

    #[test]
    fn names_of_another_crd_in_the_group_are_not_accepted() {
        let mut first = crd("crontabs", "CronTab", &["ct"]);
        first.status = Some(decide_status(&first, &TakenNames::default()));
        assert!(is_condition_true(&first, "NamesAccepted"));
        assert!(is_condition_true(&first, "Established"));
        let mut taken = TakenNames::default();
        taken.add(
            first
                .status
                .as_ref()
                .unwrap()
                .accepted_names
                .as_ref()
                .unwrap(),
        );

        let second = crd("crontabs2", "CronTab2", &["ct"]);
        let status = decide_status(&second, &taken);
        let conds = status.conditions.unwrap();
        assert_eq!(conds[0].type_, "NamesAccepted");
        assert_eq!(conds[0].status, "False");
        assert_eq!(conds[0].reason.as_deref(), Some("ShortNamesConflict"));
        assert_eq!(
            conds[0].message.as_deref(),
            Some(r#""ct" is already in use"#)
        );
        assert_eq!(conds[1].status, "False");
        assert_eq!(conds[1].reason.as_deref(), Some("NotAccepted"));
        assert_eq!(status.accepted_names.unwrap().plural, "crontabs2");
    }
}
