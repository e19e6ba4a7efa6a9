//! The REST API: path routing, and create/get/list/watch/update/patch/delete
//! with kube-apiserver's semantics on top of the [`Storage`] trait.

pub(crate) mod body;
mod certificates;
mod compression;
pub mod custom_resources;
pub mod deletion;
pub mod discovery;
mod dry_run;
pub mod events;
mod eviction;
mod in_process;
mod limit_ranger;
mod logs;
pub mod managed_fields;
pub mod metrics;
pub mod object;
pub mod openapi;
pub mod patch;
mod pod_admission;
mod pod_security;
mod priority;
mod protobuf;
mod quota;
mod reviews;
mod runtime_class;
pub mod scale;
mod service_account_admission;
mod stream_proxy;
mod watch;
pub(crate) mod wire_order;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use crate::kinds::{Kind, Registry, ResourceInfo};
use crate::node_client::NodeClient;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, FieldError};
use crate::storage::{Storage, StorageError};
pub use body::MAX_REQUEST_BODY_BYTES;
use deletion::DeleteRequest;
use object::{meta, meta_mut, meta_str};

pub type Params = HashMap<String, String>;

/// Where services get their addresses (`--service-cluster-ip-range`,
/// `--service-node-port-range`).
#[derive(Debug, Clone)]
pub struct ServiceNetwork {
    /// Cluster IPs; the first address is the `kubernetes` service's.
    pub cluster_ip_range: crate::cidr::Ipv4Cidr,
    /// Node ports, inclusive.
    pub node_ports: std::ops::RangeInclusive<i64>,
}

impl Default for ServiceNetwork {
    /// kubeadm's service subnet and kube-apiserver's node port range.
    fn default() -> Self {
        Self {
            cluster_ip_range: crate::cidr::Ipv4Cidr::new([10, 96, 0, 0].into(), 12),
            node_ports: 30000..=32767,
        }
    }
}

impl ServiceNetwork {
    /// The `kubernetes` service's cluster IP: the range's first address.
    pub fn kubernetes_service_ip(&self) -> std::net::Ipv4Addr {
        self.cluster_ip_range
            .nth(1)
            .unwrap_or(self.cluster_ip_range.network())
    }
}

pub struct Api {
    pub store: Arc<dyn Storage>,
    pub registry: Registry,
    /// Serialises service creation so two services never get one IP.
    allocator: tokio::sync::Mutex<()>,
    /// Serialises creates in namespaces with quotas (ResourceQuota admission).
    quota_lock: tokio::sync::Mutex<()>,
    pub service_network: ServiceNetwork,
    /// `host:port` clients reach this server at, for discovery.
    pub advertise: String,
    /// The agents' kubelet API, for logs and metrics.
    pub nodes: NodeClient,
    /// Bearer tokens (`--token-auth-file`), which TokenReviews check.
    pub tokens: Arc<crate::auth::TokenAuthenticator>,
    /// The user the apiserver's kubelet client certificate names, which
    /// SubjectAccessReviews allow on the kubelets' API.
    pub kubelet_client_user: String,
    /// Signs the tokens the TokenRequest API issues.
    pub service_account_tokens: Arc<crate::serviceaccount::ServiceAccountTokens>,
    /// The OpenAPI documents, built once from the registry.
    pub openapi: Arc<openapi::Documents>,
    /// `--authorization-mode`: decides every request, and
    /// SubjectAccessReviews.
    pub authorizer: Arc<crate::authorizer::Authorizer>,
    /// The PodSecurity admission plugin (`--admission-control-config-file`).
    pub pod_security: Arc<crate::pod_security::PodSecurity>,
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        // to_vec writes straight into bytes; Display goes through fmt.
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

type ApiResult<T> = Result<T, ApiError>;

/// How the client wants objects back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    Object,
    /// The object in protobuf, for a client that accepts nothing else
    /// (`Accept: application/vnd.kubernetes.protobuf`). Watches stay JSON.
    Protobuf,
    /// `meta.k8s.io/v1` Table; the row object as asked by `includeObject`.
    Table(IncludeObject),
    /// Only the metadata, as `meta.k8s.io/v1` PartialObjectMetadata (a
    /// list as PartialObjectMetadataList): what metadata informers ask for
    /// (`Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`).
    Metadata,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

fn output(headers: &HeaderMap, params: &Params) -> Output {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let first = accept.split(',').next().unwrap_or("");
    if first.contains("as=PartialObjectMetadata") {
        return Output::Metadata;
    }
    let wants_table = first.contains("as=Table");
    if !wants_table {
        return if protobuf_only(accept) {
            Output::Protobuf
        } else {
            Output::Object
        };
    }
    Output::Table(match params.get("includeObject").map(String::as_str) {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    })
}

/// Whether the Accept header asks for protobuf and nothing JSON can serve.
fn protobuf_only(accept: &str) -> bool {
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    types.contains(&protobuf::MEDIA_TYPE)
        && !types
            .iter()
            .any(|t| t.contains("json") || t.contains("yaml") || t.ends_with("*"))
}

/// An object in protobuf; in JSON if it has no protobuf form (custom
/// resources).
fn protobuf_response(code: StatusCode, v: &Value) -> Response {
    match protobuf::encode(v) {
        Ok(body) => (code, [(header::CONTENT_TYPE, protobuf::MEDIA_TYPE)], body).into_response(),
        Err(e) => {
            tracing::debug!("answering in JSON: {e}");
            json_response(code, v)
        }
    }
}

/// Rows for a Table response.
pub fn table_rows(kind: &dyn Kind, objects: &[Value], include: IncludeObject) -> Vec<Value> {
    let now = jiff::Timestamp::now();
    objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": kind.cells(o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = object::partial_metadata(o),
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect()
}

pub fn table(
    kind: &dyn Kind,
    objects: &[Value],
    include: IncludeObject,
    list_meta: Value,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": kind.columns().iter().map(|c| c.to_json()).collect::<Vec<_>>(),
        "rows": table_rows(kind, objects, include),
    })
}

/// Label and field selectors from the query, checked against the kind.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn from_params(kind: &dyn Kind, params: &Params) -> ApiResult<Self> {
        let labels = LabelSelector::parse(
            params
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or(""),
        )
        .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            params
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or(""),
        )
        .map_err(ApiError::bad_request)?;
        if let Some(f) = fields.unsupported(&kind.selectable_fields()) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
        Ok(Self { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, v: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&object::labels(v)))
            && (self.fields.is_empty() || self.fields.matches(|f| object::field_value(v, f)))
    }
}

/// What a request path names, once the group/version prefix is stripped.
struct Target {
    kind: Arc<dyn Kind>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    /// `/apis/<group>`
    Group(String),
    ResourceList {
        group: String,
        version: String,
    },
    Resource(Target),
    /// `POST /api/v1/namespaces/{ns}/bindings`
    Bindings {
        namespace: String,
    },
}

impl Api {
    pub fn new(store: Arc<dyn Storage>, advertise: String) -> Self {
        Self {
            store,
            registry: Registry::default(),
            allocator: tokio::sync::Mutex::new(()),
            quota_lock: tokio::sync::Mutex::new(()),
            service_network: ServiceNetwork::default(),
            advertise,
            nodes: NodeClient::default(),
            tokens: Arc::default(),
            kubelet_client_user: crate::authorizer::default_kubelet_client_user(),
            service_account_tokens: Arc::new(
                crate::serviceaccount::ServiceAccountTokens::ephemeral()
                    .expect("an ECDSA key can be made"),
            ),
            openapi: Arc::default(),
            authorizer: Arc::default(),
            pod_security: Arc::default(),
        }
    }

