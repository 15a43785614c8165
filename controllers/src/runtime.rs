//! Wires the watches, caches and both controllers together and runs them
//! until shutdown.
//!
//! Every owned kind is watched once, cluster-wide, filtered by Nestor's
//! `managed-by` label, slimmed before caching, and shared by both
//! controllers. Secrets, ConfigMaps and NetworkPolicies are watched as
//! metadata only; of the rest the caches keep no pod templates, no
//! selectors, and no managed fields unless someone else wrote the object.

use crate::apply::{slim_child, slim_child_view, slim_meta};
use crate::cached::{CachedService, Workload};
use crate::context::{Context, OperatorSettings, Stores, WrittenStatus};
use crate::meta::MANAGED_BY;
use crate::metrics::{ControllerLabels, Metrics};
use crate::{nodepool, virtualcluster};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use nestor_crds::{NodePool, VirtualCluster};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

/// Where the deletion of an owned object is sent, as its owner: shared
/// subscriptions carry only objects that exist, so a child deleted by hand
/// would otherwise wait for the next resync to be repaired.
/// A deleted cluster's last written status is forgotten: no reconcile
/// follows a deletion.
#[derive(Clone)]
struct Deletions {
    clusters: UnboundedSender<ObjectRef<VirtualCluster>>,
    pools: UnboundedSender<ObjectRef<NodePool>>,
    statuses: WrittenStatus,
}

impl Deletions {
    fn deleted<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.owner_of(obj);
        if K::kind(&()) == VirtualCluster::kind(&())
            && let (Some(uid), Ok(mut statuses)) = (obj.meta().uid.as_ref(), self.statuses.lock())
        {
            statuses.remove(uid);
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

/// Starts one shared watch; returns its cache and one trigger stream per
/// subscriber. The watch is driven by a spawned task until the process ends.
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
fn shared_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
    subscribers: usize,
    deletions: Deletions,
) -> (Store<K>, Vec<Triggers<K>>)
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
    let (store, writer) = reflector::store();
    let (fan_out, triggers) = FanOut::new(subscribers);
    let mut unchanged = Unchanged::default();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .filter(move |event| futures::future::ready(!unchanged.is_repeat(event)))
        .reflect(writer);
    tokio::spawn(route(stream, store.clone(), fan_out, deletions));
    (store, triggers)
}

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
type Triggers<K> = UnboundedReceiver<Arc<K>>;

/// Sends every object that a watch applies to each of its subscribers.
///
/// Unbounded: each controller moves triggers straight into its scheduler,
/// which keeps one entry per object, so a queue only holds what arrived
/// since the controller's task last ran.
struct FanOut<K> {
    subscribers: Vec<UnboundedSender<Arc<K>>>,
}

