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

/// A request body as JSON, YAML or protobuf (by its Content-Type; JSON or
/// YAML when it has none), decoded with [`decode_with`].
pub async fn decode(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    decode_with(body, move |b| parse(&ct, b)).await
}

/// Request bodies are JSON; YAML is accepted too (a `curl --data-binary
/// @pod.yaml`), and the Content-Type may be missing altogether.
fn parse(ct: &str, body: &[u8]) -> ApiResult<Value> {
    if ct.contains("protobuf") || body.starts_with(b"k8s\0") {
        return protobuf::decode(body).map_err(|e| match e {
            protobuf::ProtobufError::UnsupportedKind(_) => unsupported_media_type(ct),
            other => ApiError::bad_request(other.to_string()),
        });
    }
    if ct.contains("cbor") {
        return Err(unsupported_media_type(ct));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) if ct.contains("json") || is_too_deep(&e) => Err(ApiError::bad_request(format!(
            "error decoding JSON body: {e}"
        ))),
        Err(_) => {
            yaml(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
        }
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
            let e = parse("application/yaml", body.as_bytes()).unwrap_err();
            assert_eq!(e.code, 400, "{}", e.message);
            assert!(
                e.message.starts_with("error decoding body: "),
                "{}",
                e.message
            );
        }
        let json = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        for ct in ["application/json", "application/yaml", ""] {
            let e = parse(ct, json.as_bytes()).unwrap_err();
            assert!(
                e.message.contains("recursion limit exceeded"),
                "{ct}: {}",
                e.message
            );
        }
    }
}