    fn route(&self, path: &str) -> Option<Route> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segs.as_slice() {
            ["apis", g] => return Some(Route::Group((*g).to_owned())),
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let find = |plural: &str| self.registry.find(group, version, plural);
        if rest.is_empty() {
            let served = self
                .registry
                .all()
                .iter()
                .any(|k| k.info().group == group && k.info().version == version);
            if !served {
                return None;
            }
            return Some(Route::ResourceList {
                group: group.to_owned(),
                version: version.to_owned(),
            });
        }
        let owned = |s: Option<&&str>| s.map(|s| s.to_string());
        if rest[0] == "namespaces" && rest.len() >= 3 {
            if group.is_empty() && rest[2] == "bindings" && rest.len() == 3 {
                return Some(Route::Bindings {
                    namespace: rest[1].to_owned(),
                });
            }
            if let Some(kind) = find(rest[2]).filter(|k| k.info().namespaced) {
                if rest.len() > 5 {
                    return None;
                }
                return Some(Route::Resource(Target {
                    kind,
                    namespace: Some(rest[1].to_owned()),
                    name: owned(rest.get(3)),
                    subresource: owned(rest.get(4)),
                }));
            }
        }
        let kind = find(rest[0])?;
        if rest.len() > 3 || (kind.info().namespaced && rest.len() > 1) {
            return None;
        }
        Some(Route::Resource(Target {
            kind,
            namespace: None,
            name: owned(rest.get(1)),
            subresource: owned(rest.get(2)),
        }))
    }

    pub async fn handle(
        self: Arc<Self>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        params: Params,
        body: Bytes,
    ) -> Response {
        match self
            .clone()
            .dispatch(method, uri, headers, params, body)
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn dispatch(
        self: Arc<Self>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        mut params: Params,
        body: Bytes,
    ) -> ApiResult<Response> {
        let route = self
            .route(uri.path())
            .ok_or_else(ApiError::not_found_path)?;
        managed_fields::remember_user_agent(&headers, &mut params);
        // A dry run goes through everything a write does, on a store that
        // never writes.
        let delete_options = match (&method, &route) {
            (&Method::DELETE, _) if !body.is_empty() => Some(body::decode(&headers, &body).await?),
            (&Method::POST, Route::Resource(t)) if t.subresource.as_deref() == Some("eviction") => {
                body::decode(&headers, &body)
                    .await?
                    .get("deleteOptions")
                    .cloned()
            }
            _ => None,
        };
        let dry_run = dry_run::requested(&method, &uri, delete_options.as_ref())?;
        let api = if dry_run {
            params.insert("dryRun".into(), "All".into());
            Arc::new(self.dry_run_view())
        } else {
            params.remove("dryRun");
            self
        };
        let crd_write = !dry_run
            && method != Method::GET
            && matches!(&route, Route::Resource(t) if custom_resources::is_crd(t.kind.as_ref()));
        let response = api
            .clone()
            .serve(route, method, headers, params, body)
            .await;
        if crd_write
            && response.is_ok()
            && let Err(e) = api.sync_custom_resources().await
        {
            // The background sync tries again.
            tracing::warn!("custom resources: {}", e.message);
        }
        response
    }

    /// This API over a store that checks writes without making them.
    fn dry_run_view(&self) -> Self {
        Self {
            store: Arc::new(dry_run::DryRunStore::new(self.store.clone())),
            registry: self.registry.clone(),
            allocator: tokio::sync::Mutex::new(()),
            quota_lock: tokio::sync::Mutex::new(()),
            service_network: self.service_network.clone(),
            advertise: self.advertise.clone(),
            nodes: self.nodes.clone(),
            tokens: self.tokens.clone(),
            kubelet_client_user: self.kubelet_client_user.clone(),
            service_account_tokens: self.service_account_tokens.clone(),
            openapi: self.openapi.clone(),
            authorizer: self.authorizer.clone(),
            pod_security: self.pod_security.clone(),
        }
    }

    async fn serve(
        self: Arc<Self>,
        route: Route,
        method: Method,
        headers: HeaderMap,
        params: Params,
        body: Bytes,
    ) -> ApiResult<Response> {
        let out = output(&headers, &params);
        let t = match route {
            Route::Group(group) => {
                return discovery::api_group(&self.registry, &group)
                    .map(|g| json_response(StatusCode::OK, &g))
                    .ok_or_else(ApiError::not_found_path);
            }
            Route::ResourceList { group, version } => {
                return Ok(discovery::discovery_response(
                    StatusCode::OK,
                    &discovery::resource_list(&self.registry, &group, &version),
                ));
            }
            Route::Bindings { namespace } => {
                if method != Method::POST {
                    return Err(ApiError::method_not_allowed());
                }
                let binding = body::decode(&headers, &body).await?;
                let name = object::name(&binding).to_owned();
                return self.bind(&namespace, &name, &binding).await;
            }
            Route::Resource(t) => t,
        };
        let ns = t.namespace.as_deref();
        let kind = t.kind.as_ref();
        match (&method, t.name.as_deref(), t.subresource.as_deref()) {
            (&Method::GET, None, None) => {
                if param_bool(&params, "watch") == Some(true) {
                    return watch::watch(
                        self.clone(),
                        t.kind.clone(),
                        t.namespace.clone(),
                        params,
                        out,
                    )
                    .await;
                }
                self.list(kind, ns, &params, out).await
            }
            (&Method::POST, None, None) => {
                let obj = body::decode_object(&headers, &body, kind.info().kind).await?;
                let ns = self.require_namespace(kind, ns)?;
                self.create(kind, ns, obj, &params, out).await
            }
            (&Method::DELETE, None, None) => {
                let opts = if body.is_empty() {
                    Value::Null
                } else {
                    body::decode(&headers, &body).await?
                };
                self.delete_collection(kind, ns, &opts, &params).await
            }
            (&Method::GET, Some(name), None | Some("status")) => {
                let obj = self.get(kind, ns, name).await?;
                Ok(self.respond(kind, StatusCode::OK, &obj, out))
            }
            (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
                let obj = body::decode_object(&headers, &body, kind.info().kind).await?;
                self.update(kind, ns, name, obj, &params, sub.is_some(), out)
                    .await
            }
            (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                self.patch(kind, ns, name, &ct, &body, &params, sub.is_some(), out)
                    .await
            }
            (&Method::DELETE, Some(name), None) => {
                let opts = if body.is_empty() {
                    Value::Null
                } else {
                    body::decode(&headers, &body).await?
                };
                self.delete(kind, ns, name, &opts, &params).await
            }
            (&Method::PUT, Some(name), Some("finalize")) if kind.info().plural == "namespaces" => {
                let obj = body::decode(&headers, &body).await?;
                self.finalize_namespace(kind, name, obj, out).await
            }
            (&Method::POST, Some(name), Some("binding")) if kind.info().plural == "pods" => {
                let binding = body::decode(&headers, &body).await?;
                self.bind(ns.unwrap_or("default"), name, &binding).await
            }
            (&Method::POST, Some(name), Some("eviction")) if kind.info().plural == "pods" => {
                let eviction = body::decode(&headers, &body).await?;
                self.evict(ns.unwrap_or("default"), name, &eviction, &params)
                    .await
            }
            (&Method::GET, Some(name), Some("scale")) if kind.info().has_scale => {
                self.get_scale(kind, ns, name).await
            }
            (&Method::PUT, Some(name), Some("scale")) if kind.info().has_scale => {
                let scale = body::decode(&headers, &body).await?;
                self.update_scale(kind, ns, name, scale).await
            }
            (&Method::PATCH, Some(name), Some("scale")) if kind.info().has_scale => {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                self.patch_scale(kind, ns, name, &ct, &body).await
            }
            (&Method::GET, Some(name), Some("approval"))
                if kind.info().plural == certificates::PLURAL =>
            {
                let obj = self.get(kind, ns, name).await?;
                Ok(self.respond(kind, StatusCode::OK, &obj, out))
            }
            (&Method::PUT, Some(name), Some("approval"))
                if kind.info().plural == certificates::PLURAL =>
            {
                let obj = body::decode_object(&headers, &body, kind.info().kind).await?;
                self.update_approval(kind, name, obj, &params, out).await
            }
            (&Method::GET, Some(name), Some("log")) if kind.info().plural == "pods" => {
                logs::pod_log(&self, ns.unwrap_or("default"), name, &params).await
            }
            (_, Some(_), Some(sub)) if !matches!(sub, "status" | "binding" | "finalize") => {
                Err(ApiError::not_found_path())
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn require_namespace<'a>(
        &self,
        kind: &dyn Kind,
        ns: Option<&'a str>,
    ) -> ApiResult<Option<&'a str>> {
        if kind.info().namespaced && ns.is_none() {
            return Err(ApiError::not_found_path());
        }
        Ok(ns)
    }

    fn respond(&self, kind: &dyn Kind, code: StatusCode, obj: &Value, out: Output) -> Response {
        match out {
            Output::Object => json_response(code, obj),
            Output::Protobuf => protobuf_response(code, obj),
            Output::Metadata => json_response(code, &object::partial_metadata(obj)),
            Output::Table(include) => {
                let rv = meta_str(obj, "resourceVersion").unwrap_or("").to_owned();
                json_response(
                    code,
                    &table(
                        kind,
                        std::slice::from_ref(obj),
                        include,
                        json!({"resourceVersion": rv}),
                    ),
                )
            }
        }
    }

    pub async fn get(&self, kind: &dyn Kind, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let info = kind.info();
        let key = info.key(ns, name);
        match self.store.get(&key).await? {
            Some(kv) => Ok(kind.from_storage(object::decode(&kv))),
            None => Err(ApiError::not_found(info.subject(), name)),
        }
    }

    async fn list(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        params: &Params,
        out: Output,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let filter = Filter::from_params(kind, params)?;
        let limit: usize = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let start_after = match params.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let prefix = info.key_prefix(ns);
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = None;
        let revision;
        if filter.is_empty() {
            // Without selectors a page is exactly the next `limit` keys:
            // the store reads only those, and counts the rest.
            let page = self
                .store
                .list_page(&prefix, start_after.as_deref(), limit)
                .await?;
            revision = page.revision;
            items = page
                .items
                .iter()
                .map(|kv| kind.from_storage(object::decode(kv)))
                .collect();
            if page.remaining > 0 {
                next = key_of_last(&items, info, ns);
                remaining = Some(page.remaining);
            }
        } else {
            let (kvs, rev) = self.store.list(&prefix).await?;
            revision = rev;
            let mut rest = kvs.iter().filter(|kv| {
                start_after
                    .as_ref()
                    .is_none_or(|s| kv.key.as_str() > s.as_str())
            });
            for kv in rest.by_ref() {
                let obj = kind.from_storage(object::decode(kv));
                if !filter.matches(&obj) {
                    continue;
                }
                items.push(obj);
                if items.len() == limit {
                    break;
                }
            }
            // A full page with keys left over gets a continue token; as the
            // real apiserver does, no count of what is left under a selector.
            if items.len() == limit && rest.next().is_some() {
                next = key_of_last(&items, info, ns);
            }
        }
        let mut list_meta = json!({"resourceVersion": revision.to_string()});
        if let Some(last_key) = next {
            list_meta["continue"] = encode_continue(&last_key, revision).into();
            if let Some(n) = remaining {
                list_meta["remainingItemCount"] = n.into();
            }
        }
        let body = match out {
            Output::Table(include) => table(kind, &items, include, list_meta),
            Output::Object | Output::Protobuf => json!({
                "kind": format!("{}List", info.kind),
                "apiVersion": info.api_version(),
                "metadata": list_meta,
                "items": items,
            }),
            Output::Metadata => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list_meta,
                "items": items.iter().map(object::partial_metadata).collect::<Vec<_>>(),
            }),
        };
        Ok(match out {
            Output::Protobuf => protobuf_response(StatusCode::OK, &body),
            _ => json_response(StatusCode::OK, &body),
        })
    }

