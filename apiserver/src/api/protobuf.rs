//! Decoding the Kubernetes protobuf encoding for request bodies.
//!
//! kubectl's typed clients (`kubectl create namespace|configmap|secret|
//! serviceaccount|service|deployment ...`) send `application/vnd.kubernetes.protobuf`
//! and do not retry in JSON on a 415. Responses are always JSON (clients
//! accept it), so only decoding is needed, and only for the kinds those
//! generators create. The envelope is the magic `k8s\0` followed by a
//! `runtime.Unknown {typeMeta, raw}`; `raw` is the object. Field numbers
//! are those of `k8s.io/api/core/v1/generated.proto` and apimachinery's.

use base64::Engine;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    /// Base64 in JSON, as `[]byte` fields are.
    Bytes,
    Int,
    /// A pointer (`*int32`) field: zero is a value, not absence.
    OptInt,
    Bool,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    /// `metav1.Time {seconds, nanos}` → RFC 3339.
    Time,
    /// `intstr.IntOrString {type, intVal, strVal}` → number or string.
    IntOrString,
    /// `resource.Quantity {string}` → its string.
    Quantity,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn r(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(5, "apiVersion", Ty::Str),
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    f(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    r(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    r(14, "finalizers", Ty::Str),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[r(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    f(4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    f(5, "immutable", Ty::Bool),
];

const OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    r(3, "imagePullSecrets", Ty::Msg(&[f(1, "name", Ty::Str)])),
    f(4, "automountServiceAccountToken", Ty::Bool),
];

const SERVICE_PORT: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "protocol", Ty::Str),
    f(3, "port", Ty::Int),
    f(4, "targetPort", Ty::IntOrString),
    f(5, "nodePort", Ty::Int),
    f(6, "appProtocol", Ty::Str),
];

const SERVICE_SPEC: &[Field] = &[
    r(1, "ports", Ty::Msg(SERVICE_PORT)),
    f(2, "selector", Ty::MapStr),
    f(3, "clusterIP", Ty::Str),
    f(4, "type", Ty::Str),
    r(5, "externalIPs", Ty::Str),
    f(7, "sessionAffinity", Ty::Str),
    f(8, "loadBalancerIP", Ty::Str),
    r(9, "loadBalancerSourceRanges", Ty::Str),
    f(10, "externalName", Ty::Str),
    f(11, "externalTrafficPolicy", Ty::Str),
    f(12, "healthCheckNodePort", Ty::Int),
    f(13, "publishNotReadyAddresses", Ty::Bool),
    f(
        14,
        "sessionAffinityConfig",
        Ty::Msg(&[f(
            1,
            "clientIP",
            Ty::Msg(&[f(1, "timeoutSeconds", Ty::Int)]),
        )]),
    ),
    f(17, "ipFamilyPolicy", Ty::Str),
    r(18, "clusterIPs", Ty::Str),
    r(19, "ipFamilies", Ty::Str),
    f(20, "allocateLoadBalancerNodePorts", Ty::Bool),
    f(21, "loadBalancerClass", Ty::Str),
    f(22, "internalTrafficPolicy", Ty::Str),
    f(23, "trafficDistribution", Ty::Str),
];

const SERVICE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SERVICE_SPEC)),
];

const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Ty::MapStr),
    r(
        2,
        "matchExpressions",
        Ty::Msg(&[
            f(1, "key", Ty::Str),
            f(2, "operator", Ty::Str),
            r(3, "values", Ty::Str),
        ]),
    ),
];

/// What `kubectl create deployment` puts in a container: name, image,
/// command, ports, and an empty `resources`.
const CONTAINER: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "image", Ty::Str),
    r(3, "command", Ty::Str),
    r(4, "args", Ty::Str),
    f(5, "workingDir", Ty::Str),
    r(
        6,
        "ports",
        Ty::Msg(&[
            f(1, "name", Ty::Str),
            f(2, "hostPort", Ty::Int),
            f(3, "containerPort", Ty::Int),
            f(4, "protocol", Ty::Str),
        ]),
    ),
    r(
        7,
        "env",
        Ty::Msg(&[f(1, "name", Ty::Str), f(2, "value", Ty::Str)]),
    ),
    f(8, "resources", Ty::Msg(&[])),
    f(13, "terminationMessagePath", Ty::Str),
    f(14, "imagePullPolicy", Ty::Str),
    f(20, "terminationMessagePolicy", Ty::Str),
];

