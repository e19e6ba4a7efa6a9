//! Request bodies: read up to kube-apiserver's size limit, then decoded
//! with limits on how deeply they nest. Large bodies are decoded on a small
//! pool of blocking threads, one per core, so hostile bodies wait for each
//! other there and are refused quickly, while every other request keeps
//! the async workers.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{ApiResult, protobuf};
use crate::status::ApiError;

/// kube-apiserver's limit on a request body (its `MaxRequestBodyBytes`):
/// a larger one is refused before it is decoded.
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Bodies up to this size are decoded where the request runs: with the
/// nesting limits below that takes well under a millisecond, less than a
/// hop to another thread would cost.
const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// How deeply a YAML body may nest (mappings and sequences), as serde_json
/// limits JSON to 128 levels. Kubernetes objects nest a few dozen at most.
const MAX_YAML_DEPTH: usize = 128;

/// Larger bodies are decoded one per core at a time.
static DECODE_SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// The request body, at most [`MAX_REQUEST_BODY_BYTES`]; a larger one (by its
/// Content-Length, or once that much has arrived) is kube-apiserver's 413.
pub async fn read_limited(headers: &HeaderMap, body: axum::body::Body) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES)
        .await
        .map_err(|e| {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
                too_large()
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            }
        })
}

/// Runs `decode` on `body`: inline when it is small, else on the decode
/// pool, off the async workers.
pub async fn decode_with<F>(body: &Bytes, decode: F) -> ApiResult<Value>
where
    F: FnOnce(&[u8]) -> ApiResult<Value> + Send + 'static,
{
    if body.len() <= INLINE_DECODE_BYTES {
        return decode(body);
    }
    let _slot = DECODE_SLOTS
        .acquire()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let body = body.clone();
    tokio::task::spawn_blocking(move || decode(&body))
        .await
        .map_err(|e| ApiError::internal(format!("decoding the request body: {e}")))?
}

/// A request body as JSON, YAML or protobuf (by its Content-Type; JSON
/// when it has none), decoded with [`decode_with`].
pub async fn decode(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = content_type(headers);
    decode_with(body, move |b| {
        parse(&ct, b).map_err(DecodeError::into_api_error)
    })
    .await
}

/// The object of a create or update of `kind`: as [`decode`], but a body
/// that is not JSON or YAML at all gets kube-apiserver's message for an
/// object it cannot recognise, naming the kind it expected.
pub async fn decode_object(
    headers: &HeaderMap,
    body: &Bytes,
    kind: &'static str,
) -> ApiResult<Value> {
    let ct = content_type(headers);
    decode_with(body, move |b| {
        parse(&ct, b).map_err(|e| e.into_unrecognized(kind, b))
    })
    .await
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the request body is empty")]
    Empty,
    #[error("error decoding JSON body: {0}")]
    Json(serde_json::Error),
    #[error("error decoding body: {0}")]
    Yaml(String),
    /// Refused before any decoding (protobuf of a kind not known, CBOR).
    #[error("{}", .0.message)]
    Refused(ApiError),
}

impl DecodeError {
    fn into_api_error(self) -> ApiError {
        match self {
            DecodeError::Refused(e) => e,
            other => ApiError::bad_request(other.to_string()),
        }
    }

    /// kube-apiserver's 400 for a body its serializer cannot read as an
    /// object: the decoder's error, then the start of the body (as text
    /// when it looks like JSON, else in hex).
    fn into_unrecognized(self, kind: &str, body: &[u8]) -> ApiError {
        let cause = match self {
            DecodeError::Refused(e) => return e,
            // Go's encoding/json on empty input.
            DecodeError::Empty => {
                "couldn't get version/kind; json parse error: unexpected end of JSON input"
                    .to_owned()
            }
            DecodeError::Json(e) => format!("couldn't get version/kind; json parse error: {e}"),
            DecodeError::Yaml(e) => format!("error converting YAML to JSON: {e}"),
        };
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): {cause} ({})",
            summarize(body)
        ))
    }
}

/// The first bytes of a body for an error message, as kube-apiserver shows
/// them: JSON-looking bodies as text, others in hex, cut at 30 bytes.
fn summarize(body: &[u8]) -> String {
    const MAX: usize = 30;
    if body.is_empty() {
        return "<empty>".to_owned();
    }
    let head = &body[..body.len().min(MAX)];
    let more = if body.len() > MAX { " ..." } else { "" };
    if body[0] == b'{' {
        format!("{}{more}", String::from_utf8_lossy(head))
    } else {
        let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}{more}")
    }
}

