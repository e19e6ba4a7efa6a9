//! Structural OpenAPI v3 schemas of custom resources: validation of objects
//! with kube-openapi's messages as the apiextensions-apiserver turns them
//! into field errors, defaulting from `default:`, and pruning of fields the
//! schema does not specify (`apiextensions-apiserver/pkg/apiserver/schema`).
//!
//! The schema is k8s-openapi's `JSONSchemaProps`; objects are JSON. Paths
//! are written as kube-openapi writes them: `spec.items[0].name`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::{Map, Value};

use crate::status::{FieldError, FieldErrorKind};

/// Fields every object (and every embedded resource) keeps whatever its
/// schema says.
const TYPE_META: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn item_schema(s: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match s.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(s) => Some(s),
        JSONSchemaPropsOrArray::Schemas(v) => v.first(),
    }
}

fn additional_properties(s: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match s.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(s) => Some(s),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}

fn allows_any_additional(s: &JSONSchemaProps) -> bool {
    matches!(
        s.additional_properties,
        Some(JSONSchemaPropsOrBool::Bool(true))
    )
}

fn flag(b: Option<bool>) -> bool {
    b.unwrap_or(false)
}

/// The JSON type name kube-openapi reports for a value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as Go's `%#v` prints what JSON decoded into.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!(
            "[]interface {{}}{{{}}}",
            a.iter().map(go_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "map[string]interface {{}}{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{k:?}:{}", go_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A float as Go's `%v` prints it (`10`, `1.5`).
fn go_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn matches_type(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        _ => true,
    }
}

/// Validates `v` against `schema`; `path` is where `v` sits in the object
/// (empty at the root).
pub fn validate(schema: &JSONSchemaProps, v: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_into(schema, v, path, &mut errs);
    errs
}

fn invalid(path: &str, v: &Value, detail: String) -> FieldError {
    FieldError::invalid_raw(path, go_value(v), detail)
}

