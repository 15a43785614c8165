//! Writes of owned children: created when new, server-side applied when
//! they change, skipped when the live object already is what Nestor last
//! wrote.
//!
//! Each child carries the hash of its desired form in an annotation. When
//! the cached live object has the same hash, and no other writer changed
//! it since Nestor's last write, nothing is sent: a reconcile that has
//! nothing to change sends no write.

use crate::context::Context;
use crate::error::{Error, Result, code_and_reason};
use crate::meta::{APPLIED_HASH, FIELD_MANAGER};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::fmt::Debug;
use std::sync::Arc;

/// The prefix of the annotations Nestor reads from its children.
const NESTOR_ANNOTATIONS: &str = "nestor.dev/";

/// Managers whose writes to the main resource of a child are expected and
/// are not drift (the workload controllers annotate their objects).
const SYSTEM_MANAGERS: &[&str] = &[
    "kube-controller-manager",
    "kube-scheduler",
    "kube-apiserver",
];

/// What an apply did.
pub enum Applied<K> {
    /// The live object already matched; nothing was sent.
    Unchanged(Arc<K>),
    /// A server-side apply was sent; this is the object it returned.
    Written(Arc<K>),
}

impl<K> Applied<K> {
    pub fn object(&self) -> &Arc<K> {
        match self {
            Applied::Unchanged(o) | Applied::Written(o) => o,
        }
    }
}

/// The hash of a desired object, as stored in its annotation.
pub fn desired_hash<K: Serialize>(obj: &K) -> String {
    // Serializing a k8s-openapi object cannot fail.
    let bytes = serde_json::to_vec(obj).expect("object serializes");
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// True when a writer other than Nestor and the system controllers changed
/// the main resource after Nestor's last apply.
pub fn changed_by_someone_else(meta: &ObjectMeta) -> bool {
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    let main = |e: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
        e.subresource.as_deref().unwrap_or("").is_empty()
    };
    let ours = entries
        .iter()
        .filter(main)
        .filter(|e| e.manager.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|e| e.time.clone())
        .max();
    entries.iter().filter(main).any(|e| {
        let manager = e.manager.as_deref().unwrap_or("");
        manager != FIELD_MANAGER
            && !SYSTEM_MANAGERS.contains(&manager)
            && match (&e.time, &ours) {
                (Some(theirs), Some(ours)) => theirs > ours,
                _ => true,
            }
    })
}

/// How a child that does not exist yet is first written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstWrite {
    /// Created (a POST), which costs the API server less than an apply (a
    /// Deployment 1.7 against 2.6 ms of its CPU: `nestor-bench writes`).
    /// For a child in the form it keeps until the spec changes: the first
    /// later apply first adopts the fields the create gave Nestor
    /// ([`adopt_created_fields`]).
    Create,
    /// Applied: for a child in a passing form whose changes may drop
    /// fields (a node pool's StatefulSet, which follows its scale and its
    /// pool's spec), so that no change needs an adoption.
    Apply,
    /// For the form that follows a held one Nestor created (a Deployment
    /// started once its API server serves): created when missing, like
    /// `Create`. When the cache holds the held form, the change is applied
    /// straight away: the held form has the same fields with other values,
    /// so nothing the create gave Nestor needs pruning (the next change
    /// adopts it), and a read would only confirm the cache.
    Release,
}

impl FirstWrite {
    /// How to write a child Nestor holds back: `Create`, unless this
    /// write `releases` it and the cache holds it in exactly the form
    /// `held()` (built only then), as this build of Nestor makes it (the
    /// same hash), so that the released form has the same fields: then
    /// `Release`. A child missing, or held in the form of another build
    /// (whose fields may differ), is created, or read and adopted, as any
    /// other.
    pub fn releasing<K, C>(store: &Store<C>, releases: bool, held: impl FnOnce() -> K) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
        C: Resource<DynamicType = ()> + Clone,
    {
        if !releases {
            return Self::Create;
        }
        let held = held();
        let meta = held.meta();
        let key = ObjectRef::new(meta.name.as_deref().unwrap_or_default())
            .within(meta.namespace.as_deref().unwrap_or_default());
        let hash = desired_hash(&held);
        let cached_hash = store.get(&key).and_then(|live| {
            let annotations = live.meta().annotations.as_ref()?;
            annotations.get(APPLIED_HASH).cloned()
        });
        if cached_hash == Some(hash) {
            Self::Release
        } else {
            Self::Create
        }
    }
}

