//! RuntimeClass (`node.k8s.io/v1`): a name for a container runtime
//! configuration; a node maps its `handler` to one of its runtimes, and the
//! RuntimeClass admission plugin adds its overhead and scheduling to pods
//! that name it. Validation and columns as kube-apiserver's.

use k8s_openapi::api::node::v1::RuntimeClass;
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::FieldError;

impl KindSpec for RuntimeClass {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        // `handler` is a DNS label, and fixed once set.
        let mut errs = super::validation::dns1123_label("handler", &self.handler);
        if let Some(old) = old
            && old.handler != self.handler
        {
            errs.push(FieldError::invalid(
                "handler",
                &self.handler,
                "field is immutable",
            ));
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Handler", "string", 0), age_col()]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            self.handler.clone().into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn class(handler: &str) -> RuntimeClass {
        RuntimeClass {
            metadata: ObjectMeta {
                name: Some("sandboxed".into()),
                ..Default::default()
            },
            handler: handler.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_handler_is_a_dns_label_that_never_changes() {
        assert!(class("runc").validate(None).is_empty());
        let errs = class("Not_A_Label").validate(None);
        assert_eq!(errs[0].field, "handler");
        let errs = class("kata").validate(Some(&class("runc")));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "handler");
    }
}
