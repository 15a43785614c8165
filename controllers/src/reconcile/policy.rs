//! What both reconcilers share: how long they wait, how they react to
//! errors, how a status is written (only when it changed, and never again
//! from a cache that has not seen the last write), and how an invalid spec
//! is reported.

use crate::client::context::{Context, StatusGuard};
use crate::client::error::{Error, Result};
use crate::client::metrics::ErrorLabels;
use crate::model::names::patch_params;
use crate::model::status::READY;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use nestor_crds::{NodePool, NodePoolStatus, VirtualCluster, VirtualClusterStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How often a settled cluster is looked at again, to repair drift the
/// watches could not see. It reads only caches and writes nothing when
/// nothing changed.
pub const RESYNC: Duration = Duration::from_secs(600);
/// How soon a reconcile that failed for a passing reason is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// How soon a reconcile that failed for a reason only a human can fix (a
/// damaged CA) is tried again.
pub const RETRY_NEEDS_HUMAN: Duration = Duration::from_secs(300);
/// How soon a pool's cleanup that is under way (a drain, node pods
/// stopping) is looked at again.
pub const CLEANUP_POLL: Duration = Duration::from_secs(2);
/// How long a reconcile refused because its namespace is being deleted
/// waits before it looks again (the deletion itself ends it sooner).
pub const NAMESPACE_DELETION_WAIT: Duration = Duration::from_secs(30);
/// How often a settled pool looks at its nested cluster again: a kubelet's
/// serving certificate request can arrive just after its node turned
/// Ready (reads only; nothing is written when nothing changed).
pub const POOL_SETTLED_RECHECK: Duration = Duration::from_secs(30);
/// How often a pool whose nested Nodes are still changing looks again
/// (nested Nodes are not watched).
pub const POOL_CHANGING_RECHECK: Duration = Duration::from_secs(3);
/// How long a pool waits for its cluster's PKI to exist (its creation
/// wakes the pool sooner).
pub const POOL_PKI_WAIT: Duration = Duration::from_secs(10);

/// The one error policy of both controllers: a namespace being deleted is
/// waited for, a cleanup under way is polled, a failure is counted and
/// retried, slowly when it needs a human.
pub fn error_policy<K>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        if error.namespace_terminating() {
            debug!(controller, error = %error, "the namespace is being deleted; waiting for it");
            return Action::requeue(NAMESPACE_DELETION_WAIT);
        }
        if error.is_pending() {
            return Action::requeue(CLEANUP_POLL);
        }
        let labels = ErrorLabels {
            controller,
            error: error.metric_label(),
        };
        ctx.metrics.failures.get_or_create(&labels).inc();
        warn!(controller, error = %error, "reconcile failed");
        if error.needs_human() {
            Action::requeue(RETRY_NEEDS_HUMAN)
        } else {
            Action::requeue(RETRY)
        }
    }
}

/// A kind whose status Nestor computes and writes.
pub trait Reported:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Status: Clone + PartialEq + Serialize;
    /// The kind, as a metric label and in errors.
    const KIND: &'static str;

    fn status(&self) -> Option<&Self::Status>;
    fn observed_generation(status: &Self::Status) -> Option<i64>;
    fn conditions(status: &Self::Status) -> &[Condition];
    /// Where the statuses last written for this kind are kept.
    fn written(ctx: &Context) -> &StatusGuard<Self::Status>;
}