/// What the caches keep of a kind, and so what a write asks back: the
/// metadata only, or the whole object (decoded into a narrow view).
pub trait CachedForm {
    const METADATA_ONLY: bool;
}

impl<K> CachedForm for PartialObjectMeta<K> {
    const METADATA_ONLY: bool = true;
}

/// True when the live object is what Nestor last wrote of `hash` and no
/// one else changed it since.
fn is_current(live: &ObjectMeta, hash: &str) -> bool {
    let live_hash = live.annotations.as_ref().and_then(|a| a.get(APPLIED_HASH));
    live_hash.map(String::as_str) == Some(hash) && !changed_by_someone_else(live)
}

/// Writes `desired` unless the cached live object already matches it: a
/// child not in the cache is created or applied as `first` says; one that
/// differs is read first (the cache may lag behind Nestor's own write, and
/// a create's fields must be adopted), then applied.
///
/// `C` is what the cache holds of `K`: `K` itself (slimmed), a narrow view
/// of it, or only its metadata (`PartialObjectMeta<K>`), in which case the
/// API server returns only metadata for every request too.
pub async fn apply_owned<K, C>(
    ctx: &Context,
    store: &Store<C>,
    mut desired: K,
    first: FirstWrite,
) -> Result<Applied<C>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Serialize + Debug,
    C: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + CachedForm
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    debug_assert_eq!(K::kind(&()), C::kind(&()));
    let hash = desired_hash(&desired);
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH.into(), hash.clone());
    let child = Child::of::<K>(ctx, desired.meta());
    let exists = match store.get(&ObjectRef::new(child.name).within(child.namespace)) {
        Some(live) if is_current(live.meta(), &hash) => return Ok(child.unchanged(live)),
        Some(_) => true,
        None => false,
    };
    if !exists && first != FirstWrite::Apply {
        // Serializing a k8s-openapi object cannot fail.
        let body = serde_json::to_vec(&desired).expect("an object serializes");
        if let Some(created) = child.create::<C>(body).await? {
            return Ok(Applied::Written(Arc::new(created)));
        }
        // It exists: the cache has not seen it yet, or another writer made it.
    }
    // It exists (in the cache, or the create found it): read it first. It
    // may already be what Nestor wants (a cache behind Nestor's own
    // write), and a create's fields must be adopted before an apply. A
    // released child that the cache holds needs neither.
    let read_first = match first {
        FirstWrite::Create => true,
        FirstWrite::Apply => exists,
        FirstWrite::Release => !exists,
    };
    if read_first && let Some(fresh) = child.get::<C>().await? {
        if is_current(fresh.meta(), &hash) {
            return Ok(child.unchanged(Arc::new(fresh)));
        }
        child.adopt::<C>(fresh.meta()).await?;
    }
    let written = child.apply::<C, K>(&desired).await?;
    Ok(Applied::Written(Arc::new(written)))
}

/// The requests about one child, answered in the form its cache keeps.
struct Child<'a> {
    ctx: &'a Context,
    kind: &'static str,
    name: &'a str,
    namespace: &'a str,
    request: kube::core::Request,
}

impl<'a> Child<'a> {
    /// The child of kind `K` that `meta` names.
    fn of<K: Resource<DynamicType = ()>>(ctx: &'a Context, meta: &'a ObjectMeta) -> Self {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        Self {
            ctx,
            kind: static_kind::<K>(),
            name: meta.name.as_deref().unwrap_or_default(),
            namespace,
            request: kube::core::Request::new(K::url_path(&(), Some(namespace))),
        }
    }