fn validate_into(s: &JSONSchemaProps, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let shown = if path.is_empty() { "body" } else { path };
    if v.is_null() {
        if flag(s.nullable) {
            return;
        }
        if let Some(t) = s.type_.as_deref().filter(|t| !t.is_empty()) {
            errs.push(FieldError {
                field: path.to_owned(),
                kind: FieldErrorKind::TypeInvalid("\"null\"".into()),
                detail: format!("{shown} in body must be of type {t}: \"null\""),
            });
            return;
        }
    }
    if flag(s.x_kubernetes_int_or_string) {
        if !(v.is_string() || matches_type("integer", v)) {
            errs.push(FieldError {
                field: path.to_owned(),
                kind: FieldErrorKind::TypeInvalid(format!("{:?}", type_name(v))),
                detail: format!(
                    "{shown} in body must be of type integer,string: {:?}",
                    type_name(v)
                ),
            });
            return;
        }
    } else if let Some(t) = s.type_.as_deref().filter(|t| !t.is_empty())
        && !matches_type(t, v)
    {
        errs.push(FieldError {
            field: path.to_owned(),
            kind: FieldErrorKind::TypeInvalid(format!("{:?}", type_name(v))),
            detail: format!("{shown} in body must be of type {t}: {:?}", type_name(v)),
        });
        return;
    }
    if let Some(values) = &s.enum_
        && !values.iter().any(|e| &e.0 == v)
    {
        let supported: Vec<String> = values
            .iter()
            .map(|e| match &e.0 {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let refs: Vec<&str> = supported.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported_raw(path, go_value(v), &refs));
    }
    match v {
        Value::String(text) => validate_string(s, text, v, path, shown, errs),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if let Some(max) = s.maximum {
                if flag(s.exclusive_maximum) && f >= max {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{shown} in body should be less than {}", go_float(max)),
                    ));
                } else if f > max {
                    errs.push(invalid(
                        path,
                        v,
                        format!(
                            "{shown} in body should be less than or equal to {}",
                            go_float(max)
                        ),
                    ));
                }
            }
            if let Some(min) = s.minimum {
                if flag(s.exclusive_minimum) && f <= min {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{shown} in body should be greater than {}", go_float(min)),
                    ));
                } else if f < min {
                    errs.push(invalid(
                        path,
                        v,
                        format!(
                            "{shown} in body should be greater than or equal to {}",
                            go_float(min)
                        ),
                    ));
                }
            }
            if let Some(m) = s.multiple_of.filter(|m| *m > 0.0)
                && (f / m).fract() != 0.0
            {
                errs.push(invalid(
                    path,
                    v,
                    format!("{shown} in body should be a multiple of {}", go_float(m)),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = s.max_items
                && items.len() as i64 > max
            {
                errs.push(FieldError {
                    field: path.to_owned(),
                    kind: FieldErrorKind::TooMany(items.len().to_string()),
                    detail: format!("must have at most {max} items"),
                });
            }
            if let Some(min) = s.min_items
                && (items.len() as i64) < min
            {
                errs.push(FieldError::invalid_raw(
                    path,
                    items.len().to_string(),
                    format!("{shown} in body should have at least {min} items"),
                ));
            }
            if let Some(item) = item_schema(s) {
                for (i, x) in items.iter().enumerate() {
                    validate_into(item, x, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(fields) => validate_object(s, fields, path, shown, errs),
        _ => {}
    }
    for sub in s.all_of.iter().flatten() {
        validate_into(sub, v, path, errs);
    }
    if let Some(any) = s.any_of.as_ref().filter(|a| !a.is_empty())
        && !any.iter().any(|sub| validate(sub, v, path).is_empty())
    {
        errs.push(invalid(
            path,
            v,
            format!("{shown} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = s.one_of.as_ref().filter(|a| !a.is_empty()) {
        let passing = one
            .iter()
            .filter(|sub| validate(sub, v, path).is_empty())
            .count();
        if passing != 1 {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = &s.not
        && validate(not, v, path).is_empty()
    {
        errs.push(invalid(
            path,
            v,
            format!("{shown} in body should not validate the schema (not)"),
        ));
    }
}

fn validate_string(
    s: &JSONSchemaProps,
    text: &str,
    v: &Value,
    path: &str,
    shown: &str,
    errs: &mut Vec<FieldError>,
) {
    let len = text.chars().count() as i64;
    if let Some(max) = s.max_length
        && len > max
    {
        errs.push(FieldError {
            field: path.to_owned(),
            kind: FieldErrorKind::TooLong,
            detail: format!("may not be more than {max} bytes"),
        });
    }
    if let Some(min) = s.min_length
        && len < min
    {
        errs.push(invalid(
            path,
            v,
            format!("{shown} in body should be at least {min} chars long"),
        ));
    }
    if let Some(p) = &s.pattern {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(text) => errs.push(invalid(
                path,
                v,
                format!("{shown} in body should match '{p}'"),
            )),
            Ok(_) => {}
            Err(_) => errs.push(invalid(
                path,
                v,
                format!("{shown} in body has an invalid pattern '{p}'"),
            )),
        }
    }
}

fn validate_object(
    s: &JSONSchemaProps,
    fields: &Map<String, Value>,
    path: &str,
    shown: &str,
    errs: &mut Vec<FieldError>,
) {
    for r in s.required.iter().flatten() {
        if !fields.contains_key(r) {
            errs.push(FieldError::required(child(path, r), ""));
        }
    }
    if let Some(max) = s.max_properties
        && fields.len() as i64 > max
    {
        errs.push(FieldError {
            field: path.to_owned(),
            kind: FieldErrorKind::TooMany(fields.len().to_string()),
            detail: format!("must have at most {max} items"),
        });
    }
    if let Some(min) = s.min_properties
        && (fields.len() as i64) < min
    {
        errs.push(FieldError::invalid_raw(
            path,
            fields.len().to_string(),
            format!("{shown} in body should have at least {min} properties"),
        ));
    }
    let props = s.properties.as_ref();
    for (k, x) in fields {
        let at_root_meta = path.is_empty() && TYPE_META.contains(&k.as_str());
        match props.and_then(|p| p.get(k)) {
            Some(sub) if !(at_root_meta && k == "metadata") => {
                validate_into(sub, x, &child(path, k), errs)
            }
            Some(_) => {}
            None => {
                if let Some(sub) = additional_properties(s) {
                    validate_into(sub, x, &child(path, k), errs);
                }
            }
        }
    }
}

/// Fills in `default:` values for absent fields, everywhere a schema
/// reaches; null values of fields that are not nullable are dropped first
/// (and defaulted when they have a default).
pub fn apply_defaults(s: &JSONSchemaProps, v: &mut Value) {
    match v {
        Value::Object(fields) => {
            if let Some(props) = &s.properties {
                for (k, sub) in props {
                    let null_dropped =
                        fields.get(k).is_some_and(Value::is_null) && !flag(sub.nullable);
                    if null_dropped {
                        fields.remove(k);
                    }
                    if !fields.contains_key(k)
                        && let Some(d) = &sub.default
                    {
                        fields.insert(k.clone(), d.0.clone());
                    }
                    if let Some(x) = fields.get_mut(k) {
                        apply_defaults(sub, x);
                    }
                }
            }
            if let Some(sub) = additional_properties(s) {
                let known = s.properties.as_ref();
                for (k, x) in fields.iter_mut() {
                    if known.is_none_or(|p| !p.contains_key(k)) {
                        apply_defaults(sub, x);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = item_schema(s) {
                for x in items.iter_mut() {
                    if x.is_null()
                        && let Some(d) = &sub.default
                    {
                        *x = d.0.clone();
                    }
                    apply_defaults(sub, x);
                }
            }
        }
        _ => {}
    }
}

/// Drops the fields `s` does not specify (unless it preserves unknown
/// fields) and returns their paths. At the root and in embedded resources
/// `apiVersion`, `kind` and `metadata` stay.
pub fn prune(s: &JSONSchemaProps, v: &mut Value, path: &str) -> Vec<String> {
    let mut dropped = Vec::new();
    prune_into(s, v, path, path.is_empty(), &mut dropped);
    dropped
}

fn prune_into(
    s: &JSONSchemaProps,
    v: &mut Value,
    path: &str,
    keeps_type_meta: bool,
    dropped: &mut Vec<String>,
) {
    match v {
        Value::Object(fields) => {
            let preserve = flag(s.x_kubernetes_preserve_unknown_fields);
            let any_additional = allows_any_additional(s);
            let extra = additional_properties(s);
            let keys: Vec<String> = fields.keys().cloned().collect();
            for k in keys {
                let p = child(path, &k);
                let keep_meta = keeps_type_meta && TYPE_META.contains(&k.as_str());
                match s.properties.as_ref().and_then(|props| props.get(&k)) {
                    Some(sub) if !(keep_meta && k == "metadata") => {
                        let embedded = flag(sub.x_kubernetes_embedded_resource);
                        if let Some(x) = fields.get_mut(&k) {
                            prune_into(sub, x, &p, embedded, dropped);
                        }
                    }
                    Some(_) => {}
                    None if keep_meta => {}
                    None => {
                        if let Some(sub) = extra {
                            let embedded = flag(sub.x_kubernetes_embedded_resource);
                            if let Some(x) = fields.get_mut(&k) {
                                prune_into(sub, x, &p, embedded, dropped);
                            }
                        } else if !preserve && !any_additional {
                            fields.remove(&k);
                            dropped.push(p);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = item_schema(s) {
                let embedded = flag(sub.x_kubernetes_embedded_resource);
                for (i, x) in items.iter_mut().enumerate() {
                    prune_into(sub, x, &format!("{path}[{i}]"), embedded, dropped);
                }
            }
        }
        _ => {}
    }
}

/// The rules that make a schema structural, and the checks of defaults
/// against it (`ValidateCustomResourceDefinitionOpenAPISchema`, the
/// structural schema validation); `path` is the field path of `s` in the
/// CRD (`spec.versions[0].schema.openAPIV3Schema`).
pub fn structural_errors(s: &JSONSchemaProps, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let t = s.type_.as_deref().unwrap_or("");
    if t != "object" {
        if t.is_empty() {
            errs.push(FieldError::required(
                format!("{path}.type"),
                "must not be empty at the root",
            ));
        } else {
            errs.push(FieldError::invalid(
                format!("{path}.type"),
                t,
                "must be object at the root",
            ));
        }
    }
    if let Some(meta) = s.properties.as_ref().and_then(|p| p.get("metadata")) {
        let meta_path = format!("{path}.properties[metadata]");
        for (k, _) in meta.properties.iter().flatten() {
            if k != "name" && k != "generateName" {
                errs.push(FieldError::forbidden(
                    format!("{meta_path}.properties[{k}]"),
                    "must not be specified",
                ));
            }
        }
    }
    structural_node(s, path, true, &mut errs);
    errs
}

fn structural_node(s: &JSONSchemaProps, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let t = s.type_.as_deref().unwrap_or("");
    let int_or_string = flag(s.x_kubernetes_int_or_string);
    let preserve = flag(s.x_kubernetes_preserve_unknown_fields);
    if s.x_kubernetes_preserve_unknown_fields == Some(false) {
        errs.push(FieldError::invalid(
            format!("{path}.x-kubernetes-preserve-unknown-fields"),
            "false",
            "must be true or undefined",
        ));
    }
    if t.is_empty() && !int_or_string && !preserve && !root {
        errs.push(FieldError::required(
            format!("{path}.type"),
            "must not be empty for specified object fields",
        ));
    }
    if int_or_string && !t.is_empty() {
        errs.push(FieldError::invalid(
            format!("{path}.type"),
            t,
            "must be empty if x-kubernetes-int-or-string is true",
        ));
    }
    if !t.is_empty()
        && !matches!(
            t,
            "object" | "array" | "string" | "integer" | "number" | "boolean"
        )
    {
        errs.push(FieldError::not_supported(
            format!("{path}.type"),
            t,
            &["array", "boolean", "integer", "number", "object", "string"],
        ));
    }
    if flag(s.x_kubernetes_embedded_resource) && t != "object" {
        errs.push(FieldError::invalid(
            format!("{path}.type"),
            t,
            "must be object if x-kubernetes-embedded-resource is true",
        ));
    }
    if s.properties.as_ref().is_some_and(|p| !p.is_empty()) && s.additional_properties.is_some() {
        errs.push(FieldError::forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if t == "array" && s.items.is_none() {
        errs.push(FieldError::required(
            format!("{path}.items"),
            "must be specified",
        ));
    }
    if matches!(s.items, Some(JSONSchemaPropsOrArray::Schemas(_))) {
        errs.push(FieldError::forbidden(
            format!("{path}.items"),
            "items must be a schema object and not an array",
        ));
    }
    if flag(s.unique_items) {
        errs.push(FieldError::forbidden(
            format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if s.ref_path.is_some() {
        errs.push(FieldError::forbidden(
            format!("{path}.$ref"),
            "$ref is not supported",
        ));
    }
    if let Some(p) = &s.pattern
        && regex::Regex::new(p).is_err()
    {
        errs.push(FieldError::invalid(
            format!("{path}.pattern"),
            p,
            "must be a valid regular expression",
        ));
    }
    for (k, sub) in s.properties.iter().flatten() {
        let p = format!("{path}.properties[{k}]");
        if root && k == "metadata" {
            continue;
        }
        structural_node(sub, &p, false, errs);
        if let Some(d) = &sub.default {
            for e in validate(sub, &d.0, k) {
                errs.push(FieldError {
                    field: format!("{p}.default"),
                    ..e
                });
            }
        }
    }
    if let Some(sub) = additional_properties(s) {
        structural_node(sub, &format!("{path}.additionalProperties"), false, errs);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(sub)) = &s.items {
        structural_node(sub, &format!("{path}.items"), false, errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> JSONSchemaProps {
        serde_json::from_value(v).unwrap()
    }

    fn crontab() -> JSONSchemaProps {
        schema(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string", "default": "busybox"},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "mode": {"type": "string", "enum": ["fast", "slow"]},
                        "name": {"type": "string", "maxLength": 5},
                        "port": {"x-kubernetes-int-or-string": true},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "note": {"type": "string", "nullable": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                                      "properties": {"spec": {"type": "object"}}}
                    }
                },
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
            }
        }))
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_wrong_type_names_the_field_as_kube_openapi_does() {
        let errs = validate(
            &crontab(),
            &json!({"spec": {"cronSpec": "* * * * */5", "replicas": "string"}}),
            "",
        );
        assert_eq!(
            messages(&errs),
            vec![
                r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
            ]
        );
    }

    #[test]
    fn required_enum_bounds_pattern_length_and_items_are_checked() {
        let errs = validate(
            &crontab(),
            &json!({"spec": {"replicas": 11, "mode": "medium", "name": "toolong",
                             "tags": ["a", "b", "c"], "port": 1.5}}),
            "",
        );
        let got = messages(&errs);
        for want in [
            "spec.cronSpec: Required value",
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
            r#"spec.mode: Unsupported value: "medium": supported values: "fast", "slow""#,
            "spec.name: Too long: may not be more than 5 bytes",
            "spec.tags: Too many: 3: must have at most 2 items",
            r#"spec.port: Invalid value: "number": spec.port in body must be of type integer,string: "number""#,
        ] {
            assert!(got.contains(&want.to_owned()), "{want} not in {got:#?}");
        }
        let errs = validate(
            &crontab(),
            &json!({"spec": {"cronSpec": "bad", "replicas": 0, "port": "http", "note": null}}),
            "",
        );
        assert_eq!(
            messages(&errs),
            vec![
                r#"spec.cronSpec: Invalid value: "bad": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#,
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            ]
        );
    }

    #[test]
    fn defaults_fill_absent_fields_and_replace_non_nullable_nulls() {
        let mut v = json!({"spec": {"cronSpec": "* * * * *", "image": null}});
        apply_defaults(&crontab(), &mut v);
        assert_eq!(
            v["spec"],
            json!({"cronSpec": "* * * * *", "image": "busybox", "replicas": 1})
        );
    }

    #[test]
    fn pruning_drops_unspecified_fields_and_keeps_preserved_and_embedded_metadata() {
        let mut v = json!({
            "apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "a"},
            "bogus": 1,
            "spec": {"cronSpec": "x", "unknown": {"a": 1}, "extra": {"anything": [1]},
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                  "spec": {"x": 1}, "other": 2},
                     "tags": ["a"]}
        });
        let dropped = prune(&crontab(), &mut v, "");
        // An object without properties keeps nothing it is not told to.
        assert_eq!(
            dropped,
            vec![
                "bogus",
                "spec.template.other",
                "spec.template.spec.x",
                "spec.unknown"
            ]
        );
        assert_eq!(v["spec"]["extra"], json!({"anything": [1]}));
        assert_eq!(v["spec"]["template"]["metadata"], json!({"name": "p"}));
        assert_eq!(v["metadata"], json!({"name": "a"}));
    }

    #[test]
    fn non_structural_schemas_are_refused_with_their_paths() {
        let s = schema(json!({
            "type": "object",
            "properties": {
                "spec": {"properties": {"a": {"type": "string", "default": 5}}},
                "list": {"type": "array"},
                "both": {"type": "object", "properties": {"x": {"type": "string"}},
                         "additionalProperties": {"type": "string"}}
            }
        }));
        let got = messages(&structural_errors(
            &s,
            "spec.versions[0].schema.openAPIV3Schema",
        ));
        let p = "spec.versions[0].schema.openAPIV3Schema";
        for want in [
            format!(
                "{p}.properties[spec].type: Required value: must not be empty for specified object fields"
            ),
            format!("{p}.properties[list].items: Required value: must be specified"),
            format!(
                "{p}.properties[both].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
            ),
            format!(
                r#"{p}.properties[spec].properties[a].default: Invalid value: "integer": a in body must be of type string: "integer""#
            ),
        ] {
            assert!(got.contains(&want), "{want} not in {got:#?}");
        }
    }
}