impl Reported for VirtualCluster {
    type Status = VirtualClusterStatus;
    const KIND: &'static str = "VirtualCluster";

    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn observed_generation(status: &Self::Status) -> Option<i64> {
        status.observed_generation
    }
    fn conditions(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    fn written(ctx: &Context) -> &StatusGuard<Self::Status> {
        &ctx.cluster_statuses
    }
}

impl Reported for NodePool {
    type Status = NodePoolStatus;
    const KIND: &'static str = "NodePool";

    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn observed_generation(status: &Self::Status) -> Option<i64> {
        status.observed_generation
    }
    fn conditions(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    fn written(ctx: &Context) -> &StatusGuard<Self::Status> {
        &ctx.pool_statuses
    }
}

/// The status `obj` had before this reconcile: the one Nestor last wrote
/// when the cache has not caught up with it yet.
pub fn previous_status<K: Reported>(ctx: &Context, obj: &K) -> Option<K::Status> {
    let uid = obj.meta().uid.as_deref().unwrap_or_default();
    K::written(ctx)
        .previous(uid, obj.status(), K::observed_generation)
        .or_else(|| obj.status().cloned())
}

/// Computes `obj`'s status from the previous one and patches it when it
/// differs. Returns the status, written or not.
pub async fn update_status<K: Reported>(
    ctx: &Context,
    obj: &K,
    compute: impl FnOnce(Option<&K::Status>) -> K::Status,
) -> Result<K::Status> {
    let previous = previous_status(ctx, obj);
    let status = compute(previous.as_ref());
    if previous.as_ref() == Some(&status) {
        return Ok(status);
    }
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.metrics.write("patch_status", K::KIND);
    // A merge patch keeps what it does not name: fields the new status
    // drops (an image override, a snapshot of an earlier change) are
    // named, as null.
    let to_json = |s: Option<&K::Status>| serde_json::to_value(s).unwrap_or_default();
    let patch = merge_patch(&to_json(previous.as_ref()), &to_json(Some(&status)));
    api.patch_status(
        &name,
        &patch_params(),
        &Patch::Merge(serde_json::json!({ "status": patch })),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: K::KIND,
        namespace,
        name,
        source,
    })?;
    let uid = obj.meta().uid.as_deref().unwrap_or_default();
    K::written(ctx).record(uid, status.clone());
    Ok(status)
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: objects
/// are patched key by key, a key `new` lacks is null, anything else is
/// replaced whole.
fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, value) in new {
                let field = match old.get(key) {
                    Some(before) => merge_patch(before, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), field);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// The message of a status's `Ready` condition.
pub fn ready_message<K: Reported>(status: Option<&K::Status>) -> Option<&str> {
    K::conditions(status?)
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.message.as_str())
}

/// The one path of an invalid spec: a Warning Event when the message is
/// new, the status computed with it, and nothing else: nothing provisioned
/// is touched, and the controller waits for the user's change.
pub async fn report_invalid<K: Reported>(
    ctx: &Context,
    obj: &K,
    message: &str,
    compute: impl FnOnce(Option<&K::Status>) -> K::Status,
) -> Result<Action> {
    let previous = previous_status(ctx, obj);
    if ready_message::<K>(previous.as_ref()) != Some(message) {
        ctx.publish(obj, EventType::Warning, "InvalidSpec", message.into())
            .await;
    }
    update_status(ctx, obj, compute).await?;
    Ok(Action::await_change())
}

/// The path of an object that does not decode (see
/// [`crate::model::readable`]): reported like an invalid spec. The API
/// server may refuse its status, since it validates the stored spec again
/// on every write; then the Warning Event alone says why, and the
/// reconciler waits for the object to change.
pub async fn report_unreadable<K: Reported>(
    ctx: &Context,
    obj: &K,
    why: &str,
    compute: impl FnOnce(Option<&K::Status>) -> K::Status,
) -> Result<Action> {
    match report_invalid(ctx, obj, why, compute).await {
        Err(Error::PatchStatus {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 422 => {
            debug!(
                kind = K::KIND,
                "the API server refuses a status for an object its schema no longer admits; the Event says why"
            );
            Ok(Action::await_change())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn a_merge_patch_names_what_the_new_status_drops() {
        let old = json!({"version": "1.34.5", "images": {"apiServer": "x"}, "upgrade": {"snapshot": "s", "step": "RolledBack"}});
        let new = json!({"version": "1.34.5", "images": {}, "upgrade": {"step": "Snapshot"}, "phase": "Ready"});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"version": "1.34.5", "images": {"apiServer": null}, "upgrade": {"snapshot": null, "step": "Snapshot"}, "phase": "Ready"})
        );
        assert_eq!(
            merge_patch(&json!(null), &new),
            new,
            "a first status is written whole"
        );
    }
}