    /// The error of a failed request. Of a Secret it keeps only the HTTP
    /// status, never the server's message (which may quote the data).
    fn failed(&self, verb: &'static str) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| {
            if self.kind == "Secret" {
                let (code, reason) = code_and_reason(&source);
                return Error::WriteSecret {
                    namespace: self.namespace.into(),
                    name: self.name.into(),
                    code,
                    reason,
                };
            }
            Error::ApplyChild {
                verb,
                kind: self.kind,
                namespace: self.namespace.into(),
                name: self.name.into(),
                source,
            }
        }
    }

    fn unchanged<C>(&self, live: Arc<C>) -> Applied<C> {
        self.ctx
            .metrics
            .skipped_applies
            .get_or_create(&crate::metrics::WriteLabels {
                verb: "apply",
                kind: self.kind,
            })
            .inc();
        Applied::Unchanged(live)
    }

    /// Creates the child with Nestor's field manager; `None` when it
    /// already exists (nothing is overwritten).
    async fn create<C: CachedForm + DeserializeOwned>(&self, body: Vec<u8>) -> Result<Option<C>> {
        let params = kube::api::PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let mut request = self
            .request
            .create(&params, body)
            .map_err(kube::Error::BuildRequest)
            .map_err(self.failed("creating"))?;
        if C::METADATA_ONLY {
            request.headers_mut().insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static(METADATA_ONLY),
            );
        }
        request.extensions_mut().insert("create");
        self.ctx.metrics.write("create", self.kind);
        match self.ctx.client.request::<C>(request).await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(e) => Err(self.failed("creating")(e)),
        }
    }

    /// `None` when the child does not exist.
    async fn get<C: CachedForm + DeserializeOwned>(&self) -> Result<Option<C>> {
        let gp = kube::api::GetParams::default();
        let request = if C::METADATA_ONLY {
            self.request.get_metadata(self.name, &gp)
        } else {
            self.request.get(self.name, &gp)
        };
        let mut request = request
            .map_err(kube::Error::BuildRequest)
            .map_err(self.failed("reading"))?;
        request.extensions_mut().insert("get");
        match self.ctx.client.request::<C>(request).await {
            Ok(live) => Ok(Some(live)),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
            Err(e) => Err(self.failed("reading")(e)),
        }
    }

    /// Adopts the fields a create gave Nestor ([`adopt_created_fields`]),
    /// if the live child, as read, shows such a create.
    async fn adopt<C: CachedForm + DeserializeOwned>(&self, live: &ObjectMeta) -> Result<()> {
        let Some(patch) = adopt_created_fields(live) else {
            return Ok(());
        };
        self.ctx.metrics.write("patch", self.kind);
        self.patch::<C, ()>(&PatchParams::default(), &Patch::Json(patch), "adopting")
            .await
            .map(drop)
    }

    async fn apply<C: CachedForm + DeserializeOwned, K: Serialize + Debug>(
        &self,
        desired: &K,
    ) -> Result<C> {
        self.ctx.metrics.write("apply", self.kind);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.patch(&params, &Patch::Apply(desired), "applying")
            .await
    }

    async fn patch<C: CachedForm + DeserializeOwned, P: Serialize + Debug>(
        &self,
        params: &PatchParams,
        patch: &Patch<P>,
        verb: &'static str,
    ) -> Result<C> {
        let request = if C::METADATA_ONLY {
            self.request.patch_metadata(self.name, params, patch)
        } else {
            self.request.patch(self.name, params, patch)
        };
        let mut request = request
            .map_err(kube::Error::BuildRequest)
            .map_err(self.failed(verb))?;
        request.extensions_mut().insert("patch");
        self.ctx
            .client
            .request::<C>(request)
            .await
            .map_err(self.failed(verb))
    }
}

/// Applies a Secret Nestor decided to (re)issue, adopting first what a
/// create gave Nestor. Errors keep only the HTTP status, never the
/// server's message. Every response carries only metadata: the keys just
/// sent stay out of this process's memory.
pub async fn apply_secret(ctx: &Context, secret: &Secret) -> Result<()> {
    let child = Child::of::<Secret>(ctx, &secret.metadata);
    if let Some(live) = child.get::<PartialObjectMeta<Secret>>().await? {
        child
            .adopt::<PartialObjectMeta<Secret>>(&live.metadata)
            .await?;
    }
    child
        .apply::<PartialObjectMeta<Secret>, _>(secret)
        .await
        .map(drop)
}

