//! Shared watches: each kind Nestor reads is watched once, cached once,
//! and fanned out to every controller that subscribed to it.

use crate::client::context::StatusGuard;
use crate::client::kept::NestedClients;
use crate::model::readable::{Readable, StandIn};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::{Stream, StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use nestor_crds::{NodePool, NodePoolStatus, VirtualCluster, VirtualClusterStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tracing::warn;

/// Where the deletion of an owned object is sent, as its owner: shared
/// subscriptions carry only objects that exist, so a child deleted by hand
/// would otherwise wait for the next resync to be repaired.
/// A deleted cluster's last written status is forgotten: no reconcile
/// follows a deletion.
#[derive(Clone)]
pub(super) struct Deletions {
    pub clusters: UnboundedSender<ObjectRef<VirtualCluster>>,
    pub pools: UnboundedSender<ObjectRef<NodePool>>,
    pub cluster_statuses: StatusGuard<VirtualClusterStatus>,
    pub pool_statuses: StatusGuard<NodePoolStatus>,
    pub nested: NestedClients,
}

impl Deletions {
    fn deleted<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.owner_of(obj);
        let meta = obj.meta();
        let uid = meta.uid.as_deref().unwrap_or_default();
        let kind = K::kind(&());
        if kind == VirtualCluster::kind(&()) {
            self.cluster_statuses.forget(uid);
            self.nested.forget(
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            );
        } else if kind == NodePool::kind(&()) {
            self.pool_statuses.forget(uid);
        }
    }

    fn owner_of<K: Resource>(&self, obj: &K) {
        let namespace = obj.meta().namespace.clone().unwrap_or_default();
        for owner in obj
            .meta()
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.controller == Some(true))
        {
            // A closed channel means the controllers are shutting down.
            match owner.kind.as_str() {
                "VirtualCluster" => {
                    let _ = self
                        .clusters
                        .unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
                }
                "NodePool" => {
                    let _ = self
                        .pools
                        .unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
                }
                _ => {}
            }
        }
    }
}

/// One shared watch, before it starts: controllers subscribe to it, then
/// it is started and returns its cache.
///
/// The fan-out is Nestor's own rather than kube-runtime's shared streams
/// (`reflect_shared`): those hand each subscriber a reference to look up in
/// the cache, and when the object is deleted before the subscriber reads
/// the reference (an update then a deletion, as when a namespace goes),
/// the subscriber's stream returns `Pending` without a waker and is never
/// polled again: that controller stops hearing of the kind, and once the
/// buffer fills the watch itself stops. Here each subscriber is sent the
/// cached object itself (a shared `Arc`, no copy), so nothing is looked up
/// later and nothing can go missing.
pub(super) struct SharedWatch<K: Resource<DynamicType = ()> + Clone + 'static> {
    events: Box<dyn FnOnce() -> Events<K> + Send>,
    slim: fn(&mut K),
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    subscribers: Vec<UnboundedSender<Arc<K>>>,
}

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static,
{
    /// A watch of `api`, whose objects are shrunk by `slim` before they are
    /// cached.
    pub(super) fn new(api: Api<K>, config: watcher::Config, slim: fn(&mut K)) -> Self {
        Self::of(
            Box::new(move || watcher(api, config).default_backoff().boxed()),
            slim,
        )
    }

    /// A watch of `api` whose objects that do not decode are cached as
    /// their stand-ins (see [`crate::model::readable`]) instead of
    /// stopping the watch.
    pub(super) fn readable(api: Api<Readable<K>>, config: watcher::Config, slim: fn(&mut K)) -> Self
    where
        K: StandIn,
    {
        let events = move || {
            watcher(api, config)
                .default_backoff()
                .map_ok(|event| match event {
                    watcher::Event::Apply(Readable(o)) => watcher::Event::Apply(o),
                    watcher::Event::Delete(Readable(o)) => watcher::Event::Delete(o),
                    watcher::Event::InitApply(Readable(o)) => watcher::Event::InitApply(o),
                    watcher::Event::Init => watcher::Event::Init,
                    watcher::Event::InitDone => watcher::Event::InitDone,
                })
                .boxed()
        };
        Self::of(Box::new(events), slim)
    }

    fn of(events: Box<dyn FnOnce() -> Events<K> + Send>, slim: fn(&mut K)) -> Self {
        let (store, writer) = reflector::store();
        Self {
            events,
            slim,
            store,
            writer,
            subscribers: Vec::new(),
        }
    }

    /// The cache the watch fills (empty until it runs).
    pub(super) fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A new subscription: every object the watch applies, from its start.
    pub(super) fn subscribe(&mut self) -> Triggers<K> {
        let (sender, receiver) = unbounded();
        self.subscribers.push(sender);
        receiver
    }

    /// Starts the watch in a task of its own, which runs until the process
    /// ends; returns its cache.
    pub(super) fn start(self, deletions: Deletions) -> Store<K> {
        let mut unchanged = Unchanged::default();
        let stream = (self.events)()
            .modify(self.slim)
            .filter(move |event| futures::future::ready(!unchanged.is_repeat(event)))
            .reflect(self.writer);
        let fan_out = FanOut {
            subscribers: self.subscribers,
        };
        tokio::spawn(route(stream, self.store.clone(), fan_out, deletions));
        self.store
    }
}