    /// Fills in what a new object gets from the server, then defaults,
    /// admits and validates it. Shared by create and create-on-apply.
    async fn prepare_new(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        obj: Value,
        params: &Params,
    ) -> ApiResult<(Value, Vec<String>)> {
        let info = kind.info();
        let mut obj = check_type(kind, obj)?;
        {
            let m = meta_mut(&mut obj);
            if info.namespaced {
                match m
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    None => {
                        m.insert("namespace".into(), ns.unwrap_or("default").into());
                    }
                    Some(given) if Some(given) != ns && ns.is_some() => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    Some(_) => {}
                }
            } else {
                m.remove("namespace");
            }
            let has_name = m
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !has_name
                && let Some(prefix) = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            {
                let name = format!("{prefix}{}", object::random_suffix());
                m.insert("name".into(), name.into());
            }
            for server_set in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                m.remove(server_set);
            }
            m.insert("uid".into(), object::new_uid().into());
            m.insert("creationTimestamp".into(), object::now_rfc3339().into());
        }
        if obj.get("spec").is_some() && info.plural != "namespaces" {
            meta_mut(&mut obj).insert("generation".into(), 1.into());
        }
        if (info.group, info.plural) == ("", "pods") {
            let (pod, unknown) =
                crate::kinds::decode_known(&obj).map_err(|e| cannot_handle(info, e))?;
            let warnings = unknown_field_warnings(info, &unknown, params)?;
            return self.admit_new_pod(info, pod, warnings).await;
        }
        let (obj, mut warnings) = self.decode_strict(kind, obj, params)?;
        // NamespaceLifecycle comes first, as in kube-apiserver's plugin order.
        if let Some(ns) = meta_str(&obj, "namespace").filter(|_| info.namespaced) {
            self.require_namespace_exists(info.subject(), object::name(&obj), ns)
                .await?;
        }
        // Admission that reads other objects, before defaults fill the fields.
        if (info.group, info.plural) == ("scheduling.k8s.io", "priorityclasses") {
            self.admit_priority_class(&obj).await?;
        }
        let mut obj = kind.prepare_create(obj).map_err(ApiError::bad_request)?;
        if info.plural == certificates::PLURAL {
            certificates::record_requester(&mut obj);
        }
        let name = object::name(&obj).to_owned();
        let errs = kind.validate(&obj, None);
        if !errs.is_empty() {
            return Err(ApiError::invalid(info.subject(), &name, &errs));
        }
        crate::rbac::admission::admit(info, &obj, None, false)?;
        warnings.extend(self.admit_pod_security(kind, &obj, None).await?);
        if info.plural == "services" {
            self.allocate_service(&mut obj, &name, None).await?;
        }
        Ok((obj, warnings))
    }

    /// NamespaceLifecycle: new objects only in namespaces that exist and
    /// are not being terminated.
    pub(super) async fn require_namespace_exists(
        &self,
        subject: crate::status::Subject<'_>,
        name: &str,
        ns: &str,
    ) -> ApiResult<()> {
        let kind = self
            .registry
            .find("", "v1", "namespaces")
            .expect("namespaces served");
        let nsobj = self.get(kind.as_ref(), None, ns).await?;
        if meta_str(&nsobj, "deletionTimestamp").is_some() {
            return Err(ApiError::forbidden(
                subject,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    /// Decodes through the typed struct; unknown fields fail the request
    /// under `fieldValidation=Strict` and become warnings otherwise.
    fn decode_strict(
        &self,
        kind: &dyn Kind,
        obj: Value,
        params: &Params,
    ) -> ApiResult<(Value, Vec<String>)> {
        let info = kind.info();
        let (obj, unknown) = kind.normalize(obj).map_err(|e| cannot_handle(info, e))?;
        Ok((obj, unknown_field_warnings(info, &unknown, params)?))
    }

    async fn create(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        obj: Value,
        params: &Params,
        out: Output,
    ) -> ApiResult<Response> {
        self.create_owned(kind, ns, obj, params, out, None).await
    }

    /// A create whose `managedFields` are given (`applied`, by a
    /// server-side apply) or recorded for the request's manager.
    async fn create_owned(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        obj: Value,
        params: &Params,
        out: Output,
        applied: Option<Value>,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let _guard = if info.plural == "services" {
            Some(self.allocator.lock().await)
        } else {
            None
        };
        let (mut obj, warnings) = self.prepare_new(kind, ns, obj, params).await?;
        match applied {
            Some(fields) => {
                meta_mut(&mut obj).insert("managedFields".into(), fields);
            }
            None => managed_fields::record(kind, None, &mut obj, params, false),
        }
        let _quota = self.admit_quota(kind, &obj).await?;
        let name = object::name(&obj).to_owned();
        let key = info.key(meta_str(&obj, "namespace"), &name);
        let rev = self
            .store
            .create(&key, stored_form(kind, &obj, None))
            .await
            .map_err(|e| ApiError::from_storage(info.subject(), &name, e))?;
        // An object a dry run did not store has no version yet.
        if !is_dry_run(params) {
            meta_mut(&mut obj).insert("resourceVersion".into(), rev.to_string().into());
        }
        if info.plural == "namespaces" {
            self.create_default_service_account(&name).await;
        }
        Ok(with_warnings(
            self.respond(kind, StatusCode::CREATED, &obj, out),
            &warnings,
        ))
    }

    /// The serviceaccount controller's job, done inline: every namespace
    /// has a `default` ServiceAccount that pods run as.
    async fn create_default_service_account(&self, ns: &str) {
        let Some(kind) = self.registry.find("", "v1", "serviceaccounts") else {
            return;
        };
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
        if let Ok((obj, _)) = self
            .prepare_new(kind.as_ref(), Some(ns), sa, &Params::new())
            .await
        {
            let _ = self
                .store
                .create(&kind.info().key(Some(ns), "default"), object::encode(&obj))
                .await;
        }
    }

    /// Applies update semantics (immutable metadata, status vs spec,
    /// generation) to `new` given the stored `old`, then validates it.
    fn prepare_update(
        &self,
        kind: &dyn Kind,
        old: &Value,
        new: Value,
        status_only: bool,
    ) -> ApiResult<Value> {
        let info = kind.info();
        let name = object::name(old).to_owned();
        let mut new = if status_only {
            let mut merged = old.clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            if let Some(rv) = meta(&new).get("resourceVersion") {
                meta_mut(&mut merged).insert("resourceVersion".into(), rv.clone());
            }
            if info.status_updates_annotations {
                match meta(&new).get("annotations") {
                    Some(a) => meta_mut(&mut merged).insert("annotations".into(), a.clone()),
                    None => meta_mut(&mut merged).remove("annotations"),
                };
            }
            merged
        } else {
            let mut new = new;
            if info.has_status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            new
        };
        {
            let old_meta = meta(old).clone();
            let m = meta_mut(&mut new);
            for immutable in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old_meta.get(immutable) {
                    Some(v) => m.insert(immutable.into(), v.clone()),
                    None => m.remove(immutable),
                };
            }
        }
        let mut new = kind
            .prepare_update(new, old)
            .map_err(ApiError::bad_request)?;
        // Compared after defaulting: a replace that leaves out defaulted
        // fields changes nothing.
        let changed = new.get("spec") != old.get("spec")
            || (info.annotations_bump_generation
                && meta(&new).get("annotations") != meta(old).get("annotations"));
        if !status_only && changed && meta(old).get("generation").is_some() {
            let g = meta(old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), (g + 1).into());
        }
        let errs = kind.validate(&new, Some(old));
        if !errs.is_empty() {
            return Err(ApiError::invalid(info.subject(), &name, &errs));
        }
        crate::rbac::admission::admit(info, &new, Some(old), status_only)?;
        Ok(new)
    }

    /// The stored object a write of a converted version replaces: what
    /// that version cannot carry is kept from it.
    async fn stored_for_conversion(
        &self,
        kind: &dyn Kind,
        key: &str,
    ) -> Result<Option<Value>, StorageError> {
        if !kind.converted() {
            return Ok(None);
        }
        Ok(self.store.get(key).await?.map(|kv| object::decode(&kv)))
    }

    /// Writes an updated object conditionally on `expected`, or deletes it
    /// when a deletion was only waiting for its finalizers.
    async fn store_update(
        &self,
        kind: &dyn Kind,
        old: &Value,
        new: &mut Value,
        expected: u64,
    ) -> Result<(), StorageError> {
        let info = kind.info();
        let key = info.key(meta_str(new, "namespace"), object::name(new));
        // Writing back what is stored changes nothing: kube-apiserver skips
        // such a write, so the resourceVersion stays and watchers see no
        // event (and a controller rewriting an unchanged status makes no
        // one else's update or delete conflict).
        if object::same_but_resource_version(old, new) {
            meta_mut(new).insert("resourceVersion".into(), expected.to_string().into());
            return Ok(());
        }
        if deletion::finalized_by_update(old, new, info.plural) {
            let kv = self.store.delete(&key, Some(expected)).await?;
            meta_mut(new).insert("resourceVersion".into(), kv.mod_revision.to_string().into());
            return Ok(());
        }
        let stored = self.stored_for_conversion(kind, &key).await?;
        let rev = self
            .store
            .update(
                &key,
                stored_form(kind, new, stored.as_ref()),
                Some(expected),
            )
            .await?;
        meta_mut(new).insert("resourceVersion".into(), rev.to_string().into());
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        params: &Params,
        status_only: bool,
        out: Output,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let obj = check_type(kind, obj)?;
        if let Some(body_name) = meta_str(&obj, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(body_ns), Some(ns)) = (meta_str(&obj, "namespace"), ns)
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let key = info.key(ns, name);
        let Some(current) = self.store.get(&key).await? else {
            if matches!(info.plural, "leases" | "events" | "endpoints") && !status_only {
                let mut obj = obj;
                meta_mut(&mut obj).insert("name".into(), name.into());
                return self.create(kind, ns, obj, params, out).await;
            }
            return Err(ApiError::not_found(info.subject(), name));
        };
        let old = kind.from_storage(object::decode(&current));
        let expected = match meta_str(&obj, "resourceVersion") {
            Some(rv) => rv
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
            None => current.mod_revision,
        };
        if expected != current.mod_revision {
            return Err(ApiError::stale(info.subject(), name));
        }
        let (obj, mut warnings) = self.decode_strict(kind, obj, params)?;
        let mut new = self.prepare_update(kind, &old, obj, status_only)?;
        if !status_only {
            warnings.extend(self.admit_pod_security(kind, &new, Some(&old)).await?);
        }
        managed_fields::record(kind, Some(&old), &mut new, params, status_only);
        let _allocation = self.allocate_on_update(kind, &mut new, &old).await?;
        self.store_update(kind, &old, &mut new, expected)
            .await
            .map_err(|e| ApiError::from_storage(info.subject(), name, e))?;
        Ok(with_warnings(
            self.respond(kind, StatusCode::OK, &new, out),
            &warnings,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        body: &Bytes,
        params: &Params,
        status_only: bool,
        out: Output,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let media = content_type.split(';').next().unwrap_or("").trim();
        let patch: Value = match media {
            "application/apply-patch+yaml" => {
                if params.get("fieldManager").is_none_or(|m| m.is_empty()) {
                    return Err(ApiError::invalid(
                        crate::status::Subject {
                            group: "meta.k8s.io",
                            plural: "patchoptions",
                            kind: "PatchOptions.meta.k8s.io",
                        },
                        "",
                        &[FieldError::required(
                            "fieldManager",
                            "is required for apply patch",
                        )],
                    ));
                }
                body::decode_with(body, |b| {
                    body::yaml(b)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
                })
                .await?
            }
            "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json" => {
                body::decode_with(body, |b| {
                    serde_json::from_slice(b)
                        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
                })
                .await?
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                    ),
                ));
            }
        };
        if kind.custom().is_some() && media == "application/strategic-merge-patch+json" {
            return Err(custom_resources::unsupported_patch_error());
        }
        let key = info.key(ns, name);
        let applying = media == "application/apply-patch+yaml";
        for _attempt in 0..8 {
            let Some(current) = self.store.get(&key).await? else {
                if applying && !status_only {
                    let mut obj = check_type(kind, patch.clone())?;
                    meta_mut(&mut obj).insert("name".into(), name.into());
                    let applied = managed_fields::apply_request(kind, None, &obj, params, false)?;
                    let fields = meta(&applied).get("managedFields").cloned();
                    return self.create_owned(kind, ns, obj, params, out, fields).await;
                }
                return Err(ApiError::not_found(info.subject(), name));
            };
            let old = kind.from_storage(object::decode(&current));
            let patched = match media {
                "application/json-patch+json" => patch::json_patch(&old, &patch)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                "application/merge-patch+json" => patch::merge_patch(&old, &patch),
                "application/apply-patch+yaml" => {
                    managed_fields::apply_request(kind, Some(&old), &patch, params, status_only)?
                }
                _ => patch::strategic_merge(
                    &old,
                    &patch,
                    crate::patch_metadata::Node::for_kind(&info.api_version(), info.kind),
                ),
            };
            let patched = check_type(kind, patched)?;
            // A patch that names a resourceVersion is a precondition.
            let pinned = meta(&patch)
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let expected = match &pinned {
                Some(rv) => rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?,
                None => current.mod_revision,
            };
            if expected != current.mod_revision {
                return Err(ApiError::stale(info.subject(), name));
            }
            let (patched, mut warnings) = self.decode_strict(kind, patched, params)?;
            let applied_fields = meta(&patched).get("managedFields").cloned();
            let mut new = self.prepare_update(kind, &old, patched, status_only)?;
            if !status_only {
                warnings.extend(self.admit_pod_security(kind, &new, Some(&old)).await?);
            }
            match applied_fields {
                Some(fields) if applying => {
                    meta_mut(&mut new).insert("managedFields".into(), fields);
                }
                _ => managed_fields::record(kind, Some(&old), &mut new, params, status_only),
            }
            let _allocation = self.allocate_on_update(kind, &mut new, &old).await?;
            match self.store_update(kind, &old, &mut new, expected).await {
                Ok(()) => {
                    return Ok(with_warnings(
                        self.respond(kind, StatusCode::OK, &new, out),
                        &warnings,
                    ));
                }
                // Someone wrote in between: patch the newer object.
                Err(StorageError::Conflict { .. }) if pinned.is_none() => continue,
                Err(e) => return Err(ApiError::from_storage(info.subject(), name, e)),
            }
        }
        Err(ApiError::stale(info.subject(), name))
    }

    async fn delete(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
        params: &Params,
    ) -> ApiResult<Response> {
        let req = DeleteRequest::from_request(opts, params)?;
        // A write between our read and the deletion (a controller updating
        // the status) starts the deletion over on the newer object, as
        // kube-apiserver's conditional delete does: only the caller's own
        // preconditions make it a conflict.
        for _ in 0..MAX_DELETE_ATTEMPTS {
            if let Some(done) = self.delete_once(kind, ns, name, &req).await? {
                return Ok(done);
            }
        }
        Err(ApiError::stale(kind.info().subject(), name))
    }

    /// One deletion attempt on the object as read; `None` when it changed
    /// before the deletion was written.
    async fn delete_once(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
        req: &DeleteRequest,
    ) -> ApiResult<Option<Response>> {
        let info = kind.info();
        let key = info.key(ns, name);
        let Some(current) = self.store.get(&key).await? else {
            return Err(ApiError::not_found(info.subject(), name));
        };
        let mut obj = kind.from_storage(object::decode(&current));
        let uid_mismatch = req
            .precondition_uid
            .as_deref()
            .is_some_and(|u| Some(u) != meta_str(&obj, "uid"));
        let rv_mismatch = req
            .precondition_resource_version
            .as_deref()
            .is_some_and(|r| Some(r) != meta_str(&obj, "resourceVersion"));
        if uid_mismatch || rv_mismatch {
            return Err(ApiError::conflict(
                info.subject(),
                name,
                "the UID or resourceVersion in the precondition does not match",
            ));
        }
        if info.plural == "namespaces" {
            return self
                .delete_namespace(kind, obj, current.mod_revision, req)
                .await;
        }
        let existing = deletion::finalizers(&obj);
        let gc = deletion::gc_finalizers(&existing, req, deletion::default_policy(info));
        let finalizers = gc.clone().unwrap_or_else(|| existing.clone());
        let deleting = meta_str(&obj, "deletionTimestamp").is_some();
        let current_grace = meta(&obj)
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        // Pods on a node terminate gracefully: the node's agent stops the
        // containers, then deletes the pod with a zero grace period.
        if info.plural == "pods" {
            let bound = obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let terminal = matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
            let grace = req
                .grace_period_seconds
                .unwrap_or_else(|| {
                    obj["spec"]["terminationGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(30)
                })
                .max(0);
            // A deletion under way may only be shortened.
            if deleting && current_grace.is_some_and(|g| g > 0 && g <= grace) {
                return Ok(Some(json_response(StatusCode::OK, &obj)));
            }
            if bound && !terminal && grace > 0 {
                let m = meta_mut(&mut obj);
                m.insert(
                    "deletionTimestamp".into(),
                    object::timestamp_after(grace).into(),
                );
                m.insert("deletionGracePeriodSeconds".into(), grace.into());
                if gc.is_some() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                let written = self
                    .write_deletion(kind, &key, &mut obj, current.mod_revision)
                    .await;
                if unless_raced(written, info.subject(), name)?.is_none() {
                    return Ok(None);
                }
                return Ok(Some(json_response(StatusCode::OK, &obj)));
            }
        }
        if finalizers.is_empty() {
            let deleted = self.store.delete(&key, Some(current.mod_revision)).await;
            if unless_raced(deleted, info.subject(), name)?.is_none() {
                return Ok(None);
            }
            return Ok(Some(json_response(StatusCode::OK, &obj)));
        }
        // Finalizers hold the object: it is marked, and goes when the last
        // one is removed.
        let m = meta_mut(&mut obj);
        let mut changed = gc.is_some();
        if gc.is_some() {
            m.insert("finalizers".into(), json!(finalizers));
        }
        if !deleting || current_grace != Some(0) {
            if !deleting {
                m.insert("deletionTimestamp".into(), object::now_rfc3339().into());
            }
            m.insert("deletionGracePeriodSeconds".into(), 0.into());
            changed = true;
        }
        if changed {
            let written = self
                .write_deletion(kind, &key, &mut obj, current.mod_revision)
                .await;
            if unless_raced(written, info.subject(), name)?.is_none() {
                return Ok(None);
            }
        }
        let code = if req.wants_accepted() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        Ok(Some(json_response(code, &obj)))
    }

    /// Stores an object marked for deletion, conditionally on `expected`.
    async fn write_deletion(
        &self,
        kind: &dyn Kind,
        key: &str,
        obj: &mut Value,
        expected: u64,
    ) -> Result<(), StorageError> {
        let stored = self.stored_for_conversion(kind, key).await?;
        let rev = self
            .store
            .update(key, stored_form(kind, obj, stored.as_ref()), Some(expected))
            .await?;
        meta_mut(obj).insert("resourceVersion".into(), rev.to_string().into());
        Ok(())
    }

    /// A Namespace's DELETE, as its registry does it: the first one puts it
    /// in `Terminating` (deletionTimestamp, phase, the collector's
    /// finalizers as asked); the namespace controller empties it and
    /// removes `kubernetes` from `spec.finalizers` through `finalize`, and
    /// the namespace goes when no finalizer is left.
    async fn delete_namespace(
        &self,
        kind: &dyn Kind,
        mut ns: Value,
        expected: u64,
        req: &DeleteRequest,
    ) -> ApiResult<Option<Response>> {
        let info = kind.info();
        let name = object::name(&ns).to_owned();
        if deletion::IMMORTAL_NAMESPACES.contains(&name.as_str()) {
            return Err(ApiError::forbidden(
                info.subject(),
                &name,
                "this namespace may not be deleted",
            ));
        }
        let key = info.key(None, &name);
        if meta_str(&ns, "deletionTimestamp").is_none() {
            let existing = deletion::finalizers(&ns);
            // Only an explicit request puts the collector's finalizers on a
            // namespace (its contents are the namespace controller's).
            let gc = if req.propagation.is_some() || req.orphan_dependents.is_some() {
                deletion::gc_finalizers(&existing, req, deletion::Propagation::Background)
            } else {
                None
            };
            let m = meta_mut(&mut ns);
            m.insert("deletionTimestamp".into(), object::now_rfc3339().into());
            if let Some(f) = gc {
                if f.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), json!(f));
                }
            }
            ns["status"]["phase"] = "Terminating".into();
            let written = if deletion::spec_finalizers(&ns).is_empty()
                && deletion::finalizers(&ns).is_empty()
            {
                self.store.delete(&key, Some(expected)).await.map(|_| ())
            } else {
                self.write_deletion(kind, &key, &mut ns, expected).await
            };
            if unless_raced(written, info.subject(), &name)?.is_none() {
                return Ok(None);
            }
            return Ok(Some(json_response(StatusCode::OK, &ns)));
        }
        if deletion::spec_finalizers(&ns).is_empty() && deletion::finalizers(&ns).is_empty() {
            let deleted = self.store.delete(&key, Some(expected)).await;
            if unless_raced(deleted, info.subject(), &name)?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(json_response(StatusCode::OK, &ns)))
    }

    /// `PUT namespaces/{name}/finalize`: only `spec.finalizers` changes; a
    /// namespace under deletion with none left goes.
    async fn finalize_namespace(
        &self,
        kind: &dyn Kind,
        name: &str,
        body: Value,
        out: Output,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let body = check_type(kind, body)?;
        let key = info.key(None, name);
        let Some(current) = self.store.get(&key).await? else {
            return Err(ApiError::not_found(info.subject(), name));
        };
        let old = object::decode(&current);
        let expected = match object::resource_version(&body) {
            Some(rv) if rv != current.mod_revision => {
                return Err(ApiError::stale(info.subject(), name));
            }
            _ => current.mod_revision,
        };
        let wanted = deletion::spec_finalizers(&body);
        let errs: Vec<FieldError> = wanted
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                crate::kinds::validation::finalizer_name(&format!("spec.finalizers[{i}]"), f)
            })
            .collect();
        if !errs.is_empty() {
            return Err(ApiError::invalid(info.subject(), name, &errs));
        }
        let mut new = old.clone();
        new["spec"]["finalizers"] = json!(wanted);
        self.store_update(kind, &old, &mut new, expected)
            .await
            .map_err(|e| ApiError::from_storage(info.subject(), name, e))?;
        Ok(self.respond(kind, StatusCode::OK, &new, out))
    }

    async fn delete_collection(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        opts: &Value,
        params: &Params,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let filter = Filter::from_params(kind, params)?;
        // Checked once up front, so bad options fail the request as a whole.
        DeleteRequest::from_request(opts, params)?;
        let (kvs, rev) = self.store.list(&info.key_prefix(ns)).await?;
        let mut items = Vec::new();
        for kv in kvs {
            let obj = kind.from_storage(object::decode(&kv));
            if !filter.matches(&obj) {
                continue;
            }
            let name = object::name(&obj).to_owned();
            let obj_ns = meta_str(&obj, "namespace").map(str::to_owned);
            match self
                .delete(kind, obj_ns.as_deref(), &name, opts, params)
                .await
            {
                Ok(_) => items.push(obj),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                    "metadata": {"resourceVersion": rev.to_string()}, "items": items}),
        ))
    }

    /// `pods/binding`: the scheduler's write, setting `spec.nodeName` once.
    async fn bind(&self, ns: &str, name: &str, binding: &Value) -> ApiResult<Response> {
        let pods = self.registry.find("", "v1", "pods").expect("pods served");
        let subject = crate::status::Subject {
            group: "",
            plural: "pods/binding",
            kind: "Binding",
        };
        let node = binding["target"]["name"].as_str().unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::invalid(
                subject,
                name,
                &[FieldError::required("target.name", "")],
            ));
        }
        let key = pods.info().key(Some(ns), name);
        // Retried on a concurrent write (upstream's GuaranteedUpdate): only
        // an assigned or deleted pod refuses a binding.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(current) = self.store.get(&key).await? else {
                return Err(ApiError::not_found(pods.info().subject(), name));
            };
            let mut pod = object::decode(&current);
            if meta_str(&pod, "deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    subject,
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            if let Some(assigned) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(
                    subject,
                    name,
                    &format!("pod {name} is already assigned to node {assigned:?}"),
                ));
            }
            pod["spec"]["nodeName"] = node.into();
            let conditions = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conditions: Vec<Value> = conditions
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()}));
            pod["status"]["conditions"] = Value::Array(conditions);
            match self
                .store
                .update(&key, object::encode(&pod), Some(current.mod_revision))
                .await
            {
                Ok(_) => break,
                Err(StorageError::Conflict { .. }) if attempt < 8 => continue,
                Err(e) => return Err(ApiError::from_storage(subject, name, e)),
            }
        }
        // The scheduler that asked records `Scheduled`, under its own name.
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// Cluster IP and node ports for a new or updated service (`old`), from
    /// the store's view of what the other services hold.
    async fn allocate_service(
        &self,
        svc: &mut Value,
        name: &str,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let kind = self
            .registry
            .find("", "v1", "services")
            .expect("services served");
        let subject = kind.info().subject();
        let invalid = |field: String, value: String, why: String| {
            ApiError::invalid(subject, name, &[FieldError::invalid_raw(field, value, why)])
        };
        let type_ = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_owned();
        if type_ == "ExternalName" {
            return Ok(());
        }
        let ns = meta_str(svc, "namespace").unwrap_or("").to_owned();
        let (kvs, _) = self.store.list(&kind.info().key_prefix(None)).await?;
        let others: Vec<Value> = kvs
            .iter()
            .map(object::decode)
            .filter(|o| !(meta_str(o, "namespace") == Some(ns.as_str()) && object::name(o) == name))
            .collect();
        let used_ips: Vec<&str> = others
            .iter()
            .filter_map(|s| s["spec"]["clusterIP"].as_str())
            .collect();
        let net = &self.service_network;
        let range = net.cluster_ip_range;
        let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_owned();
        let old_ip = old.and_then(|o| o["spec"]["clusterIP"].as_str());
        let ip = match requested.as_str() {
            "None" => "None".to_owned(),
            "" => (2..range.size().saturating_sub(1))
                .filter_map(|n| range.nth(n))
                .map(|ip| ip.to_string())
                .find(|ip| !used_ips.contains(&ip.as_str()))
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "failed to allocate a serviceIP: range {range} is full"
                    ))
                })?,
            ip if Some(ip) == old_ip => ip.to_owned(),
            ip => {
                let field = "spec.clusterIPs".to_owned();
                let value = format!("[]string{{{ip:?}}}");
                let parsed: std::net::Ipv4Addr = ip.parse().map_err(|_| {
                    invalid(
                        field.clone(),
                        value.clone(),
                        "must be a valid IP address".into(),
                    )
                })?;
                if !range.contains(parsed) {
                    return Err(invalid(
                        field,
                        value,
                        format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
                        ),
                    ));
                }
                if used_ips.contains(&ip) {
                    return Err(invalid(
                        field,
                        value,
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                }
                ip.to_owned()
            }
        };
        svc["spec"]["clusterIP"] = ip.clone().into();
        svc["spec"]["clusterIPs"] = json!([ip]);
        let wants_node_ports = type_ == "NodePort" || type_ == "LoadBalancer";
        let old_ports: Vec<i64> = old
            .and_then(|o| o["spec"]["ports"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        let mut used_ports: Vec<i64> = others
            .iter()
            .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        let Some(ports) = svc["spec"]["ports"].as_array_mut() else {
            return Ok(());
        };
        for (i, p) in ports.iter_mut().enumerate() {
            if !wants_node_ports {
                // A service that stops being a NodePort gives its ports back.
                if old.is_some()
                    && let Some(o) = p.as_object_mut()
                {
                    o.remove("nodePort");
                }
                continue;
            }
            match p["nodePort"].as_i64().filter(|n| *n != 0) {
                Some(n) if old_ports.contains(&n) => used_ports.push(n),
                Some(n) => {
                    let field = format!("spec.ports[{i}].nodePort");
                    if !net.node_ports.contains(&n) {
                        return Err(invalid(
                            field,
                            n.to_string(),
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                net.node_ports.start(),
                                net.node_ports.end()
                            ),
                        ));
                    }
                    if used_ports.contains(&n) {
                        return Err(invalid(
                            field,
                            n.to_string(),
                            "provided port is already allocated".into(),
                        ));
                    }
                    used_ports.push(n);
                }
                None => {
                    let port = net
                        .node_ports
                        .clone()
                        .find(|n| !used_ports.contains(n))
                        .ok_or_else(|| {
                            ApiError::internal(format!(
                                "failed to allocate a nodePort: range {}-{} is full",
                                net.node_ports.start(),
                                net.node_ports.end()
                            ))
                        })?;
                    used_ports.push(port);
                    p["nodePort"] = port.into();
                }
            }
        }
        Ok(())
    }

    /// Allocation for an updated service, under the allocator lock that
    /// the caller holds until the write is done.
    async fn allocate_on_update(
        &self,
        kind: &dyn Kind,
        new: &mut Value,
        old: &Value,
    ) -> ApiResult<Option<tokio::sync::MutexGuard<'_, ()>>> {
        if kind.info().plural != "services" {
            return Ok(None);
        }
        let guard = self.allocator.lock().await;
        let name = object::name(old).to_owned();
        self.allocate_service(new, &name, Some(old)).await?;
        Ok(Some(guard))
    }

    /// What a fresh cluster has: the system namespaces, each with its
    /// `default` ServiceAccount. (The `kubernetes` service is
    /// [`crate::controllers::kubernetes_service`]'s.)
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let namespaces = self
            .registry
            .find("", "v1", "namespaces")
            .expect("namespaces served");
        for ns in ["default", "kube-system", "kube-node-lease", "kube-public"] {
            if self.get(namespaces.as_ref(), None, ns).await.is_err() {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                self.create(
                    namespaces.as_ref(),
                    None,
                    obj,
                    &Params::new(),
                    Output::Object,
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            }
        }
        self.bootstrap_priority_classes().await?;
        Ok(())
    }
}

