//! API errors as Kubernetes `Status` objects, worded as kube-apiserver words
//! them (kubectl prints `Error from server (<reason>): <message>`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ListMeta, Status, StatusCause, StatusDetails,
};

use crate::storage::StorageError;

/// One invalid field, as `field.Error` in apimachinery.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    Required,
    /// The offending value, rendered as Go's `%#v` would (quoted strings).
    Invalid(String),
    NotSupported(String),
    Duplicate(String),
    Forbidden,
    /// A value whose JSON type is wrong (`field.TypeInvalid`).
    TypeInvalid(String),
    /// A string over its length limit; the value is not repeated.
    TooLong,
    /// A list or map with too many entries; the count found.
    TooMany(String),
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(format!("{value:?}")),
            detail: detail.into(),
        }
    }
    pub fn invalid_raw(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value.into()),
            detail: detail.into(),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        Self::not_supported_raw(field, format!("{value:?}"), supported)
    }
    /// `NotSupported` with a value already rendered as Go's `%#v` would.
    pub fn not_supported_raw(
        field: impl Into<String>,
        value: impl Into<String>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(value.into()),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Duplicate(format!("{value:?}")),
            detail: String::new(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::NotSupported(_) => "FieldValueNotSupported",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TypeInvalid(_) => "FieldValueTypeInvalid",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany(_) => "FieldValueTooMany",
        }
    }

    /// The message without the field path (`ErrorBody` in apimachinery).
    pub fn body(&self) -> String {
        let (label, value) = match &self.kind {
            FieldErrorKind::Required => ("Required value", None),
            FieldErrorKind::Invalid(v) => ("Invalid value", Some(v)),
            FieldErrorKind::NotSupported(v) => ("Unsupported value", Some(v)),
            FieldErrorKind::Duplicate(v) => ("Duplicate value", Some(v)),
            FieldErrorKind::Forbidden => ("Forbidden", None),
            FieldErrorKind::TypeInvalid(v) => ("Invalid value", Some(v)),
            FieldErrorKind::TooLong => ("Too long", None),
            FieldErrorKind::TooMany(v) => ("Too many", Some(v)),
        };
        let mut s = label.to_owned();
        if let Some(v) = value {
            s.push_str(": ");
            s.push_str(v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// An error answered as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: most errors have none, and results stay small.
    pub details: Option<Box<StatusDetails>>,
}

/// Which resource an error is about, for messages and `details`.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub kind: &'a str,
}

impl Subject<'_> {
    /// `pods` or `leases.coordination.k8s.io`, as in kube-apiserver messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `Deployment.apps` or `Pod`: the group-qualified kind of `NewInvalid`.
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() || self.kind.contains('.') {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
    fn details(&self, name: &str) -> StatusDetails {
        StatusDetails {
            name: Some(name.to_owned()),
            group: (!self.group.is_empty()).then(|| self.group.to_owned()),
            kind: Some(self.plural.to_owned()),
            ..Default::default()
        }
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }
    /// A path nothing is served at. Its details are there but empty, as
    /// kube-apiserver's: clients tell it from a missing object by that
    /// (`kubectl debug` on a server without ephemeral containers).
    pub fn not_found_path() -> Self {
        Self {
            details: Some(Box::default()),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }
    pub fn not_found(s: Subject, name: &str) -> Self {
        Self {
            details: Some(Box::new(s.details(name))),
            ..Self::new(
                404,
                "NotFound",
                format!("{} {name:?} not found", s.qualified()),
            )
        }
    }
    pub fn already_exists(s: Subject, name: &str) -> Self {
        Self {
            details: Some(Box::new(s.details(name))),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", s.qualified()),
            )
        }
    }
    pub fn conflict(s: Subject, name: &str, why: &str) -> Self {
        Self {
            details: Some(Box::new(s.details(name))),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: {why}",
                    s.qualified()
                ),
            )
        }
    }
    /// `errors.NewForbidden`: `namespaces "default" is forbidden: <why>`.
    pub fn forbidden(s: Subject, name: &str, why: &str) -> Self {
        Self {
            details: Some(Box::new(s.details(name))),
            ..Self::new(
                403,
                "Forbidden",
                format!("{} {name:?} is forbidden: {why}", s.qualified()),
            )
        }
    }
    pub fn stale(s: Subject, name: &str) -> Self {
        Self::conflict(
            s,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn invalid(s: Subject, name: &str, errors: &[FieldError]) -> Self {
        let list = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            format!(
                "[{}]",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let causes = errors
            .iter()
            .map(|e| StatusCause {
                reason: Some(e.reason().to_owned()),
                message: Some(e.body()),
                field: Some(e.field.clone()),
            })
            .collect();
        let details = StatusDetails {
            name: Some(name.to_owned()),
            group: (!s.group.is_empty()).then(|| s.group.to_owned()),
            kind: Some(s.kind.to_owned()),
            causes: Some(causes),
            ..Default::default()
        };
        Self {
            details: Some(Box::new(details)),
            ..Self::new(
                422,
                "Invalid",
                format!("{} {name:?} is invalid: {list}", s.qualified_kind()),
            )
        }
    }

    /// Maps a storage failure for `name` onto the API error a client expects.
    pub fn from_storage(s: Subject, name: &str, e: StorageError) -> Self {
        match e {
            StorageError::AlreadyExists { .. } => Self::already_exists(s, name),
            StorageError::NotFound { .. } => Self::not_found(s, name),
            StorageError::Conflict { .. } => Self::stale(s, name),
            StorageError::Compacted { requested, oldest } => {
                Self::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            StorageError::Backend(m) => Self::internal(m),
        }
    }

    pub fn to_status(&self) -> Status {
        Status {
            code: Some(self.code as i32),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            metadata: ListMeta::default(),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".to_owned()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.to_status()).expect("Status serializes");
        v["kind"] = "Status".into();
        v["apiVersion"] = "v1".into();
        v
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Compacted { requested, oldest } => {
                Self::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            other => Self::internal(other),
        }
    }
}

impl ApiError {
    /// The Status as kube-apiserver writes it: its Go field order (kind,
    /// apiVersion, metadata, status…) and, as Go's JSON encoder ends every
    /// value, a newline.
    pub fn body(&self) -> Vec<u8> {
        let mut body = crate::api::wire_order::to_vec(&self.to_json());
        body.push(b'\n');
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: Subject = Subject {
        group: "",
        plural: "pods",
        kind: "Pod",
    };

    #[test]
    fn messages_read_like_kube_apiserver() {
        assert_eq!(
            ApiError::not_found(PODS, "web").message,
            r#"pods "web" not found"#
        );
        assert_eq!(
            ApiError::already_exists(PODS, "web").message,
            r#"pods "web" already exists"#
        );
        let e = ApiError::invalid(
            PODS,
            "web",
            &[
                FieldError::required("spec.containers", ""),
                FieldError::invalid("metadata.name", "Web", "bad"),
            ],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            r#"Pod "web" is invalid: [spec.containers: Required value, metadata.name: Invalid value: "Web": bad]"#
        );
        let causes = e.details.unwrap().causes.unwrap();
        assert_eq!(causes[0].reason.as_deref(), Some("FieldValueRequired"));
        assert_eq!(causes[1].field.as_deref(), Some("metadata.name"));
    }

    #[test]
    fn status_bodies_are_written_as_kube_apiserver_writes_them() {
        let body = ApiError::already_exists(PODS, "web").body();
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.starts_with(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"web\" already exists","reason":"AlreadyExists","details":{"name":"web","kind":"pods"},"code":409}"#),
            "{text}"
        );
        assert!(text.ends_with("}\n"), "{text:?}");
        let unserved = String::from_utf8(ApiError::not_found_path().body()).unwrap();
        assert!(
            unserved.ends_with("\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"),
            "{unserved}"
        );
    }
}
