//! Writes of owned children: created when new, server-side applied when
//! they change, skipped when the live object already is what Nestor last
//! wrote.
//!
//! Each child carries the hash of its desired form in an annotation. When
//! the cached live object has the same hash, and no other writer changed
//! it since Nestor's last write, nothing is sent: a reconcile that has
//! nothing to change sends no write.

use crate::build::Holdable;
use crate::client::context::Context;
use crate::client::error::{Error, Result, code_and_reason};
use crate::model::cached::CachedForm;
use crate::model::hash::desired_hash;
use crate::model::names::{APPLIED_HASH, FIELD_MANAGER, patch_params};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

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
                // Times have one-second steps: a write in the same second
                // as Nestor's may have come after it.
                (Some(theirs), Some(ours)) => theirs >= ours,
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
    /// write releases it (`held` is its held form) and the cache holds it
    /// in exactly that form, as this build of Nestor makes it (the same
    /// hash), so that the released form has the same fields: then
    /// `Release`. A child missing, or held in the form of another build
    /// (whose fields may differ), is created, or read and adopted, as any
    /// other.
    pub fn releasing<K, C>(store: &Store<C>, held: Option<&K>) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
        C: Resource<DynamicType = ()> + Clone,
    {
        let Some(held) = held else {
            return Self::Create;
        };
        let meta = held.meta();
        let key = ObjectRef::new(meta.name.as_deref().unwrap_or_default())
            .within(meta.namespace.as_deref().unwrap_or_default());
        let hash = desired_hash(held);
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

/// True when the live object is what Nestor last wrote of `hash` and no
/// one else changed it since.
fn is_current(live: &ObjectMeta, hash: &str) -> bool {
    let live_hash = live.annotations.as_ref().and_then(|a| a.get(APPLIED_HASH));
    live_hash.map(String::as_str) == Some(hash) && !changed_by_someone_else(live)
}

/// A child as a builder makes it: a namespaced object Nestor writes.
pub trait Desired:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Serialize + Debug
{
}

impl<K> Desired for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Serialize + Debug
{
}

/// What a cache keeps of a child, and what a write of it asks back.
pub trait Cached:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + CachedForm
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<C> Cached for C where
    C: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + CachedForm
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Writes a child Nestor holds back: released with one apply when the
/// cache holds its held form (see [`FirstWrite::releasing`]), otherwise as
/// [`apply_owned`] writes any child.
pub async fn apply_holdable<K: Desired, C: Cached>(
    ctx: &Context,
    store: &Store<C>,
    child: Holdable<K>,
) -> Result<Applied<C>> {
    let Holdable { desired, held } = child;
    let first = FirstWrite::releasing(store, held.as_ref());
    apply_owned(ctx, store, desired, first).await
}

/// Writes `desired` unless the cached live object already matches it: a
/// child not in the cache is created or applied as `first` says; one that
/// differs is read first (the cache may lag behind Nestor's own write, and
/// a create's fields must be adopted), then applied.
///
/// `C` is what the cache holds of `K`: `K` itself (slimmed), a narrow view
/// of it, or only its metadata (`PartialObjectMeta<K>`), in which case the
/// API server returns only metadata for every request too.
pub async fn apply_owned<K: Desired, C: Cached>(
    ctx: &Context,
    store: &Store<C>,
    mut desired: K,
    first: FirstWrite,
) -> Result<Applied<C>> {
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
pub(crate) struct Child<'a> {
    ctx: &'a Context,
    kind: &'static str,
    name: &'a str,
    namespace: &'a str,
    request: kube::core::Request,
}

impl<'a> Child<'a> {
    /// The child of kind `K` that `meta` names.
    pub(crate) fn of<K: Resource<DynamicType = ()>>(
        ctx: &'a Context,
        meta: &'a ObjectMeta,
    ) -> Self {
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
            .get_or_create(&crate::client::metrics::WriteLabels {
                verb: "apply",
                kind: self.kind,
            })
            .inc();
        Applied::Unchanged(live)
    }

    /// Creates the child with Nestor's field manager; `None` when it
    /// already exists (nothing is overwritten).
    pub(crate) async fn create<C: CachedForm + DeserializeOwned>(
        &self,
        body: Vec<u8>,
    ) -> Result<Option<C>> {
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
    pub(crate) async fn get<C: CachedForm + DeserializeOwned>(&self) -> Result<Option<C>> {
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
    pub(crate) async fn adopt<C: CachedForm + DeserializeOwned>(
        &self,
        live: &ObjectMeta,
    ) -> Result<()> {
        let Some(patch) = adopt_created_fields(live) else {
            return Ok(());
        };
        self.ctx.metrics.write("patch", self.kind);
        self.patch::<C, ()>(&patch_params(), &Patch::Json(patch), "adopting")
            .await
            .map(drop)
    }

    pub(crate) async fn apply<C: CachedForm + DeserializeOwned, K: Serialize + Debug>(
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

/// Asks the API server to answer with the object's metadata only.
const METADATA_ONLY: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
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

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
