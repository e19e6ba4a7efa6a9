//! Runtime handlers: the name a RuntimeClass's `handler` gives (CRI's
//! `runtime_handler`) picks the backend that runs a pod, as containerd maps
//! handler names to runtimes in its config. `kubelab` is the built-in
//! runtime, `runc` the backend that creates containers with runc; a pod
//! without a RuntimeClass runs under the node's default handler
//! (`--default-runtime-handler`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::runtime::runc::RuncFeatures;
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

/// CRI's `RuntimeHandlerFeatures`: what a handler can do for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeHandlerFeatures {
    pub recursive_read_only_mounts: bool,
    pub user_namespaces: bool,
}

/// CRI's `RuntimeHandler`, as `RuntimeStatus` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHandler {
    pub name: String,
    pub features: RuntimeHandlerFeatures,
}

/// The handlers CRI's `RuntimeStatus` lists (the kubelet copies them into
/// the Node's `status.runtimeHandlers`): every configured handler with its
/// features, and the default one once more under the name `""` right
/// after it (as containerd lists it). `runc` is there only when its binary resolves
/// (`runc`: what `runc features` said, `None`: not found). The built-in
/// runtime does recursive read-only mounts (`mount_setattr`) and user
/// namespaces (idmapped mounts) itself.
pub fn status_handlers(config: &HandlerConfig, runc: Option<RuncFeatures>) -> Vec<RuntimeHandler> {
    let mut handlers = Vec::new();
    let mut add = |name: &str, features: RuntimeHandlerFeatures| {
        // The default right after its own entry, as containerd adds it.
        let names = if name == config.default {
            vec![name, ""]
        } else {
            vec![name]
        };
        for name in names {
            handlers.push(RuntimeHandler {
                name: name.to_string(),
                features,
            });
        }
    };
    add(
        BUILTIN,
        RuntimeHandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: true,
        },
    );
    if let Some(f) = runc {
        add(
            RUNC,
            RuntimeHandlerFeatures {
                recursive_read_only_mounts: f.recursive_read_only_mounts,
                user_namespaces: f.user_namespaces,
            },
        );
    }
    handlers
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
    fn the_node_reports_its_handlers_and_the_default_one_unnamed() {
        let show = |handlers: Vec<RuntimeHandler>| -> Vec<String> {
            handlers
                .into_iter()
                .map(|h| {
                    format!(
                        "{:?} rro={} userns={}",
                        h.name, h.features.recursive_read_only_mounts, h.features.user_namespaces
                    )
                })
                .collect()
        };
        let runc11 = RuncFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: false,
        };
        assert_eq!(
            show(status_handlers(&HandlerConfig::default(), Some(runc11))),
            [
                "\"kubelab\" rro=true userns=true",
                "\"\" rro=true userns=true",
                "\"runc\" rro=true userns=false"
            ]
        );
        let runc_default = HandlerConfig {
            default: RUNC.into(),
            ..Default::default()
        };
        assert_eq!(
            show(status_handlers(&runc_default, Some(runc11)))[2],
            "\"\" rro=true userns=false"
        );
        // runc not found: not a handler of this node.
        assert_eq!(
            show(status_handlers(&HandlerConfig::default(), None)),
            [
                "\"kubelab\" rro=true userns=true",
                "\"\" rro=true userns=true"
            ]
        );
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
