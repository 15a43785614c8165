//! The `NodePool` reconciler: a thin driver. It gives the pool's cluster
//! an owner reference to the pool, validates (pure), writes the pool's
//! bootstrap Secret, node configuration, Service and StatefulSet (built in
//! [`crate::build::node`]), does the pool's work inside the nested cluster
//! (its bootstrap token, drains on scale-down, serving certificates) and
//! computes its status (pure). Its finalizer tidies the nested cluster
//! when the pool is deleted.

mod bootstrap;
mod nested_pass;

use nested_pass::{NodePods, nested_pass};

use crate::build::node::bootstrap::IssuedToken;
use crate::build::node::config::{desired_node_config_map, node_config_hash};
use crate::build::node::owner::desired_pool_owner;
use crate::build::node::statefulset::{
    desired_node_service, desired_node_statefulset, desired_node_template, node_template_hash,
};
use crate::build::pki_secrets::BUNDLE_FINGERPRINT;
use crate::client::apply::{FirstWrite, apply_owned};
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::secrets::read_secret;
use crate::client::{nested, nested_nodes};
use crate::model::cached::Workload;
use crate::model::images;
use crate::model::names::{ClusterNames, FIELD_MANAGER, POOL_FINALIZER, PoolNames, patch_params};
use crate::model::nodes::{NODE_TEMPLATE, NodeSet, node_rollout};
use crate::model::placement;
use crate::model::pool_status::{PoolObserved, compute_pool_status};
use crate::model::readable::unreadable;
use crate::model::status::is_ready;
use crate::model::upgrade;
use crate::model::validate::{kubelet_version, validate_pool};
use crate::reconcile::policy::{
    POOL_CHANGING_RECHECK, POOL_PKI_WAIT, POOL_SETTLED_RECHECK, report_invalid, report_unreadable,
    update_status,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use nestor_crds::node_contract as contract;
use nestor_crds::{ImagesSpec, NodePool, NodePoolStatus, VirtualCluster};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// How long a deleted pool's nodes may take to drain before their Nodes
/// are removed anyway (a PodDisruptionBudget may never allow it).
pub const DELETE_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The pools in `pools` that join `vc`.
pub fn pools_joining<'a>(
    pools: &Store<NodePool>,
    vc: &'a VirtualCluster,
) -> impl Iterator<Item = Arc<NodePool>> + 'a {
    let name = vc.metadata.name.as_deref().unwrap_or_default();
    let namespace = vc.metadata.namespace.as_deref();
    pools.state().into_iter().filter(move |p| {
        p.spec.cluster_ref.name == name && p.metadata.namespace.as_deref() == namespace
    })
}

async fn own_pool(ctx: &Context, pn: &PoolNames, patch: serde_json::Value) -> Result<()> {
    let api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &pn.namespace);
    ctx.metrics.write("patch", "NodePool");
    api.patch(
        &pn.pool,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(patch),
    )
    .await
    .map_err(|source| Error::PatchMetadata {
        what: "the owner reference to its cluster",
        kind: "NodePool",
        namespace: pn.namespace.clone(),
        name: pn.pool.clone(),
        source,
    })?;
    Ok(())
}