/// Where a `continue` token resumes: the storage key of the last item returned.
/// The bytes stored for `obj`: in the storage version when the request's
/// version is another.
fn stored_form(kind: &dyn Kind, obj: &Value, stored: Option<&Value>) -> Vec<u8> {
    if kind.converted() {
        object::encode(&kind.to_storage(obj.clone(), stored))
    } else {
        object::encode(obj)
    }
}

fn key_of_last(
    items: &[Value],
    info: &crate::kinds::ResourceInfo,
    ns: Option<&str>,
) -> Option<String> {
    let last = items.last()?;
    let obj_ns = meta_str(last, "namespace").or(ns);
    Some(info.key(obj_ns, object::name(last)))
}

fn encode_continue(key: &str, rev: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<String> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    v["start"].as_str().map(str::to_owned).ok_or_else(bad)
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it (the
/// Python client sends `watch=True`).
/// A body that does not decode as its kind, in kube-apiserver's words.
fn cannot_handle(info: &ResourceInfo, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version {:?} cannot be handled as a {}: {e}",
        info.kind, info.version, info.kind
    ))
}

/// Fields the type does not know (`unknown`): a failed request under
/// `fieldValidation=Strict`, nothing under `Ignore`, warnings otherwise.
fn unknown_field_warnings(
    info: &ResourceInfo,
    unknown: &[String],
    params: &Params,
) -> ApiResult<Vec<String>> {
    let warnings: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match params.get("fieldValidation").map(String::as_str) {
        Some("Strict") if !warnings.is_empty() => Err(cannot_handle(
            info,
            format!("strict decoding error: {}", warnings.join(", ")),
        )),
        Some("Ignore") => Ok(Vec::new()),
        _ => Ok(warnings),
    }
}