/// A watch's events, as decoded.
type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Passes each event of a reflected watch on: applied objects to the
/// subscribers, deletions to the owners' controllers.
async fn route<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    cache: Store<K>,
    fan_out: FanOut<K>,
    deletions: Deletions,
) where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            // The cache has applied the event by the time it is seen here.
            Ok(watcher::Event::Apply(obj)) => {
                if let Some(cached) = cache.get(&ObjectRef::from_obj(&obj)) {
                    fan_out.send(&cached);
                }
            }
            Ok(watcher::Event::InitDone) => cache.state().iter().for_each(|o| fan_out.send(o)),
            Ok(watcher::Event::Delete(obj)) => deletions.deleted(&obj),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
        }
    }
}

/// The objects one controller hears of from one shared watch.
pub(super) type Triggers<K> = UnboundedReceiver<Arc<K>>;

/// Sends every object that a watch applies to each of its subscribers.
///
/// Unbounded: each controller moves triggers straight into its scheduler,
/// which keeps one entry per object, so a queue only holds what arrived
/// since the controller's task last ran.
struct FanOut<K> {
    subscribers: Vec<UnboundedSender<Arc<K>>>,
}

impl<K> FanOut<K> {
    #[cfg(test)]
    fn new(subscribers: usize) -> (Self, Vec<Triggers<K>>) {
        let (senders, receivers) = (0..subscribers).map(|_| unbounded()).unzip();
        (
            FanOut {
                subscribers: senders,
            },
            receivers,
        )
    }

    fn send(&self, obj: &Arc<K>) {
        for subscriber in &self.subscribers {
            // A closed channel means that controller is shutting down.
            let _ = subscriber.unbounded_send(obj.clone());
        }
    }
}

/// Recognises watch events that change nothing Nestor keeps: an object whose
/// slimmed form is the one last seen (the controller-manager rewriting a
/// Deployment's conditions, say) is neither cached again nor reconciled
/// for. Remembers one hash per object, keyed by a hash of its name.
///
/// Only forms slimmed of their `resourceVersion` (owned children) can
/// repeat; an object that keeps it (a VirtualCluster or NodePool) is new
/// at every event and passes without being hashed.
#[derive(Default)]
struct Unchanged {
    seen: HashMap<u64, u64>,
}