const POD_TEMPLATE_SPEC: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            r(2, "containers", Ty::Msg(CONTAINER)),
            f(3, "restartPolicy", Ty::Str),
            f(4, "terminationGracePeriodSeconds", Ty::OptInt),
            f(6, "dnsPolicy", Ty::Str),
            f(7, "nodeSelector", Ty::MapStr),
            f(8, "serviceAccountName", Ty::Str),
            f(19, "schedulerName", Ty::Str),
            r(20, "initContainers", Ty::Msg(CONTAINER)),
        ]),
    ),
];

const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "replicas", Ty::OptInt),
            f(2, "selector", Ty::Msg(LABEL_SELECTOR)),
            f(3, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
            f(
                4,
                "strategy",
                Ty::Msg(&[
                    f(1, "type", Ty::Str),
                    f(
                        2,
                        "rollingUpdate",
                        Ty::Msg(&[
                            f(1, "maxUnavailable", Ty::IntOrString),
                            f(2, "maxSurge", Ty::IntOrString),
                        ]),
                    ),
                ]),
            ),
            f(5, "minReadySeconds", Ty::Int),
            f(6, "revisionHistoryLimit", Ty::OptInt),
            f(7, "paused", Ty::Bool),
            f(9, "progressDeadlineSeconds", Ty::OptInt),
        ]),
    ),
];

/// What `kubectl create poddisruptionbudget` sends (`policy/v1`).
const POD_DISRUPTION_BUDGET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "minAvailable", Ty::IntOrString),
            f(2, "selector", Ty::Msg(LABEL_SELECTOR)),
            f(3, "maxUnavailable", Ty::IntOrString),
            f(4, "unhealthyPodEvictionPolicy", Ty::Str),
        ]),
    ),
];

const METRIC_TARGET: &[Field] = &[
    f(1, "type", Ty::Str),
    f(2, "value", Ty::Quantity),
    f(3, "averageValue", Ty::Quantity),
    f(4, "averageUtilization", Ty::OptInt),
];

const SCALING_RULES: &[Field] = &[
    f(1, "selectPolicy", Ty::Str),
    r(
        2,
        "policies",
        Ty::Msg(&[
            f(1, "type", Ty::Str),
            f(2, "value", Ty::Int),
            f(3, "periodSeconds", Ty::Int),
        ]),
    ),
    f(3, "stabilizationWindowSeconds", Ty::OptInt),
];

/// What `kubectl autoscale` sends (`autoscaling/v2`): resource metrics
/// and behavior.
const HORIZONTAL_POD_AUTOSCALER: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(
                1,
                "scaleTargetRef",
                Ty::Msg(&[
                    f(1, "kind", Ty::Str),
                    f(2, "name", Ty::Str),
                    f(3, "apiVersion", Ty::Str),
                ]),
            ),
            f(2, "minReplicas", Ty::OptInt),
            f(3, "maxReplicas", Ty::Int),
            r(
                4,
                "metrics",
                Ty::Msg(&[
                    f(1, "type", Ty::Str),
                    f(
                        4,
                        "resource",
                        Ty::Msg(&[
                            f(1, "name", Ty::Str),
                            f(2, "target", Ty::Msg(METRIC_TARGET)),
                        ]),
                    ),
                    f(
                        7,
                        "containerResource",
                        Ty::Msg(&[
                            f(1, "name", Ty::Str),
                            f(2, "target", Ty::Msg(METRIC_TARGET)),
                            f(3, "container", Ty::Str),
                        ]),
                    ),
                ]),
            ),
            f(
                5,
                "behavior",
                Ty::Msg(&[
                    f(1, "scaleUp", Ty::Msg(SCALING_RULES)),
                    f(2, "scaleDown", Ty::Msg(SCALING_RULES)),
                ]),
            ),
        ]),
    ),
];

/// `batch/v1` JobSpec, as `kubectl create job` and `create job --from`
/// send it.
const JOB_SPEC: &[Field] = &[
    f(1, "parallelism", Ty::OptInt),
    f(2, "completions", Ty::OptInt),
    f(3, "activeDeadlineSeconds", Ty::OptInt),
    f(4, "selector", Ty::Msg(LABEL_SELECTOR)),
    f(5, "manualSelector", Ty::Bool),
    f(6, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
    f(7, "backoffLimit", Ty::OptInt),
    f(8, "ttlSecondsAfterFinished", Ty::OptInt),
    f(9, "completionMode", Ty::Str),
    f(10, "suspend", Ty::Bool),
    f(14, "podReplacementPolicy", Ty::Str),
];

const JOB: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(JOB_SPEC)),
];