/// The patch that makes the fields Nestor's create gave it (an `Update`
/// entry of its manager, which server-side apply shares with its `Apply`
/// entry and never prunes) into Nestor's applied fields, as `kubectl`
/// upgrades client-side-applied objects; `None` when there is no such
/// entry. The patch first tests that the entry is still where it was read.
pub fn adopt_created_fields(meta: &ObjectMeta) -> Option<json_patch::Patch> {
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    let ours = |e: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry,
                operation: &str| {
        e.manager.as_deref() == Some(FIELD_MANAGER)
            && e.operation.as_deref() == Some(operation)
            && e.subresource.as_deref().unwrap_or("").is_empty()
    };
    let index = entries.iter().position(|e| ours(e, "Update"))?;
    let entry = format!("/metadata/managedFields/{index}");
    let mut ops = vec![
        serde_json::json!({"op": "test", "path": format!("{entry}/manager"), "value": FIELD_MANAGER}),
        serde_json::json!({"op": "test", "path": format!("{entry}/operation"), "value": "Update"}),
    ];
    // With an apply entry already there (an apply that came before this
    // upgrade existed), the fields it lacks are dropped from Nestor's
    // ownership instead: a merge of the two sets is not worth its code.
    if entries.iter().any(|e| ours(e, "Apply")) {
        ops.push(serde_json::json!({"op": "remove", "path": entry}));
    } else {
        ops.push(serde_json::json!({"op": "replace", "path": format!("{entry}/operation"), "value": "Apply"}));
    }
    // These operations are well-formed JSON patch operations.
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

/// Creates a Secret that must not exist yet. Returns false when it already
/// exists (another writer, or a cache that has not seen it): nothing is
/// overwritten. Like an apply, the response carries only metadata.
pub async fn create_secret(ctx: &Context, secret: &Secret) -> Result<bool> {
    // Serializing a k8s-openapi object cannot fail.
    let body = serde_json::to_vec(secret).expect("a Secret serializes");
    Child::of::<Secret>(ctx, &secret.metadata)
        .create::<PartialObjectMeta<Secret>>(body)
        .await
        .map(|created| created.is_some())
}

/// Asks the API server to answer with the object's metadata only.
const METADATA_ONLY: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

/// Reads a Secret with its data (the caches hold none). Errors keep only the
/// HTTP status.
pub async fn read_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name).await.map_err(|e| {
        let (code, reason) = code_and_reason(&e);
        Error::ReadSecret {
            namespace: namespace.into(),
            name: name.into(),
            code,
            reason,
        }
    })
}

/// The kinds Nestor writes, as metric labels.
pub const KINDS: &[&str] = &[
    "Secret",
    "ConfigMap",
    "Service",
    "StatefulSet",
    "Deployment",
    "NetworkPolicy",
    "VirtualCluster",
    "NodePool",
];

fn static_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    let kind = K::kind(&());
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("Other")
}

/// Shrinks a watched VirtualCluster or NodePool before it is cached: drops
/// its managed fields, labels and creation time (nothing reads them) and
/// the last-applied annotation.
pub fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    // Looked up by name; selected by label on the server.
    meta.labels = None;
    meta.creation_timestamp = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Shrinks the metadata of an owned child before it is cached, keeping only
/// what reconcilers read: its name, generation, owners and Nestor's own
/// annotations. Who wrote it last is reduced to its verdict: the managed
/// fields are kept only when they show a write by someone else after
/// Nestor's last apply ([`changed_by_someone_else`] reads the same answer
/// from what is kept).
pub fn slim_child_meta(meta: &mut ObjectMeta) {
    if changed_by_someone_else(meta) {
        // Only who wrote and when: the field sets go.
        for entry in meta.managed_fields.iter_mut().flatten() {
            entry.fields_v1 = None;
            entry.fields_type = None;
            entry.api_version = None;
        }
    } else {
        meta.managed_fields = None;
    }
    meta.labels = None;
    meta.creation_timestamp = None;
    // Caches are looked up by name; nothing reads a child's identity.
    meta.uid = None;
    meta.resource_version = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(NESTOR_ANNOTATIONS));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Slims an owned child cached as a view ([`crate::cached`]): its metadata.
