//! Checks of a pod's paths and resource amounts, worded as kube-apiserver's
//! `pkg/apis/core/validation` words them. The apiserver refuses what they
//! find; the node checks again before it acts (static pods never pass the
//! apiserver), with the same functions.
//!
//! Each check returns the details of what is wrong (empty: valid); the
//! caller names the field.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{self, QuantityError};

pub const NOT_RELATIVE: &str = "must be a relative path";
pub const BACKSTEPS: &str = "must not contain '..'";
pub const STARTS_WITH_BACKSTEPS: &str = "must not start with '..'";
pub const NEGATIVE: &str = "must be greater than or equal to 0";

/// `validatePathNoBacksteps`: no `..` element.
pub fn path_no_backsteps(path: &str) -> Vec<&'static str> {
    if path.split('/').any(|part| part == "..") {
        vec![BACKSTEPS]
    } else {
        Vec::new()
    }
}

/// `validateLocalDescendingPath`: a path that stays inside the directory it
/// is relative to (a volumeMount's `subPath`, a `subPathExpr` and what it
/// expands to).
pub fn local_descending_path(path: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if path.starts_with('/') {
        out.push(NOT_RELATIVE);
    }
    out.extend(path_no_backsteps(path));
    out
}

/// `validateLocalNonReservedPath`: a file a volume projects (`items[].path`
/// of configMap, secret, downwardAPI and projected volumes), which may
/// not take the names the atomic writer keeps for itself (`..data`, ...).
pub fn local_non_reserved_path(path: &str) -> Vec<&'static str> {
    let mut out = local_descending_path(path);
    if path.starts_with("..") {
        out.push(STARTS_WITH_BACKSTEPS);
    }
    out
}

/// A resource amount: a quantity (`ParseQuantity`), not negative
/// (`ValidateNonnegativeQuantity`), and one the node can hold (2^63-1
/// units at most; apimachinery's accessors saturate past it).
pub fn resource_amount(q: &Quantity) -> Result<(), String> {
    match quantity::nano_value(q) {
        Ok(n) if n < 0 => Err(NEGATIVE.into()),
        Ok(_) => Ok(()),
        Err(QuantityError::Negative { .. }) => Err(NEGATIVE.into()),
        Err(QuantityError::OutOfRange { .. }) => {
            Err("must be less than or equal to 9223372036854775807 units".into())
        }
        Err(QuantityError::Invalid { .. }) => Err(QUANTITY_SYNTAX.into()),
    }
}

/// `ParseQuantity`'s complaint, as the decoder reports it.
pub const QUANTITY_SYNTAX: &str =
    "must match the regex '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A container's request above its limit for the same resource, as
/// `validateContainerResourceRequirements` words it; `None` when the
/// request fits (or either amount is unreadable: reported on its own).
pub fn request_over_limit(name: &str, request: &Quantity, limit: &Quantity) -> Option<String> {
    let (Ok(r), Ok(l)) = (quantity::nano_value(request), quantity::nano_value(limit)) else {
        return None;
    };
    (r > l).then(|| format!("must be less than or equal to {name} limit of {}", limit.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn paths_stay_inside() {
        assert!(local_descending_path("a/b").is_empty());
        assert!(local_descending_path("a..b/c").is_empty());
        assert_eq!(local_descending_path("../.."), [BACKSTEPS]);
        assert_eq!(
            local_descending_path("/etc/../x"),
            [NOT_RELATIVE, BACKSTEPS]
        );
        assert_eq!(local_non_reserved_path("..data"), [STARTS_WITH_BACKSTEPS]);
        assert_eq!(
            local_non_reserved_path("../a"),
            [BACKSTEPS, STARTS_WITH_BACKSTEPS]
        );
        assert_eq!(path_no_backsteps("/tmp/../x"), [BACKSTEPS]);
        assert!(path_no_backsteps("/tmp/x..y").is_empty());
    }

    #[test]
    fn amounts_are_non_negative_and_bounded() {
        assert_eq!(resource_amount(&q("500m")), Ok(()));
        assert_eq!(resource_amount(&q("0")), Ok(()));
        assert_eq!(resource_amount(&q("-1")), Err(NEGATIVE.into()));
        assert_eq!(resource_amount(&q("-5Mi")), Err(NEGATIVE.into()));
        assert!(
            resource_amount(&q("1e400"))
                .unwrap_err()
                .contains("9223372036854775807")
        );
        assert_eq!(resource_amount(&q("lots")), Err(QUANTITY_SYNTAX.into()));
        assert_eq!(
            request_over_limit("cpu", &q("2"), &q("1000m")).as_deref(),
            Some("must be less than or equal to cpu limit of 1000m")
        );
        assert_eq!(request_over_limit("cpu", &q("1"), &q("1000m")), None);
    }
}