const CRON_JOB: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "schedule", Ty::Str),
            f(2, "startingDeadlineSeconds", Ty::OptInt),
            f(3, "concurrencyPolicy", Ty::Str),
            f(4, "suspend", Ty::Bool),
            f(
                5,
                "jobTemplate",
                Ty::Msg(&[
                    f(1, "metadata", Ty::Msg(OBJECT_META)),
                    f(2, "spec", Ty::Msg(JOB_SPEC)),
                ]),
            ),
            f(6, "successfulJobsHistoryLimit", Ty::OptInt),
            f(7, "failedJobsHistoryLimit", Ty::OptInt),
            f(8, "timeZone", Ty::Str),
        ]),
    ),
];

const BOUND_OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "apiVersion", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
];

const TOKEN_REQUEST_SPEC: &[Field] = &[
    r(1, "audiences", Ty::Str),
    f(3, "boundObjectRef", Ty::Msg(BOUND_OBJECT_REFERENCE)),
    f(4, "expirationSeconds", Ty::OptInt),
];

/// `kubectl create token`'s body (authentication.k8s.io/v1).
const TOKEN_REQUEST: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(TOKEN_REQUEST_SPEC)),
];

// rbac.authorization.k8s.io/v1 (`kubectl create role|clusterrole|rolebinding|clusterrolebinding`).
const POLICY_RULE: &[Field] = &[
    r(1, "verbs", Ty::Str),
    r(2, "apiGroups", Ty::Str),
    r(3, "resources", Ty::Str),
    r(4, "resourceNames", Ty::Str),
    r(5, "nonResourceURLs", Ty::Str),
];

const ROLE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "rules", Ty::Msg(POLICY_RULE)),
];

const CLUSTER_ROLE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "rules", Ty::Msg(POLICY_RULE)),
    f(
        3,
        "aggregationRule",
        Ty::Msg(&[r(1, "clusterRoleSelectors", Ty::Msg(LABEL_SELECTOR))]),
    ),
];

const ROLE_BINDING: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(
        2,
        "subjects",
        Ty::Msg(&[
            f(1, "kind", Ty::Str),
            f(2, "apiGroup", Ty::Str),
            f(3, "name", Ty::Str),
            f(4, "namespace", Ty::Str),
        ]),
    ),
    f(
        3,
        "roleRef",
        Ty::Msg(&[
            f(1, "apiGroup", Ty::Str),
            f(2, "kind", Ty::Str),
            f(3, "name", Ty::Str),
        ]),
    ),
];

// authorization.k8s.io/v1 and authentication.k8s.io/v1 reviews
// (`kubectl auth can-i`, `kubectl auth whoami`).
const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
];

const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)];

const SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
            f(3, "user", Ty::Str),
            r(4, "groups", Ty::Str),
            f(6, "uid", Ty::Str),
        ]),
    ),
];

const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
        ]),
    ),
];

const SELF_SUBJECT_RULES_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[f(1, "namespace", Ty::Str)])),
];

const TOKEN_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[f(1, "token", Ty::Str), r(2, "audiences", Ty::Str)]),
    ),
];

const SELF_SUBJECT_REVIEW: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META))];

const TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf message (missing the k8s\\0 prefix)")]
    NoMagic,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("decoding {0} from protobuf is not supported; send JSON")]
    UnsupportedKind(String),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(ProtobufError::Malformed)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtobufError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if self.buf.len() < n {
            return Err(ProtobufError::Malformed);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field: number, and its value (varint or bytes).
    fn field(&mut self) -> Result<(u64, Wire<'a>), ProtobufError> {
        let tag = self.varint()?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Skip
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Malformed)?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Skip
            }
            _ => return Err(ProtobufError::Malformed),
        };
        Ok((tag >> 3, wire))
    }
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width value; no field here uses one.
    Skip,
}