pub fn slim_child_view<K: Resource>(obj: &mut K) {
    slim_child_meta(obj.meta_mut());
}

/// Slims an owned child of which only the metadata is cached.
pub fn slim_child<K>(obj: &mut PartialObjectMeta<K>) {
    slim_child_meta(&mut obj.metadata);
    obj.types = None;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    fn entry(manager: &str, time: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            time: Some(Time(time.parse().unwrap())),
            subresource: subresource.map(Into::into),
            operation: Some("Update".into()),
            ..ManagedFieldsEntry::default()
        }
    }

    fn operations(patch: &json_patch::Patch) -> Vec<serde_json::Value> {
        let value = serde_json::to_value(patch).unwrap();
        value.as_array().unwrap().clone()
    }

    pub(crate) type MockHandle = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    /// A context whose client is served by the returned handle.
    pub(crate) fn mock_context() -> (Context, MockHandle) {
        use kube::runtime::reflector::store::Writer;
        let (service, handle) = tower_test::mock::pair();
        let client = kube::Client::new(service, "default");
        let stores = crate::context::Stores {
            secrets: Writer::default().as_reader(),
            config_maps: Writer::default().as_reader(),
            services: Writer::default().as_reader(),
            stateful_sets: Writer::default().as_reader(),
            deployments: Writer::default().as_reader(),
            network_policies: Writer::default().as_reader(),
            virtual_clusters: Writer::default().as_reader(),
            node_pools: Writer::default().as_reader(),
        };
        let reporter = kube::runtime::events::Reporter {
            controller: "nestor-operator".into(),
            instance: None,
        };
        let ctx = Context {
            client: client.clone(),
            stores,
            metrics: Arc::new(crate::metrics::Metrics::register(&mut Default::default())),
            recorder: kube::runtime::events::Recorder::new(client, reporter),
            settings: Default::default(),
            written_status: Default::default(),
        };
        (ctx, handle)
    }

    fn desired_config_map() -> k8s_openapi::api::core::v1::ConfigMap {
        let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
        cm.metadata.name = Some("vc-kube-proxy".into());
        cm.metadata.namespace = Some("ns".into());
        cm.data = Some([("k".to_string(), "v".to_string())].into());
        cm
    }

    /// What the client asked: method, path and query, content type, accept.
    pub(crate) type Asked = (String, String, String, String);

    /// Answers the client's requests in turn with `responses` (status,
    /// body), then hangs up, so that one more request fails; returns what
    /// the client asked.
    pub(crate) fn serve(
        mut handle: MockHandle,
        responses: Vec<(u16, serde_json::Value)>,
    ) -> tokio::task::JoinHandle<Vec<Asked>> {
        tokio::spawn(async move {
            let mut asked = Vec::new();
            for (status, body) in responses {
                let (request, send) = handle.next_request().await.expect("a request");
                let header = |name| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                asked.push((
                    request.method().to_string(),
                    request.uri().to_string(),
                    header(http::header::CONTENT_TYPE),
                    header(http::header::ACCEPT),
                ));
                let body = kube::client::Body::from(serde_json::to_vec(&body).unwrap());
                send.send_response(http::Response::builder().status(status).body(body).unwrap());
            }
            asked
        })
    }

    /// An API server's refusal.
    fn failure(code: u16, reason: &str, message: &str) -> (u16, serde_json::Value) {
        let status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": reason, "code": code, "message": message});
        (code, status)
    }

    fn already_exists() -> (u16, serde_json::Value) {
        failure(409, "AlreadyExists", "")
    }

    fn config_map_meta(managers: &[(&str, &str)]) -> serde_json::Value {
        let entries: Vec<_> = managers
            .iter()
            .map(|(manager, operation)| {
                serde_json::json!({"manager": manager, "operation": operation,
                    "apiVersion": "v1", "time": "2026-01-01T00:00:00Z"})
            })
            .collect();
        serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "vc-kube-proxy", "namespace": "ns",
                "annotations": {APPLIED_HASH: "stale"}, "managedFields": entries}})
    }

    /// Writes the test ConfigMap as `first` says, the server answering
    /// with `responses`; returns what was written and what the client asked.
    async fn write_config_map(
        ctx: &Context,
        handle: MockHandle,
        responses: Vec<(u16, serde_json::Value)>,
        first: FirstWrite,
    ) -> (
        Applied<PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>>,
        Vec<Asked>,
    ) {
        let server = serve(handle, responses);
        let written = apply_owned(ctx, &ctx.stores.config_maps, desired_config_map(), first)
            .await
            .unwrap();
        (written, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_new_child_is_created_once() {
        let (ctx, handle) = mock_context();
        let created = config_map_meta(&[(FIELD_MANAGER, "Update")]);
        let (written, asked) =
            write_config_map(&ctx, handle, vec![(201, created)], FirstWrite::Create).await;
        assert!(matches!(written, Applied::Written(_)));
        let (method, uri, _, accept) = &asked[0];
        assert_eq!(method, "POST");
        assert_eq!(
            uri,
            "/api/v1/namespaces/ns/configmaps?&fieldManager=nestor-operator"
        );
        assert_eq!(accept, METADATA_ONLY, "only metadata comes back");
    }

    #[tokio::test]
    async fn a_child_that_exists_is_adopted_then_applied() {
        let (ctx, handle) = mock_context();
        let created = config_map_meta(&[(FIELD_MANAGER, "Update")]);
        let adopted = config_map_meta(&[(FIELD_MANAGER, "Apply")]);
        let responses = vec![
            already_exists(),
            (200, created),
            (200, adopted.clone()),
            (200, adopted),
        ];
        let (written, asked) = write_config_map(&ctx, handle, responses, FirstWrite::Create).await;
        assert!(matches!(written, Applied::Written(_)));
        let methods: Vec<_> = asked.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(methods, ["POST", "GET", "PATCH", "PATCH"]);
        assert_eq!(asked[1].1, "/api/v1/namespaces/ns/configmaps/vc-kube-proxy");
        assert_eq!(asked[2].2, "application/json-patch+json", "the adoption");
        assert_eq!(asked[3].2, "application/apply-patch+yaml", "then the apply");
        assert!(
            asked[3].1.contains("fieldManager=nestor-operator")
                && asked[3].1.contains("force=true")
        );
        assert!(asked.iter().all(|a| a.3 == METADATA_ONLY));
    }

    #[tokio::test]
    async fn a_child_already_as_desired_is_not_written() {
        let (ctx, handle) = mock_context();
        let mut live = config_map_meta(&[(FIELD_MANAGER, "Update")]);
        live["metadata"]["annotations"][APPLIED_HASH] = desired_hash(&desired_config_map()).into();
        let responses = vec![already_exists(), (200, live)];
        let (written, asked) = write_config_map(&ctx, handle, responses, FirstWrite::Create).await;
        assert!(
            matches!(written, Applied::Unchanged(_)),
            "a cache behind its own create"
        );
        assert_eq!(asked.len(), 2);
    }

    #[tokio::test]
    async fn a_passing_form_is_applied_at_once() {
        let (ctx, handle) = mock_context();
        let applied = config_map_meta(&[(FIELD_MANAGER, "Apply")]);
        let (_, asked) =
            write_config_map(&ctx, handle, vec![(200, applied)], FirstWrite::Apply).await;
        let (method, _, content_type, _) = &asked[0];
        assert_eq!(
            (method.as_str(), content_type.as_str()),
            ("PATCH", "application/apply-patch+yaml")
        );
    }

    /// A store holding `live` only.
    fn store_of<K>(live: K) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        use kube::runtime::{reflector::store::Writer, watcher};
        let mut writer = Writer::default();
        writer.apply_watcher_event(&watcher::Event::Apply(live));
        writer.as_reader()
    }

    #[tokio::test]
    async fn a_released_child_is_applied_at_once_and_created_when_missing() {
        let (mut ctx, handle) = mock_context();
        let held: PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap> =
            serde_json::from_value(config_map_meta(&[])).unwrap();
        ctx.stores.config_maps = store_of(held);
        let applied = config_map_meta(&[(FIELD_MANAGER, "Update"), (FIELD_MANAGER, "Apply")]);
        let (_, asked) =
            write_config_map(&ctx, handle, vec![(200, applied)], FirstWrite::Release).await;
        let (method, _, content_type, _) = &asked[0];
        assert_eq!(
            (asked.len(), method.as_str(), content_type.as_str()),
            (1, "PATCH", "application/apply-patch+yaml"),
            "neither read nor adopted: the held form had the same fields"
        );

        // Not in the cache: created, as a lasting form is.
        let (ctx, handle) = mock_context();
        let created = config_map_meta(&[(FIELD_MANAGER, "Update")]);
        let (_, asked) =
            write_config_map(&ctx, handle, vec![(201, created)], FirstWrite::Release).await;
        let methods: Vec<_> = asked.into_iter().map(|a| a.0).collect();
        assert_eq!(methods, ["POST"]);
    }

    #[test]
    fn only_a_child_held_in_this_builds_form_is_released() {
        let held = desired_config_map();
        let cached = |hash: &str| {
            let mut live = config_map_meta(&[]);
            live["metadata"]["annotations"][APPLIED_HASH] = hash.into();
            let live: PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap> =
                serde_json::from_value(live).unwrap();
            store_of(live)
        };
        let this_build = cached(&desired_hash(&held));
        type CachedConfigMap = PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>;
        let releasing = |store: &Store<CachedConfigMap>, releases| {
            FirstWrite::releasing(store, releases, || held.clone())
        };
        assert_eq!(releasing(&this_build, true), FirstWrite::Release);
        // Not released by this write: written as any held child.
        assert_eq!(releasing(&this_build, false), FirstWrite::Create);
        // Held by another build, whose fields may differ: read and adopted.
        assert_eq!(releasing(&cached("other"), true), FirstWrite::Create);
        let empty: Store<CachedConfigMap> =
            kube::runtime::reflector::store::Writer::default().as_reader();
        assert_eq!(releasing(&empty, true), FirstWrite::Create);
    }

    #[tokio::test]
    async fn a_refused_secret_write_keeps_only_the_status() {
        let (ctx, handle) = mock_context();
        let refused = failure(422, "Invalid", "data[tls.key]: c2VjcmV0LWtleQ== is invalid");
        let server = serve(handle, vec![failure(404, "NotFound", ""), refused]);
        let mut secret = Secret::default();
        secret.metadata.name = Some("vc-apiserver-certs".into());
        secret.metadata.namespace = Some("ns".into());
        let error = apply_secret(&ctx, &secret).await.unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(
            matches!(error, Error::WriteSecret { code: 422, .. }),
            "{text}"
        );
        assert!(!text.contains("c2VjcmV0LWtleQ"), "{text}");
        let methods: Vec<_> = server.await.unwrap().into_iter().map(|a| a.0).collect();
        assert_eq!(
            methods,
            ["GET", "PATCH"],
            "nothing to adopt: applied at once"
        );
    }

    #[test]
    fn created_fields_are_adopted_as_applied_ones() {
        let applied = |mut e: ManagedFieldsEntry| {
            e.operation = Some("Apply".into());
            e
        };
        let at = "2026-01-01T00:00:00Z";
        let meta = |entries| ObjectMeta {
            managed_fields: Some(entries),
            ..ObjectMeta::default()
        };
        // Applied from the start, or not Nestor's: nothing to do.
        assert!(
            adopt_created_fields(&meta(vec![applied(entry(FIELD_MANAGER, at, None))])).is_none()
        );
        assert!(adopt_created_fields(&meta(vec![entry("kubectl", at, None)])).is_none());
        // Created by Nestor: the entry (second here) becomes its apply entry.
        let patch = adopt_created_fields(&meta(vec![
            entry("kube-controller-manager", at, None),
            entry(FIELD_MANAGER, at, None),
        ]))
        .expect("a patch");
        let ops = operations(&patch);
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(ops[0]["path"], "/metadata/managedFields/1/manager");
        assert_eq!(ops[1]["value"], "Update");
        assert_eq!(ops[2]["op"], "replace");
        assert_eq!(ops[2]["path"], "/metadata/managedFields/1/operation");
        assert_eq!(ops[2]["value"], "Apply");
        // Both entries: the created one goes.
        let patch = adopt_created_fields(&meta(vec![
            applied(entry(FIELD_MANAGER, at, None)),
            entry(FIELD_MANAGER, at, None),
        ]))
        .expect("a patch");
        let ops = operations(&patch);
        assert_eq!(ops[2]["op"], "remove");
        assert_eq!(ops[2]["path"], "/metadata/managedFields/1");
    }

    #[test]
    fn drift_means_a_newer_foreign_write_to_the_main_resource() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(FIELD_MANAGER, "2026-01-01T00:00:00Z", None),
                entry("kube-controller-manager", "2026-01-02T00:00:00Z", None),
                entry("kubectl", "2026-01-02T00:00:00Z", Some("scale")),
            ]),
            ..ObjectMeta::default()
        };
        assert!(!changed_by_someone_else(&meta));
        meta.managed_fields.as_mut().unwrap().push(entry(
            "kubectl-edit",
            "2026-01-03T00:00:00Z",
            None,
        ));
        assert!(changed_by_someone_else(&meta));
        meta.managed_fields.as_mut().unwrap().push(entry(
            FIELD_MANAGER,
            "2026-01-04T00:00:00Z",
            None,
        ));
        assert!(
            !changed_by_someone_else(&meta),
            "our later apply settles it"
        );
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let mut a = k8s_openapi::api::core::v1::ConfigMap::default();
        a.metadata.name = Some("x".into());
        let h1 = desired_hash(&a);
        assert_eq!(h1, desired_hash(&a.clone()));
        a.data = Some([("k".to_string(), "v".to_string())].into());
        assert_ne!(h1, desired_hash(&a));
    }

    #[test]
    fn cached_children_keep_only_what_reconcilers_read() {
        let mut meta = ObjectMeta {
            name: Some("c".into()),
            uid: Some("u".into()),
            resource_version: Some("7".into()),
            generation: Some(3),
            labels: Some([("a".to_string(), "b".to_string())].into()),
            annotations: Some(
                [
                    (APPLIED_HASH.to_string(), "h".to_string()),
                    (
                        "deployment.kubernetes.io/revision".to_string(),
                        "2".to_string(),
                    ),
                ]
                .into(),
            ),
            managed_fields: Some(vec![
                entry(FIELD_MANAGER, "2026-01-01T00:00:00Z", None),
                entry("kube-controller-manager", "2026-01-02T00:00:00Z", None),
            ]),
            ..ObjectMeta::default()
        };
        slim_child_meta(&mut meta);
        assert_eq!(meta.name.as_deref(), Some("c"));
        assert_eq!(meta.generation, Some(3));
        assert!(meta.uid.is_none() && meta.resource_version.is_none() && meta.labels.is_none());
        assert_eq!(
            meta.annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            [APPLIED_HASH]
        );
        assert!(
            meta.managed_fields.is_none(),
            "no foreign write: no entries kept"
        );
        assert!(!changed_by_someone_else(&meta));
    }

    #[test]
    fn a_foreign_write_survives_slimming() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(FIELD_MANAGER, "2026-01-01T00:00:00Z", None),
                entry("kubectl-edit", "2026-01-02T00:00:00Z", None),
            ]),
            ..ObjectMeta::default()
        };
        slim_child_meta(&mut meta);
        assert!(changed_by_someone_else(&meta));
        assert!(
            meta.managed_fields
                .iter()
                .flatten()
                .all(|e| e.fields_v1.is_none())
        );
    }
}