/// Reconciles one `NodePool`; its finalizer drains the pool's nodes,
/// deletes their Node objects and revokes its bootstrap token.
pub async fn reconcile(pool: Arc<NodePool>, ctx: Arc<Context>) -> Result<Action> {
    if pool.metadata.deletion_timestamp.is_none()
        && let Some(why) = unreadable(&pool.metadata)
    {
        let observed = PoolObserved {
            invalid: Some(why.to_string()),
            ..PoolObserved::default()
        };
        return report_unreadable(&ctx, pool.as_ref(), why, status_now(&observed, &pool)).await;
    }
    let namespace = pool.namespace().ok_or(Error::MissingField {
        kind: "NodePool",
        field: "metadata.namespace",
    })?;
    let api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, POOL_FINALIZER, pool, |event| async {
        match event {
            Event::Apply(pool) => apply(pool, &ctx).await,
            Event::Cleanup(pool) => cleanup(pool, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The pool's cluster, from the cache.
fn cluster_of(ctx: &Context, pool: &NodePool) -> Option<Arc<VirtualCluster>> {
    let namespace = pool.namespace().unwrap_or_default();
    ctx.stores
        .virtual_clusters
        .get(&ObjectRef::new(&pool.spec.cluster_ref.name).within(&namespace))
}

/// Whether a cluster reports `Ready=True`.
fn cluster_ready(vc: &VirtualCluster) -> bool {
    vc.status.as_ref().is_some_and(|s| is_ready(&s.conditions))
}

/// A deleted pool leaves nothing in the nested cluster: its nodes are
/// drained (for at most [`DELETE_DRAIN_TIMEOUT`]), its node pods stopped,
/// their Node objects deleted and its bootstrap token revoked. Nothing to do when the cluster
/// is gone, going or not serving: its nested objects go with it.
async fn cleanup(pool: Arc<NodePool>, ctx: &Context) -> Result<Action> {
    let pn = PoolNames::new(&pool);
    let vc = cluster_of(ctx, &pool);
    let serving = vc
        .as_ref()
        .is_some_and(|vc| vc.metadata.deletion_timestamp.is_none() && cluster_ready(vc));
    let Some(vc) = vc.filter(|_| serving) else {
        info!(pool = %pn.pool, "node pool deleted; its cluster is not serving, nothing to tidy inside it");
        return Ok(Action::await_change());
    };
    let names = ClusterNames::new(&vc);
    let client = nested::client(ctx, &vc).await?;
    let nodes = nested_nodes::list(&client, &names, &pn.pool).await?;
    let since = pool
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    if since < DELETE_DRAIN_TIMEOUT {
        let mut drained = true;
        for node in &nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            drained &= nested_nodes::drain(ctx, &client, &names, name).await?;
        }
        if !drained {
            return Err(Error::CleanupPending(format!(
                "draining the nodes of pool {}",
                pn.pool
            )));
        }
    }
    // The node pods stop before their Nodes go (a running kubelet would
    // register its Node again).
    let pods_left = observe(ctx, &pn).replicas;
    info!(pool = %pn.pool, nodes = nodes.len(), pods_left, "node pool deleted: tidying the nested cluster");
    let scaled_down = node_statefulset(ctx, &pn).is_none_or(|s| s.replicas() == Some(0));
    if pods_left > 0 && !scaled_down {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &pn.namespace);
        ctx.metrics.write("patch", "StatefulSet");
        api.patch(
            &pn.statefulset(),
            &patch_params(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .map_err(|source| Error::Cleanup {
            what: format!("node pods of pool {}", pn.pool),
            source,
        })?;
    }
    if pods_left > 0 {
        return Err(Error::CleanupPending(format!(
            "waiting for the node pods of pool {} to stop",
            pn.pool
        )));
    }
    for node in &nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        nested_nodes::delete_node(ctx, &client, &names, name).await?;
    }
    let token_id = read_secret(ctx, &pn.namespace, &pn.bootstrap_secret())
        .await?
        .and_then(|s| s.data?.get(contract::TOKEN_ID).cloned())
        .and_then(|b| String::from_utf8(b.0).ok());
    if let Some(id) = token_id {
        nested_nodes::delete_bootstrap_token(ctx, &client, &names, &id).await?;
    }
    Ok(Action::await_change())
}

async fn apply(pool: Arc<NodePool>, ctx: &Context) -> Result<Action> {
    let pn = PoolNames::new(&pool);
    let Some(vc) = cluster_of(ctx, &pool) else {
        return report(ctx, &pool, PoolObserved::default(), Action::await_change()).await;
    };
    if let Some(patch) = desired_pool_owner(&pool, &vc) {
        own_pool(ctx, &pn, patch).await?;
    }
    let cp_ready = cluster_ready(&vc);
    let mut observed = PoolObserved {
        control_plane_ready: Some(cp_ready),
        ..observe(ctx, &pn)
    };
    let node_target = upgrade::node_target(&vc.spec, vc.status.as_ref());
    let platform = ctx.settings.platform();
    let version = match validate_pool(&pn.pool, &pool.spec, &vc.spec.version, &platform) {
        // Never newer than every API server runs, and during a change of
        // the cluster's version or images, what ran before until the
        // change reaches its node step.
        Ok(version) => kubelet_version(version, node_target.as_ref().map(|t| t.version.as_str())),
        Err(invalid) => {
            let message = invalid.to_string();
            observed.invalid = Some(message.clone());
            let status = status_now(&observed, &pool);
            return report_invalid(ctx, pool.as_ref(), &message, status).await;
        }
    };
    let names = ClusterNames::new(&vc);
    let Some(ca_fp) = cached_ca_fingerprint(ctx, &names) else {
        // The cluster's PKI does not exist yet; its creation wakes us.
        observed.control_plane_ready = Some(false);
        return report(ctx, &pool, observed, Action::requeue(POOL_PKI_WAIT)).await;
    };
    let token = bootstrap::ensure_bootstrap_secret(ctx, &pool, &names, &ca_fp).await?;
    let node_images = node_target.as_ref().map_or(&vc.spec.images, |t| &t.images);
    let image = images::pool_node_image(&ctx.settings, node_images, &version);
    let template = apply_node_objects(ctx, &pool, &vc, node_images, &image).await?;
    let template_hash = node_template_hash(&template);
    let cached = node_statefulset(ctx, &pn);
    let set = cached.as_deref().map(node_set);
    let pods = NodePods {
        running: cached.as_ref().and_then(|s| s.replicas()).unwrap_or(0),
        set: set.as_ref(),
        template: &template_hash,
    };
    let scale = scale(
        ctx,
        &pool,
        &vc,
        cp_ready,
        (token.as_ref(), &ca_fp),
        pods,
        &mut observed,
    )
    .await;
    // Nodes kept past the spec are nodes still draining.
    if scale.replicas > pool.spec.replicas {
        observed.draining = Some(scale.replicas - pool.spec.replicas);
    }
    if observed.version.is_some() {
        observed.image = Some(image);
    }
    let statefulset = desired_node_statefulset(&pool, template, scale.replicas, scale.partition);
    // Its replicas follow the pool's scale.
    let store = &ctx.stores.stateful_sets;
    let applied = apply_owned(ctx, store, statefulset, FirstWrite::Apply).await?;
    // The status counts the node pods as the API server returned them.
    count_pods(&mut observed, applied.object());
    update_status(ctx, pool.as_ref(), status_now(&observed, &pool)).await?;
    if let Some(e) = scale.failed {
        return Err(e);
    }
    let recheck = if scale.settled {
        POOL_SETTLED_RECHECK
    } else {
        POOL_CHANGING_RECHECK
    };
    Ok(Action::requeue(recheck))
}

/// Writes the status and waits as `then` says.
async fn report(
    ctx: &Context,
    pool: &NodePool,
    observed: PoolObserved,
    then: Action,
) -> Result<Action> {
    update_status(ctx, pool, status_now(&observed, pool)).await?;
    Ok(then)
}

/// The roots' fingerprint of the pool's cluster, as the cache has it
/// (`None` before they exist).
fn cached_ca_fingerprint(ctx: &Context, names: &ClusterNames) -> Option<String> {
    ctx.stores
        .secrets
        .get(&ObjectRef::new(&names.ca_secret()).within(&names.namespace))
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned())
}

/// The pool's node configuration and Service; returns the pod template
/// its StatefulSet runs (which names the configuration's hash).
async fn apply_node_objects(
    ctx: &Context,
    pool: &NodePool,
    vc: &VirtualCluster,
    node_images: &ImagesSpec,
    image: &str,
) -> Result<PodTemplateSpec> {
    let pause = images::pause_image(&ctx.settings, node_images.registry.as_deref());
    let mirrors = &ctx.settings.node_registry_mirrors;
    let config = desired_node_config_map(pool, vc, &pause, mirrors);
    let config_hash = node_config_hash(&config);
    apply_owned(ctx, &ctx.stores.config_maps, config, FirstWrite::Create).await?;
    let service = desired_node_service(pool);
    apply_owned(ctx, &ctx.stores.services, service, FirstWrite::Create).await?;
    let namespace = pool.namespace().unwrap_or_default();
    let cluster = &pool.spec.cluster_ref.name;
    let placement = placement::node_pool(&pool.spec.placement, &ctx.settings, &namespace, cluster);
    let limits = &ctx.settings.node_pod_limits;
    Ok(desired_node_template(
        pool,
        vc,
        image,
        &config_hash,
        &placement,
        limits,
    ))
}

/// The StatefulSet's replicas and partition this pass, whether everything
/// has settled, and what failed inside the nested cluster.
struct Scale {
    replicas: i32,
    partition: i32,
    settled: bool,
    failed: Option<Error>,
}

/// Asks the nested cluster (see [`nested_pass`]) how far the pool may
/// scale and replace its nodes. A scale-down waits for its drain; while
/// the nested cluster cannot be asked (not serving, or an error), the pool
/// keeps its nodes, and no node is replaced.
async fn scale(
    ctx: &Context,
    pool: &NodePool,
    vc: &VirtualCluster,
    cp_ready: bool,
    token: (Option<&IssuedToken>, &str),
    pods: NodePods<'_>,
    observed: &mut PoolObserved,
) -> Scale {
    let hold = pods.running.max(pool.spec.replicas);
    let keep = node_rollout(hold, pods.set, pods.template, |_| false).partition;
    let (replicas, partition, settled, failed) = if !cp_ready {
        (hold, keep, hold == pool.spec.replicas, None)
    } else {
        match nested_pass(ctx, pool, vc, token, pods, observed).await {
            Ok((replicas, partition, settled)) => (replicas, partition, settled, None),
            Err(e) => (hold, keep, false, Some(e)),
        }
    };
    Scale {
        replicas,
        partition,
        settled,
        failed,
    }
}

/// The pool's StatefulSet, from the cache.
fn node_statefulset(ctx: &Context, pn: &PoolNames) -> Option<Arc<Workload<StatefulSet>>> {
    ctx.stores
        .stateful_sets
        .get(&ObjectRef::new(&pn.statefulset()).within(&pn.namespace))
}

/// The node pods as the cache counts them; the rest is learnt later.
fn observe(ctx: &Context, pn: &PoolNames) -> PoolObserved {
    let mut observed = PoolObserved::default();
    if let Some(sts) = node_statefulset(ctx, pn) {
        count_pods(&mut observed, &sts);
    }
    observed
}

/// Counts the node pods of `sts` into `observed`.
fn count_pods(observed: &mut PoolObserved, sts: &Workload<StatefulSet>) {
    let status = sts.status.clone().unwrap_or_default();
    observed.replicas = status.replicas.unwrap_or(0);
    observed.ready_replicas = status.ready_replicas.unwrap_or(0);
    observed.updated_replicas = status.updated_replicas.unwrap_or(0);
}

/// What the cache holds of a pool's StatefulSet, for its node replacement.
fn node_set(sts: &Workload<StatefulSet>) -> NodeSet {
    let status = sts.status.clone().unwrap_or_default();
    NodeSet {
        template: sts.annotations().get(NODE_TEMPLATE).cloned(),
        partition: sts.partition(),
        observed: sts.metadata.generation.is_some()
            && status.observed_generation >= sts.metadata.generation,
        updated: status.updated_replicas.unwrap_or(0),
        // A template taken back mid-way makes both revisions the same
        // again while pods of the other one remain.
        rolling: status.current_revision != status.update_revision
            || status.updated_replicas.unwrap_or(0) < status.replicas.unwrap_or(0),
    }
}

fn status_now(
    observed: &PoolObserved,
    pool: &NodePool,
) -> impl FnOnce(Option<&NodePoolStatus>) -> NodePoolStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    move |previous| compute_pool_status(pool, previous, observed, &now)
}