pub fn param_bool(params: &Params, name: &str) -> Option<bool> {
    match params.get(name)?.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn is_dry_run(params: &Params) -> bool {
    params.get("dryRun").is_some_and(|d| d == "All")
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = format!("299 - {:?}", w).parse() {
            r.headers_mut().append("Warning", v);
        }
    }
    r
}

/// How often a deletion starts over when the object keeps changing under
/// it before it answers with a conflict.
const MAX_DELETE_ATTEMPTS: usize = 8;

/// The outcome of a write conditional on the revision read: `None` when
/// someone wrote in between.
fn unless_raced<T>(
    r: Result<T, StorageError>,
    subject: crate::status::Subject,
    name: &str,
) -> ApiResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StorageError::Conflict { .. }) => Ok(None),
        Err(e) => Err(ApiError::from_storage(subject, name, e)),
    }
}

/// Sets `apiVersion`/`kind` when missing; rejects a body of another kind.
fn check_type(kind: &dyn Kind, mut obj: Value) -> ApiResult<Value> {
    let info = kind.info();
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let want_av = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = want_av.clone().into(),
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = info.kind.into(),
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        _ => {}
    }
    Ok(obj)
}

async fn resource_handler(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: axum::body::Body,
) -> Response {
    let body = match body::read_limited(&headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (m, u) = (method.clone(), uri.clone());
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let response = api.handle(method, uri, headers, params, body).await;
    tracing::debug!(method = %m, uri = %u, content_type = ct, status = response.status().as_u16(), "request");
    response
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/api", get(discovery::api_versions))
        .route("/api/", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/apis/", get(discovery::api_groups))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_root))
        .route("/openapi/v3/{*path}", get(openapi::v3_group_version))
        .route("/apis/metrics.k8s.io/v1beta1", get(metrics::resources))
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(metrics::nodes))
        .route(
            "/apis/metrics.k8s.io/v1beta1/nodes/{name}",
            get(metrics::node),
        )
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(metrics::all_pods))
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            get(metrics::namespace_pods),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}",
            get(metrics::pod),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            any(stream_proxy::pod_exec),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/attach",
            any(stream_proxy::pod_attach),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            any(stream_proxy::pod_portforward),
        )
        .route(
            "/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
            axum::routing::post(crate::serviceaccount::token_request::create_token),
        )
        .merge(reviews::routes())
        .route("/api/{*rest}", any(resource_handler))
        .route("/apis/{*rest}", any(resource_handler))
        .fallback(|| async { ApiError::not_found_path().into_response() })
        // kube-apiserver's limit for every body; the resource handler applies
        // it itself, to answer with kube-apiserver's Status.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .layer(compression::layer())
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedStore;

    fn api() -> (tempfile::TempDir, Api) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
        (dir, Api::new(Arc::new(store), "127.0.0.1:6443".into()))
    }

    /// A store where someone else rewrites a key just before its first
    /// conditional delete, as a controller writing a status would.
    struct WriteBeforeDelete {
        inner: EmbeddedStore,
        raced: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Storage for WriteBeforeDelete {
        async fn get(&self, key: &str) -> crate::storage::Result<Option<crate::storage::KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(
            &self,
            prefix: &str,
        ) -> crate::storage::Result<(Vec<crate::storage::KeyValue>, u64)> {
            self.inner.list(prefix).await
        }
        async fn create(&self, key: &str, value: Vec<u8>) -> crate::storage::Result<u64> {
            self.inner.create(key, value).await
        }
        async fn update(
            &self,
            key: &str,
            value: Vec<u8>,
            expected: Option<u64>,
        ) -> crate::storage::Result<u64> {
            self.inner.update(key, value, expected).await
        }
        async fn delete(
            &self,
            key: &str,
            expected: Option<u64>,
        ) -> crate::storage::Result<crate::storage::KeyValue> {
            if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let current = self.inner.get(key).await?.expect("the key exists");
                self.inner.update(key, current.value, None).await?;
            }
            self.inner.delete(key, expected).await
        }
        async fn watch(
            &self,
            prefix: &str,
            after: u64,
        ) -> crate::storage::Result<crate::storage::WatchStream> {
            self.inner.watch(prefix, after).await
        }
        async fn current_revision(&self) -> crate::storage::Result<u64> {
            self.inner.current_revision().await
        }
    }

    #[tokio::test]
    async fn a_delete_raced_by_another_write_is_retried_unless_preconditioned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(WriteBeforeDelete {
            inner: EmbeddedStore::open(&dir.path().join("db")).unwrap(),
            raced: false.into(),
        });
        let api = Api::new(store.clone(), "127.0.0.1:6443".into());
        let cms = api.registry.find("", "v1", "configmaps").unwrap();
        let key = cms.info().key(Some("default"), "c");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}});
        let rev = store.create(&key, object::encode(&cm)).await.unwrap();
        // The caller's own precondition still conflicts.
        let pinned = json!({"preconditions": {"resourceVersion": (rev + 100).to_string()}});
        let e = api
            .delete(cms.as_ref(), Some("default"), "c", &pinned, &Params::new())
            .await
            .unwrap_err();
        assert_eq!(e.code, 409);
        let done = api
            .delete(
                cms.as_ref(),
                Some("default"),
                "c",
                &Value::Null,
                &Params::new(),
            )
            .await
            .unwrap();
        assert_eq!(done.status(), StatusCode::OK);
        assert!(store.raced.load(std::sync::atomic::Ordering::SeqCst));
        assert!(store.get(&key).await.unwrap().is_none());
    }

    /// (resource, namespace, name, subresource)
    type Routed = (String, Option<String>, Option<String>, Option<String>);

    fn target(api: &Api, path: &str) -> Option<Routed> {
        match api.route(path)? {
            Route::Resource(t) => Some((
                t.kind.info().plural.to_owned(),
                t.namespace,
                t.name,
                t.subresource,
            )),
            Route::Bindings { namespace } => Some(("bindings".into(), Some(namespace), None, None)),
            Route::Group(group) => Some((group, None, None, None)),
            Route::ResourceList { group, version } => {
                Some((format!("{group}/{version}"), None, None, None))
            }
        }
    }

    #[test]
    fn paths_route_to_resources_namespaces_and_subresources() {
        let (_d, api) = api();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            target(&api, "/api/v1/pods"),
            Some(("pods".into(), None, None, None))
        );
        assert_eq!(
            target(&api, "/api/v1/namespaces/default/pods/web/binding/"),
            Some(("pods".into(), s("default"), s("web"), s("binding")))
        );
        assert_eq!(
            target(&api, "/api/v1/namespaces/kube-system"),
            Some(("namespaces".into(), None, s("kube-system"), None))
        );
        assert_eq!(
            target(&api, "/api/v1/namespaces/dev/status"),
            Some(("namespaces".into(), None, s("dev"), s("status")))
        );
        assert_eq!(
            target(&api, "/api/v1/nodes/n1/status"),
            Some(("nodes".into(), None, s("n1"), s("status")))
        );
        assert_eq!(
            target(&api, "/api/v1/namespaces/dev/bindings"),
            Some(("bindings".into(), s("dev"), None, None))
        );
        assert_eq!(
            target(
                &api,
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
            ),
            Some(("leases".into(), s("kube-node-lease"), s("n1"), None))
        );
        assert_eq!(
            target(&api, "/apis/coordination.k8s.io/v1"),
            Some(("coordination.k8s.io/v1".into(), None, None, None))
        );
        assert!(target(&api, "/api/v2").is_none());
        assert!(target(&api, "/api/v1/widgets").is_none());
        assert!(
            target(&api, "/api/v1/pods/web").is_none(),
            "namespaced objects need their namespace"
        );
    }
}
