//! Wires the watches, caches and both controllers together and runs them
//! until shutdown.
//!
//! Every owned kind is watched once, cluster-wide (or in one namespace),
//! filtered by Nestor's `managed-by` label, slimmed before caching, and
//! shared by both controllers. Secrets, ConfigMaps and NetworkPolicies are
//! watched as metadata only; of the rest the caches keep no pod templates,
//! no selectors, and no managed fields unless someone else wrote the
//! object.

mod watch;

use crate::client::context::{Context, Stores};
use crate::client::metrics::{ControllerLabels, Metrics};
use crate::client::slim::{slim_child, slim_child_view, slim_meta};
use crate::model::cached::{CachedService, Workload};
use crate::model::names::{MANAGED_BY, selector_string};
use crate::model::settings::OperatorSettings;
use crate::reconcile::policy::error_policy;
use crate::reconcile::{nodepool, virtualcluster};
use futures::channel::mpsc::unbounded;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use nestor_crds::{NodePool, VirtualCluster};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};
use watch::{Deletions, SharedWatch};

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
    let scope = Scope {
        client: client.clone(),
        namespace,
    };
    let owned = watcher::Config::default()
        .labels(&selector_string(&BTreeMap::from([(
            MANAGED_BY.0.to_string(),
            MANAGED_BY.1.to_string(),
        )])))
        .any_semantic();
    let all = watcher::Config::default().any_semantic();
    // An Api of PartialObjectMeta watches metadata only: the API server
    // sends, and this process decodes, no Secret data, ConfigMap content or
    // policy rules.
    let mut secrets = SharedWatch::new(
        scope.api::<PartialObjectMeta<Secret>>(),
        owned.clone(),
        slim_child,
    );
    let mut config_maps = SharedWatch::new(
        scope.api::<PartialObjectMeta<ConfigMap>>(),
        owned.clone(),
        slim_child,
    );
    let mut services =
        SharedWatch::new(scope.api::<CachedService>(), owned.clone(), slim_child_view);
    let mut stateful_sets = SharedWatch::new(
        scope.api::<Workload<StatefulSet>>(),
        owned.clone(),
        slim_child_view,
    );
    let mut deployments = SharedWatch::new(
        scope.api::<Workload<Deployment>>(),
        owned.clone(),
        slim_child_view,
    );
    let mut network_policies = SharedWatch::new(
        scope.api::<PartialObjectMeta<NetworkPolicy>>(),
        owned,
        slim_child,
    );
    // A cluster or pool stored under a looser schema must not stop the
    // watch of every other one: it is cached as a stand-in and reported.
    let mut virtual_clusters =
        SharedWatch::readable(scope.api(), all.clone(), slim::<VirtualCluster>);
    let mut node_pools = SharedWatch::readable(scope.api(), all, slim::<NodePool>);

    // Each controller subscribes to what it needs; the watches start after.
    let (cluster_deletions, deleted_clusters) = unbounded();
    let (pool_deletions, deleted_pools) = unbounded();
    let vc_controller = Controller::for_shared_stream_with(
        virtual_clusters.subscribe(),
        virtual_clusters.store(),
        (),
    )
    .owns_shared_stream(secrets.subscribe())
    .owns_shared_stream(config_maps.subscribe())
    .owns_shared_stream(services.subscribe())
    .owns_shared_stream(stateful_sets.subscribe())
    .owns_shared_stream(deployments.subscribe())
    .owns_shared_stream(network_policies.subscribe())
    .reconcile_on(deleted_clusters);
    let pools_for_mapping = node_pools.store();
    let pool_controller =
        Controller::for_shared_stream_with(node_pools.subscribe(), node_pools.store(), ())
            .owns_shared_stream(secrets.subscribe())
            .owns_shared_stream(config_maps.subscribe())
            .owns_shared_stream(services.subscribe())
            .owns_shared_stream(stateful_sets.subscribe())
            .watches_shared_stream(
                virtual_clusters.subscribe(),
                move |vc: Arc<VirtualCluster>| pools_of(&pools_for_mapping, &vc),
            )
            .reconcile_on(deleted_pools);

    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: Stores {
            secrets: secrets.store(),
            config_maps: config_maps.store(),
            services: services.store(),
            stateful_sets: stateful_sets.store(),
            deployments: deployments.store(),
            network_policies: network_policies.store(),
            virtual_clusters: virtual_clusters.store(),
            node_pools: node_pools.store(),
        },
        metrics,
        recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
        settings,
        cluster_statuses: Default::default(),
        pool_statuses: Default::default(),
        nested: Default::default(),
    });
    let deletions = Deletions {
        clusters: cluster_deletions,
        pools: pool_deletions,
        cluster_statuses: ctx.cluster_statuses.clone(),
        pool_statuses: ctx.pool_statuses.clone(),
        nested: ctx.nested.clone(),
    };
    secrets.start(deletions.clone());
    config_maps.start(deletions.clone());
    services.start(deletions.clone());
    stateful_sets.start(deletions.clone());
    deployments.start(deletions.clone());
    network_policies.start(deletions.clone());
    virtual_clusters.start(deletions.clone());
    node_pools.start(deletions);

    // Wait for every cache before the first reconcile, so that "absent from
    // the cache" means "absent".
    let stores = &ctx.stores;
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
    let vc_controller = vc_controller
        .with_config(config.clone())
        .graceful_shutdown_on(on_shutdown(&shutdown_tx))
        .run(
            timed("virtualcluster", virtualcluster::reconcile),
            error_policy("virtualcluster"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let pool_controller = pool_controller
        .with_config(config)
        .graceful_shutdown_on(on_shutdown(&shutdown_tx))
        .run(
            timed("nodepool", nodepool::reconcile),
            error_policy("nodepool"),
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

/// Shrinks a watched VirtualCluster or NodePool before it is cached.
fn slim<K: Resource>(obj: &mut K) {
    slim_meta(obj.meta_mut());
}

/// Where the operator watches: every namespace, or one.
struct Scope {
    client: Client,
    namespace: Option<String>,
}

impl Scope {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
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