fn decode_message(buf: &[u8], schema: &[Field]) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    let mut rd = Reader { buf };
    while !rd.buf.is_empty() {
        let (num, wire) = rd.field()?;
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        let value = match (field.ty, wire) {
            (Ty::Str, Wire::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
            (Ty::Bytes, Wire::Bytes(b)) => {
                base64::engine::general_purpose::STANDARD.encode(b).into()
            }
            // int32 fields carry negative values sign-extended to 64 bits.
            (Ty::Int | Ty::OptInt, Wire::Varint(v)) => Value::from(v as i64),
            (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
            (Ty::Msg(s), Wire::Bytes(b)) => decode_message(b, s)?,
            (Ty::Time, Wire::Bytes(b)) => {
                let t = decode_message(b, &[f(1, "seconds", Ty::Int)])?;
                let secs = t.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                if secs == 0 {
                    // Go marshals a zero time as an empty message.
                    continue;
                }
                jiff::Timestamp::from_second(secs)
                    .map_err(|_| ProtobufError::Malformed)?
                    .to_string()
                    .into()
            }
            (Ty::IntOrString, Wire::Bytes(b)) => {
                let v = decode_message(
                    b,
                    &[
                        f(1, "type", Ty::Int),
                        f(2, "intVal", Ty::Int),
                        f(3, "strVal", Ty::Str),
                    ],
                )?;
                match v.get("type").and_then(Value::as_i64).unwrap_or(0) {
                    1 => v.get("strVal").cloned().unwrap_or_else(|| "".into()),
                    _ => v.get("intVal").cloned().unwrap_or_else(|| 0.into()),
                }
            }
            (Ty::Quantity, Wire::Bytes(b)) => decode_message(b, &[f(1, "string", Ty::Str)])?
                .get("string")
                .cloned()
                .unwrap_or_else(|| "".into()),
            (Ty::MapStr | Ty::MapBytes, Wire::Bytes(b)) => {
                let value_ty = if matches!(field.ty, Ty::MapStr) {
                    Ty::Str
                } else {
                    Ty::Bytes
                };
                let entry = decode_message(b, &[f(1, "k", Ty::Str), f(2, "v", value_ty)])?;
                let key = entry
                    .get("k")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let val = entry.get("v").cloned().unwrap_or_else(|| "".into());
                let map = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = map.as_object_mut() {
                    m.insert(key, val);
                }
                continue;
            }
            _ => return Err(ProtobufError::Malformed),
        };
        // Go's non-pointer fields go on the wire even when empty; JSON
        // (`omitempty`) leaves them out, and defaulting expects that.
        let zero_time = field.name.ends_with("Timestamp") && value == "0001-01-01T00:00:00Z";
        let keep_zero = matches!(field.ty, Ty::OptInt);
        if !field.repeated && (value == "" || (value == 0 && !keep_zero) || zero_time) {
            continue;
        }
        if field.repeated {
            let list = out
                .entry(field.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(l) = list.as_array_mut() {
                l.push(value);
            }
        } else {
            out.insert(field.name.to_owned(), value);
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `k8s\0`-prefixed protobuf body into the JSON form of the object.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(b"k8s\0").ok_or(ProtobufError::NoMagic)?;
    let mut type_meta = Value::Null;
    let mut raw: &[u8] = &[];
    let mut rd = Reader { buf: envelope };
    while !rd.buf.is_empty() {
        match rd.field()? {
            (1, Wire::Bytes(b)) => type_meta = decode_message(b, TYPE_META)?,
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let api_version = type_meta
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = type_meta
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("batch/v1", "Job") => JOB,
        ("batch/v1", "CronJob") => CRON_JOB,
        ("policy/v1", "PodDisruptionBudget") => POD_DISRUPTION_BUDGET,
        ("autoscaling/v2", "HorizontalPodAutoscaler") => HORIZONTAL_POD_AUTOSCALER,
        ("authorization.k8s.io/v1", "SubjectAccessReview" | "LocalSubjectAccessReview") => {
            SUBJECT_ACCESS_REVIEW
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => SELF_SUBJECT_RULES_REVIEW,
        ("authentication.k8s.io/v1", "TokenReview") => TOKEN_REVIEW,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SELF_SUBJECT_REVIEW,
        ("rbac.authorization.k8s.io/v1", "Role") => ROLE,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => CLUSTER_ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => ROLE_BINDING,
        _ => {
            return Err(ProtobufError::UnsupportedKind(format!(
                "{api_version}/{kind}"
            )));
        }
    };
    let mut obj = decode_message(raw, schema)?;
    obj["apiVersion"] = api_version.into();
    obj["kind"] = kind.into();
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(num: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn decodes_a_configmap_as_kubectl_sends_it() {
        let mut meta = Vec::new();
        bytes_field(1, b"cfg", &mut meta);
        let mut entry = Vec::new();
        bytes_field(1, b"k", &mut entry);
        bytes_field(2, b"v", &mut entry);
        let mut label = Vec::new();
        bytes_field(1, b"app", &mut label);
        bytes_field(2, b"web", &mut label);
        bytes_field(11, &label, &mut meta);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry, &mut cm);
        let mut tm = Vec::new();
        bytes_field(1, b"v1", &mut tm);
        bytes_field(2, b"ConfigMap", &mut tm);
        let mut body = b"k8s\0".to_vec();
        bytes_field(1, &tm, &mut body);
        bytes_field(2, &cm, &mut body);
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cfg", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
        assert_eq!(decode(b"{}"), Err(ProtobufError::NoMagic));
    }
}