impl<K> FanOut<K> {
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

fn slim<K: Resource>(obj: &mut K) {
    slim_meta(obj.meta_mut());
}

/// Runs both controllers until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: OperatorSettings,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    concurrency: u16,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api = |client: &Client| match &namespace {
        Some(ns) => Scope::Namespace(client.clone(), ns.clone()),
        None => Scope::All(client.clone()),
    };
    let (cluster_deletions, deleted_clusters) = unbounded();
    let (pool_deletions, deleted_pools) = unbounded();
    let written_status = WrittenStatus::default();
    let deletions = Deletions {
        clusters: cluster_deletions,
        pools: pool_deletions,
        statuses: written_status.clone(),
    };
    let owned = watcher::Config::default()
        .labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
        .any_semantic();
    let all = watcher::Config::default().any_semantic();
    // An Api of PartialObjectMeta watches metadata only: the API server
    // sends, and this process decodes, no Secret data, ConfigMap content or
    // policy rules.
    let (secrets, mut secret_subs) = shared_watch(
        api(&client).api::<PartialObjectMeta<Secret>>(),
        owned.clone(),
        slim_child,
        2,
        deletions.clone(),
    );
    let (config_maps, mut cm_subs) = shared_watch(
        api(&client).api::<PartialObjectMeta<ConfigMap>>(),
        owned.clone(),
        slim_child,
        2,
        deletions.clone(),
    );
    let (services, mut svc_subs) = shared_watch(
        api(&client).api::<CachedService>(),
        owned.clone(),
        slim_child_view,
        2,
        deletions.clone(),
    );
    let (stateful_sets, mut sts_subs) = shared_watch(
        api(&client).api::<Workload<StatefulSet>>(),
        owned.clone(),
        slim_child_view,
        2,
        deletions.clone(),
    );
    let (deployments, mut deploy_subs) = shared_watch(
        api(&client).api::<Workload<Deployment>>(),
        owned.clone(),
        slim_child_view,
        1,
        deletions.clone(),
    );
    let (network_policies, mut np_subs) = shared_watch(
        api(&client).api::<PartialObjectMeta<NetworkPolicy>>(),
        owned,
        slim_child,
        1,
        deletions.clone(),
    );
    let (virtual_clusters, mut vc_subs) = shared_watch(
        api(&client).api::<VirtualCluster>(),
        all.clone(),
        slim::<VirtualCluster>,
        2,
        deletions.clone(),
    );
    let (node_pools, mut pool_subs) = shared_watch(
        api(&client).api::<NodePool>(),
        all,
        slim::<NodePool>,
        1,
        deletions.clone(),
    );

    let stores = Stores {
        secrets,
        config_maps,
        services,
        stateful_sets,
        deployments,
        network_policies,
        virtual_clusters: virtual_clusters.clone(),
        node_pools: node_pools.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: stores.clone(),
        metrics,
        recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
        settings,
        written_status,
    });

    // Wait for every cache before the first reconcile, so that "absent from
    // the cache" means "absent".
    for (kind, ready) in [
        ("Secret", stores.secrets.wait_until_ready().boxed()),
        ("ConfigMap", stores.config_maps.wait_until_ready().boxed()),
        ("Service", stores.services.wait_until_ready().boxed()),
        (
            "StatefulSet",
            stores.stateful_sets.wait_until_ready().boxed(),
        ),
        ("Deployment", stores.deployments.wait_until_ready().boxed()),
        (
            "NetworkPolicy",
            stores.network_policies.wait_until_ready().boxed(),
        ),
        (
            "VirtualCluster",
            stores.virtual_clusters.wait_until_ready().boxed(),
        ),
        ("NodePool", stores.node_pools.wait_until_ready().boxed()),
    ] {
        if ready.await.is_err() {
            warn!(kind, "cache writer dropped before it was ready");
            return;
        }
    }
    info!("caches are ready; starting controllers");

    let config = ControllerConfig::default().concurrency(concurrency);
    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let on_shutdown = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let vc_controller =
        Controller::for_shared_stream_with(take(&mut vc_subs), virtual_clusters, ())
            .with_config(config.clone())
            .owns_shared_stream(take(&mut secret_subs))
            .owns_shared_stream(take(&mut cm_subs))
            .owns_shared_stream(take(&mut svc_subs))
            .owns_shared_stream(take(&mut sts_subs))
            .owns_shared_stream(take(&mut deploy_subs))
            .owns_shared_stream(take(&mut np_subs))
            .reconcile_on(deleted_clusters)
            .graceful_shutdown_on(on_shutdown(&shutdown_tx))
            .run(
                timed("virtualcluster", virtualcluster::reconcile),
                virtualcluster::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));

    let pools_for_mapping = node_pools.clone();
    let pool_controller = Controller::for_shared_stream_with(take(&mut pool_subs), node_pools, ())
        .with_config(config)
        .owns_shared_stream(take(&mut secret_subs))
        .owns_shared_stream(take(&mut cm_subs))
        .owns_shared_stream(take(&mut svc_subs))
        .owns_shared_stream(take(&mut sts_subs))
        .watches_shared_stream(take(&mut vc_subs), move |vc: Arc<VirtualCluster>| {
            pools_of(&pools_for_mapping, &vc)
        })
        .reconcile_on(deleted_pools)
        .graceful_shutdown_on(on_shutdown(&shutdown_tx))
        .run(
            timed("nodepool", nodepool::reconcile),
            nodepool::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(());
    });
    futures::join!(vc_controller, pool_controller);
    info!("controllers stopped");
}

/// Where the operator watches: every namespace, or one.
enum Scope {
    All(Client),
    Namespace(Client, String),
}

impl Scope {
    fn api<K>(self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match self {
            Scope::All(client) => Api::all(client),
            Scope::Namespace(client, ns) => Api::namespaced(client, &ns),
        }
    }
}

fn take<K>(subs: &mut Vec<Triggers<K>>) -> Triggers<K> {
    subs.pop().expect("one subscription per controller")
}

/// The pools that join a virtual cluster.
fn pools_of(pools: &Store<NodePool>, vc: &VirtualCluster) -> Vec<ObjectRef<NodePool>> {
    nodepool::pools_joining(pools, vc)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

type BoxedReconcile = std::pin::Pin<Box<dyn Future<Output = crate::Result<Action>> + Send>>;

/// Wraps a reconciler with the reconcile counter and duration histogram.
fn timed<K, F, Fut>(
    controller: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> BoxedReconcile
where
    K: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = crate::Result<Action>> + Send + 'static,
{
    move |obj, ctx| {
        Box::pin(async move {
            let labels = ControllerLabels { controller };
            let start = Instant::now();
            let result = reconcile(obj, ctx.clone()).await;
            ctx.metrics.reconciles.get_or_create(&labels).inc();
            ctx.metrics
                .duration
                .get_or_create(&labels)
                .observe(start.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cached::Workload;
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
                statuses: Default::default(),
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
    fn a_deleted_cluster_s_written_status_is_forgotten() {
        let (clusters, _c) = unbounded();
        let (pools, _p) = unbounded();
        let deletions = Deletions {
            clusters,
            pools,
            statuses: Default::default(),
        };
        let vc = crate::cluster::fixtures::vc(serde_json::json!({}));
        let uid = vc.metadata.uid.clone().unwrap();
        deletions
            .statuses
            .lock()
            .unwrap()
            .insert(uid.clone(), Default::default());
        // Another kind's deletion with the same UID leaves it.
        let mut child = deployment("demo-scheduler", 0);
        child.metadata.uid = Some(uid.clone());
        deletions.deleted(&child);
        assert!(deletions.statuses.lock().unwrap().contains_key(&uid));
        deletions.deleted(&vc);
        assert!(deletions.statuses.lock().unwrap().is_empty());
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
