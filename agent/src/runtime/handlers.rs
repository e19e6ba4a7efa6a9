//! Runtime handlers: the name a RuntimeClass's `handler` gives (CRI's
//! `runtime_handler`) picks the backend that runs a pod, as containerd maps
//! handler names to runtimes in its config. `kubelab` is the built-in
//! runtime, `runc` the backend that creates containers with runc; a pod
//! without a RuntimeClass runs under the node's default handler
//! (`--default-runtime-handler`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::runtime::service::RuntimeService;

/// The built-in runtime's handler name.
pub const BUILTIN: &str = "kubelab";
/// The runc backend's handler name.
pub const RUNC: &str = "runc";

/// What the node offers: its default handler and where runc is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// `--default-runtime-handler`.
    pub default: String,
    /// `--runc-binary`: the runc handler's binary.
    pub runc_binary: PathBuf,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            default: BUILTIN.into(),
            runc_binary: PathBuf::from("runc"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The pod's RuntimeClass could not be read (not found: the kubelet's
    /// `runtimeclasses.node.k8s.io "x" not found`).
    #[error("{0}")]
    Lookup(String),
    /// A handler this node has no runtime for, in containerd's words.
    #[error("no runtime for {0:?} is configured")]
    Unknown(String),
}

/// Handler name → backend.
pub struct RuntimeHandlers {
    runtimes: Vec<(String, Arc<dyn RuntimeService>)>,
    default: String,
}

impl RuntimeHandlers {
    /// `default` must be one of `runtimes`.
    pub fn new(
        default: &str,
        runtimes: Vec<(String, Arc<dyn RuntimeService>)>,
    ) -> Result<Self, HandlerError> {
        if !runtimes.iter().any(|(name, _)| name == default) {
            return Err(HandlerError::Unknown(default.into()));
        }
        Ok(RuntimeHandlers {
            runtimes,
            default: default.into(),
        })
    }

    /// One backend for every pod (a hollow node's).
    pub fn single(runtime: Arc<dyn RuntimeService>) -> Self {
        RuntimeHandlers {
            runtimes: vec![(String::new(), runtime)],
            default: String::new(),
        }
    }

    pub fn default_runtime(&self) -> Arc<dyn RuntimeService> {
        self.get("").expect("the default handler has a runtime")
    }

    /// The backend of `handler` (`""`: the default one).
    pub fn get(&self, handler: &str) -> Result<Arc<dyn RuntimeService>, HandlerError> {
        let name = if handler.is_empty() {
            self.default.as_str()
        } else {
            handler
        };
        if self.runtimes.len() == 1 && self.default.is_empty() {
            return Ok(self.runtimes[0].1.clone());
        }
        self.runtimes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| HandlerError::Unknown(name.into()))
    }
}

/// The kubelet's `LookupRuntimeHandler`: no RuntimeClass (or an empty
/// name) is the default handler `""`; otherwise the class's `handler`, from
/// `lookup` (`None`: a node without an apiserver, which cannot look classes
/// up and runs every pod under its default handler, as a kubelet without a
/// client does).
pub fn runtime_handler(
    runtime_class_name: Option<&str>,
    lookup: Option<&dyn Fn(&str) -> Result<String, String>>,
) -> Result<String, HandlerError> {
    match (runtime_class_name.filter(|n| !n.is_empty()), lookup) {
        (Some(name), Some(lookup)) => lookup(name).map_err(HandlerError::Lookup),
        _ => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    #[test]
    fn a_pod_without_a_runtime_class_gets_the_default_handler() {
        let found = |name: &str| -> Result<String, String> {
            match name {
                "sandboxed" => Ok(RUNC.into()),
                other => Err(format!("runtimeclasses.node.k8s.io {other:?} not found")),
            }
        };
        assert_eq!(runtime_handler(None, Some(&found)), Ok(String::new()));
        assert_eq!(runtime_handler(Some(""), Some(&found)), Ok(String::new()));
        assert_eq!(
            runtime_handler(Some("sandboxed"), Some(&found)),
            Ok("runc".into())
        );
        assert_eq!(
            runtime_handler(Some("gone"), Some(&found))
                .unwrap_err()
                .to_string(),
            "runtimeclasses.node.k8s.io \"gone\" not found"
        );
        // Standalone: classes cannot be looked up.
        assert_eq!(runtime_handler(Some("sandboxed"), None), Ok(String::new()));
    }

    #[test]
    fn handlers_map_to_backends_and_unknown_ones_are_refused() {
        let builtin: Arc<dyn RuntimeService> = Arc::new(FakeRuntime::default());
        let runc: Arc<dyn RuntimeService> = Arc::new(FakeRuntime::default());
        let handlers = RuntimeHandlers::new(
            RUNC,
            vec![
                (BUILTIN.into(), builtin.clone()),
                (RUNC.into(), runc.clone()),
            ],
        )
        .unwrap();
        assert!(Arc::ptr_eq(&handlers.get("").unwrap(), &runc));
        assert!(Arc::ptr_eq(&handlers.get(BUILTIN).unwrap(), &builtin));
        assert_eq!(
            handlers.get("kata").err().unwrap().to_string(),
            "no runtime for \"kata\" is configured"
        );
        assert!(RuntimeHandlers::new("kata", vec![(BUILTIN.into(), builtin)]).is_err());
    }
}
