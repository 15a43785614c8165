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
use crate::context::{Context, OperatorSettings, Stores};
use crate::meta::MANAGED_BY;
use crate::metrics::{ControllerLabels, Metrics};
use crate::{nodepool, virtualcluster};
use futures::channel::mpsc::UnboundedSender;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
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

/// Capacity of each shared watch's fan-out buffer.
const SHARED_BUFFER: usize = 1024;

/// Where the deletion of an owned object is sent, as its owner: shared
/// subscriptions carry only objects that exist, so a child deleted by hand
/// would otherwise wait for the next resync to be repaired.
#[derive(Clone)]
struct Deletions {
    clusters: UnboundedSender<ObjectRef<VirtualCluster>>,
    pools: UnboundedSender<ObjectRef<NodePool>>,
}

impl Deletions {
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

/// Starts one shared watch; returns its cache and the subscriptions asked
/// for. The watch is driven by a spawned task until the process ends.
fn shared_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
    subscribers: usize,
    deletions: Deletions,
) -> (Store<K>, Vec<ReflectHandle<K>>)
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
    let (store, writer) = reflector::store_shared(SHARED_BUFFER);
    let handles = (0..subscribers)
        .filter_map(|_| writer.subscribe())
        .collect();
    let mut unchanged = Unchanged::default();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .filter(move |event| futures::future::ready(!unchanged.is_repeat(event)))
        .reflect_shared(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Delete(obj)) => deletions.owner_of(&obj),
                Ok(_) => {}
                Err(e) => warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
            }
        }
    });
    (store, handles)
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
    let (cluster_deletions, deleted_clusters) = futures::channel::mpsc::unbounded();
    let (pool_deletions, deleted_pools) = futures::channel::mpsc::unbounded();
    let deletions = Deletions {
        clusters: cluster_deletions,
        pools: pool_deletions,
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
        written_status: Default::default(),
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

fn take<K: Resource<DynamicType = ()> + Clone + 'static>(
    subs: &mut Vec<ReflectHandle<K>>,
) -> ReflectHandle<K> {
    subs.pop().expect("one subscription per controller")
}

/// The pools that join a virtual cluster.
fn pools_of(pools: &Store<NodePool>, vc: &VirtualCluster) -> Vec<ObjectRef<NodePool>> {
    let name = vc.meta().name.as_deref().unwrap_or_default();
    let namespace = vc.meta().namespace.as_deref();
    pools
        .state()
        .into_iter()
        .filter(|p| p.spec.cluster_ref.name == name && p.meta().namespace.as_deref() == namespace)
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