/// Request bodies are JSON; YAML is accepted too (a `curl --data-binary
/// @pod.yaml`). A body without a Content-Type is JSON, kube-apiserver's
/// first media type (`kubectl create --raw` sends none).
fn parse(ct: &str, body: &[u8]) -> Result<Value, DecodeError> {
    if ct.contains("protobuf") || body.starts_with(b"k8s\0") {
        return protobuf::decode(body).map_err(|e| {
            DecodeError::Refused(match e {
                protobuf::ProtobufError::UnsupportedKind(_) => unsupported_media_type(ct),
                other => ApiError::bad_request(other.to_string()),
            })
        });
    }
    if ct.contains("cbor") {
        return Err(DecodeError::Refused(unsupported_media_type(ct)));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) if ct.is_empty() || ct.contains("json") || is_too_deep(&e) => {
            Err(DecodeError::Json(e))
        }
        Err(_) => yaml(body).map_err(DecodeError::Yaml),
    }
}

/// serde_json stops at 128 levels of nesting ("recursion limit exceeded"):
/// such a body is refused as it is, not tried again as YAML.
fn is_too_deep(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

/// YAML, once it is known to stay within [`MAX_YAML_DEPTH`] and
/// serde-saphyr's other budgets (node and alias counts, flow nesting), which
/// it checks on the parser's event stream without building anything:
/// serde_yaml's scanner takes time quadratic in the depth of flow
/// collections, seconds for a few hundred kilobytes of `[[[[`.
pub fn yaml(body: &[u8]) -> Result<Value, String> {
    use serde_saphyr::budget::{BudgetBreach, EnforcingPolicy, check_yaml_budget};
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_YAML_DEPTH;
    let report =
        check_yaml_budget(text, budget, EnforcingPolicy::AllContent).map_err(|e| e.to_string())?;
    match report.breached {
        None => {}
        Some(BudgetBreach::Depth { .. }) => {
            return Err(format!("exceeded max depth of {MAX_YAML_DEPTH}"));
        }
        Some(limit) => return Err(format!("exceeded a limit: {limit:?}")),
    }
    serde_yaml::from_slice(body).map_err(|e| e.to_string())
}

/// 415 for bodies other than JSON/YAML, which clients answer by retrying in JSON.
fn unsupported_media_type(ct: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct:?})"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {}{}\n",
            open.repeat(depth),
            close.repeat(depth)
        )
    }

    #[test]
    fn yaml_within_the_limits_decodes_as_before() {
        let v = yaml(b"a: [1, {b: yes}]\nc: \"on\"\n").unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, {"b": "yes"}], "c": "on"}));
    }

    #[test]
    fn deeply_nested_bodies_are_refused() {
        for body in [nested("[", "]", 100_000), nested("{a: ", "}", 50_000)] {
            let e = parse("application/yaml", body.as_bytes())
                .unwrap_err()
                .into_api_error();
            assert_eq!(e.code, 400, "{}", e.message);
            assert!(
                e.message.starts_with("error decoding body: "),
                "{}",
                e.message
            );
        }
        let json = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        for ct in ["application/json", "application/yaml", ""] {
            let e = parse(ct, json.as_bytes()).unwrap_err().into_api_error();
            assert!(
                e.message.contains("recursion limit exceeded"),
                "{ct}: {}",
                e.message
            );
        }
    }

    #[test]
    fn a_body_that_is_no_object_names_the_kind_expected() {
        // YAML sent as JSON, as `kubectl create --raw` does.
        let body = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n";
        let e = parse("application/json", body)
            .unwrap_err()
            .into_unrecognized("Namespace", body);
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert!(
            e.message.starts_with(
                "the object provided is unrecognized (must be of type Namespace): \
                 couldn't get version/kind; json parse error: "
            ),
            "{}",
            e.message
        );
        assert!(
            e.message
                .ends_with(" (61706956657273696f6e3a2076310a6b696e643a20506f640a6d65746164 ...)"),
            "{}",
            e.message
        );
        let unlabelled = parse("", body).unwrap_err();
        assert!(matches!(unlabelled, DecodeError::Json(_)), "{unlabelled}");
        let e = parse("application/json", b"")
            .unwrap_err()
            .into_unrecognized("Pod", b"");
        assert_eq!(
            e.message,
            "the object provided is unrecognized (must be of type Pod): couldn't get \
             version/kind; json parse error: unexpected end of JSON input (<empty>)"
        );
        assert_eq!(summarize(br#"{"kind":"Pod"}"#), r#"{"kind":"Pod"}"#);
    }
}