impl Unchanged {
    fn is_repeat<K: Resource + Serialize>(
        &mut self,
        event: &Result<watcher::Event<K>, watcher::Error>,
    ) -> bool {
        let key = |obj: &K| hash_of(&(obj.meta().namespace.as_deref(), obj.meta().name.as_deref()));
        // Serializing a cached object cannot fail.
        let content = |obj: &K| hash_of(&serde_json::to_vec(obj).unwrap_or_default());
        let versioned = |obj: &K| obj.meta().resource_version.is_some();
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) if versioned(obj) => {
                false
            }
            Ok(watcher::Event::Apply(obj)) => {
                let content = content(obj);
                self.seen.insert(key(obj), content) == Some(content)
            }
            Ok(watcher::Event::InitApply(obj)) => {
                self.seen.insert(key(obj), content(obj));
                false
            }
            Ok(watcher::Event::Delete(obj)) => {
                self.seen.remove(&key(obj));
                false
            }
            // A fresh list rebuilds the cache: start over.
            Ok(watcher::Event::Init) => {
                self.seen.clear();
                false
            }
            Ok(watcher::Event::InitDone) | Err(_) => false,
        }
    }
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cached::Workload;
    use crate::model::inputs::fixtures;
    use k8s_openapi::api::apps::v1::Deployment;

    fn deployment(name: &str, ready: i32) -> Workload<Deployment> {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "status": {"readyReplicas": ready}
        }))
        .unwrap()
    }

    #[test]
    fn only_events_that_change_the_cached_form_pass() {
        let mut unchanged = Unchanged::default();
        let apply = |d| Ok(watcher::Event::Apply(d));
        assert!(
            !unchanged.is_repeat(&apply(deployment("a", 0))),
            "first sight"
        );
        assert!(unchanged.is_repeat(&apply(deployment("a", 0))), "same form");
        assert!(
            !unchanged.is_repeat(&apply(deployment("b", 0))),
            "another object"
        );
        assert!(
            !unchanged.is_repeat(&apply(deployment("a", 1))),
            "a real change"
        );
        assert!(!unchanged.is_repeat(&Ok(watcher::Event::Delete(deployment("a", 1)))));
        assert!(
            !unchanged.is_repeat(&apply(deployment("a", 1))),
            "back after deletion"
        );
        assert!(!unchanged.is_repeat(&Ok(watcher::Event::<Workload<Deployment>>::Init)));
        assert!(
            !unchanged.is_repeat(&apply(deployment("b", 0))),
            "a new list starts over"
        );
    }

    fn owned(name: &str, owner: &str) -> Workload<Deployment> {
        let mut d = deployment(name, 0);
        d.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "nestor.dev/v1alpha1".into(),
                kind: "VirtualCluster".into(),
                name: owner.into(),
                uid: "u".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        d
    }

    /// An object updated then deleted before its subscribers read it (a
    /// namespace going) must not cost them the events that follow: with
    /// kube-runtime's shared streams it did, and the operator stopped
    /// hearing of new VirtualClusters.
    #[tokio::test]
    async fn subscribers_hear_of_objects_that_follow_a_deleted_one() {
        let (store, writer) = reflector::store();
        let (fan_out, mut triggers) = FanOut::new(2);
        let (clusters, mut deleted_clusters) = unbounded();
        let (pools, _deleted_pools) = unbounded();
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(owned("listed", "one"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(owned("gone", "one"))),
            Ok(watcher::Event::Delete(owned("gone", "one"))),
            Ok(watcher::Event::Apply(owned("next", "two"))),
        ]);
        // The whole watch is routed before any subscriber reads.
        route(
            events.reflect(writer),
            store,
            fan_out,
            Deletions {
                clusters,
                pools,
                cluster_statuses: Default::default(),
                pool_statuses: Default::default(),
                nested: Default::default(),
            },
        )
        .await;
        for trigger in triggers.drain(..) {
            // Read the way a controller reads its triggers.
            let mut selected = futures::stream::SelectAll::new();
            selected.push(trigger);
            let names: Vec<_> = selected
                .map(|d| d.metadata.name.clone().unwrap_or_default())
                .collect()
                .await;
            assert_eq!(names, ["listed", "gone", "next"]);
        }
        let owner = deleted_clusters.next().await.expect("the owner is told");
        assert_eq!(owner, ObjectRef::new("one").within("ns"));
    }

    #[test]
    fn a_deleted_object_s_written_status_is_forgotten() {
        let (clusters, _c) = unbounded();
        let (pools, _p) = unbounded();
        let deletions = Deletions {
            clusters,
            pools,
            cluster_statuses: Default::default(),
            pool_statuses: Default::default(),
            nested: Default::default(),
        };
        let vc = fixtures::vc(serde_json::json!({}));
        let uid = vc.metadata.uid.clone().unwrap();
        deletions.cluster_statuses.record(&uid, Default::default());
        let pool = fixtures::pool();
        let pool_uid = pool.metadata.uid.clone().unwrap();
        deletions
            .pool_statuses
            .record(&pool_uid, Default::default());
        // Another kind's deletion with the same UID leaves it.
        let mut child = deployment("demo-scheduler", 0);
        child.metadata.uid = Some(uid.clone());
        deletions.deleted(&child);
        assert_eq!(deletions.cluster_statuses.len(), 1);
        deletions.deleted(&vc);
        assert!(deletions.cluster_statuses.is_empty());
        assert_eq!(deletions.pool_statuses.len(), 1);
        deletions.deleted(&pool);
        assert!(deletions.pool_statuses.is_empty());
    }

    #[test]
    fn objects_that_keep_their_resource_version_are_not_hashed() {
        let mut unchanged = Unchanged::default();
        let mut versioned = deployment("c", 0);
        versioned.metadata.resource_version = Some("7".into());
        for _ in 0..2 {
            let event = Ok(watcher::Event::Apply(versioned.clone()));
            assert!(!unchanged.is_repeat(&event));
        }
        assert!(unchanged.seen.is_empty(), "nothing remembered");
    }
}
