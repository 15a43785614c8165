//! The `NodePool` reconciler: a thin driver. It gives the pool's cluster
//! an owner reference to the pool, validates (pure), writes the pool's
//! bootstrap Secret, node configuration, Service and StatefulSet (built in
//! [`crate::build::node`]), does the pool's work inside the nested cluster
//! (its bootstrap token, drains on scale-down, serving certificates) and
//! computes its status (pure). Its finalizer tidies the nested cluster
//! when the pool is deleted.

use crate::build::node::bootstrap::{
    BootstrapToken, IssuedToken, PREVIOUS_TOKEN_ID, TOKEN_EXPIRES, TOKEN_ID,
    desired_bootstrap_secret, nested_bootstrap_token_secret, token_due,
};
use crate::build::node::config::{desired_node_config_map, node_config_hash};
use crate::build::node::owner::desired_pool_owner;
use crate::build::node::statefulset::{
    desired_node_service, desired_node_statefulset, desired_node_template, node_template_hash,
};
use crate::build::pki_secrets::{BUNDLE_FINGERPRINT, bundle_from_secret};
use crate::client::apply::{FirstWrite, apply_owned};
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::secrets::{annotate_secret, apply_secret, read_secret};
use crate::client::{nested, nested_nodes};
use crate::model::cached::Workload;
use crate::model::hash::inputs_hash;
use crate::model::images;
use crate::model::names::{
    ClusterNames, FIELD_MANAGER, INPUTS_HASH, NESTED_INSTALLED, POOL_FINALIZER, PoolNames,
    patch_params,
};
use crate::model::nodes::{
    NODE_TEMPLATE, NodeSet, node_rollout, ordinal, ready_count, reports_address,
};
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
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use nestor_crds::node_contract as contract;
use nestor_crds::{NodePool, NodePoolStatus, VirtualCluster};
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
    let vc = cluster_of(ctx, &pool);
    let Some(vc) = vc else {
        update_status(
            ctx,
            pool.as_ref(),
            status_now(&PoolObserved::default(), &pool),
        )
        .await?;
        return Ok(Action::await_change());
    };
    if let Some(patch) = desired_pool_owner(&pool, &vc) {
        own_pool(ctx, &pn, patch).await?;
    }
    let cp_ready = cluster_ready(&vc);
    let node_target = upgrade::node_target(&vc.spec, vc.status.as_ref());
    let node_images = node_target.as_ref().map_or(&vc.spec.images, |t| &t.images);
    let version = match validate_pool(
        &pn.pool,
        &pool.spec,
        &vc.spec.version,
        &ctx.settings.platform(),
    ) {
        // Never newer than every API server runs, and during a change of
        // the cluster's version or images, what ran before until the
        // change reaches its node step.
        Ok(version) => kubelet_version(version, node_target.as_ref().map(|t| t.version.as_str())),
        Err(invalid) => {
            let message = invalid.to_string();
            let observed = PoolObserved {
                invalid: Some(message.clone()),
                control_plane_ready: Some(cp_ready),
                ..observe(ctx, &pn)
            };
            return report_invalid(ctx, pool.as_ref(), &message, status_now(&observed, &pool))
                .await;
        }
    };
    let names = ClusterNames::new(&vc);
    let ca_fp = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&names.ca_secret()).within(&names.namespace))
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned());
    let Some(ca_fp) = ca_fp else {
        // The cluster's PKI does not exist yet; its creation wakes us.
        let observed = PoolObserved {
            control_plane_ready: Some(false),
            ..observe(ctx, &pn)
        };
        update_status(ctx, pool.as_ref(), status_now(&observed, &pool)).await?;
        return Ok(Action::requeue(POOL_PKI_WAIT));
    };
    let token = ensure_bootstrap_secret(ctx, &pool, &names, &ca_fp).await?;

    let config = desired_node_config_map(
        &pool,
        &vc,
        &images::pause_image(&ctx.settings, node_images.registry.as_deref()),
        &ctx.settings.node_registry_mirrors,
    );
    let config_hash = node_config_hash(&config);
    apply_owned(ctx, &ctx.stores.config_maps, config, FirstWrite::Create).await?;
    apply_owned(
        ctx,
        &ctx.stores.services,
        desired_node_service(&pool),
        FirstWrite::Create,
    )
    .await?;
    let mut observed = PoolObserved {
        control_plane_ready: Some(cp_ready),
        ..observe(ctx, &pn)
    };
    let cached = node_statefulset(ctx, &pn);
    let running = cached.as_ref().and_then(|s| s.replicas()).unwrap_or(0);
    let set = cached.as_deref().map(node_set);
    let image = images::pool_node_image(&ctx.settings, node_images, &version);
    let placement = placement::node_pool(
        &pool.spec.placement,
        &ctx.settings,
        &pn.namespace,
        &pool.spec.cluster_ref.name,
    );
    let template = desired_node_template(
        &pool,
        &vc,
        &image,
        &config_hash,
        &placement,
        &ctx.settings.node_pod_limits,
    );
    let template_hash = node_template_hash(&template);
    // A scale-down waits for its drain; while the nested cluster cannot be
    // asked (not serving, or an error), the pool keeps its nodes, and no
    // node is replaced.
    let hold = running.max(pool.spec.replicas);
    let keep = node_rollout(hold, set.as_ref(), &template_hash, |_| false).partition;
    let nested = if cp_ready {
        nested_pass(
            ctx,
            &pool,
            &vc,
            (token.as_ref(), &ca_fp),
            NodePods {
                running,
                set: set.as_ref(),
                template: &template_hash,
            },
            &mut observed,
        )
        .await
    } else {
        Ok((hold, keep, hold == pool.spec.replicas))
    };
    let (replicas, partition, settled, failed) = match nested {
        Ok((replicas, partition, settled)) => (replicas, partition, settled, None),
        Err(e) => (hold, keep, false, Some(e)),
    };
    // Nodes kept past the spec are nodes still draining.
    if replicas > pool.spec.replicas {
        observed.draining = Some(replicas - pool.spec.replicas);
    }
    if observed.version.is_some() {
        observed.image = Some(image.clone());
    }
    apply_owned(
        ctx,
        &ctx.stores.stateful_sets,
        desired_node_statefulset(&pool, template, replicas, partition),
        // Its replicas follow the pool's scale.
        FirstWrite::Apply,
    )
    .await?;
    update_status(ctx, pool.as_ref(), status_now(&observed, &pool)).await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if settled {
        Ok(Action::requeue(POOL_SETTLED_RECHECK))
    } else {
        Ok(Action::requeue(POOL_CHANGING_RECHECK))
    }
}

/// A pool's node pods as the cache holds them, and the template they
/// should run.
struct NodePods<'a> {
    /// The StatefulSet's replicas.
    running: i32,
    set: Option<&'a NodeSet>,
    template: &'a str,
}

/// What the pool does inside its nested cluster: installs its bootstrap
/// token, drains the nodes a scale-down removes and the node a new template
/// replaces next, uncordons nodes kept or replaced, deletes Nodes whose
/// pods are gone, decides serving certificate requests and counts Ready
/// nodes. Returns the StatefulSet's replicas and partition, and whether
/// everything has settled.
async fn nested_pass(
    ctx: &Context,
    pool: &NodePool,
    vc: &VirtualCluster,
    (token, ca_fp): (Option<&IssuedToken>, &str),
    pods: NodePods<'_>,
    observed: &mut PoolObserved,
) -> Result<(i32, i32, bool)> {
    let NodePods {
        running,
        set,
        template,
    } = pods;
    let pn = PoolNames::new(pool);
    let names = &ClusterNames::new(vc);
    let client = nested::client(ctx, vc).await?;
    if let Some(token) = token {
        install_in_nested_cluster(ctx, &client, pool, names, token, ca_fp).await?;
    }
    let nodes = nested_nodes::list(&client, names, &pn.pool).await?;
    let mut replicas = pool.spec.replicas;
    let mut settled = true;
    if running > pool.spec.replicas {
        let mut drained = true;
        for ordinal in pool.spec.replicas..running {
            let node = format!("{}-{ordinal}", pn.statefulset());
            drained &= nested_nodes::drain(ctx, &client, names, &node).await?;
        }
        if !drained {
            replicas = running;
            settled = false;
        }
    }
    // A new template replaces one node at a time (cordon, drain, replace,
    // Ready), highest ordinal first.
    let pods = nested_nodes::node_pods(ctx, &pn.namespace, &pn.pool, &pn.statefulset()).await?;
    // Ready, and reported by the kubelet of the pod that runs now: a
    // replaced pod's Node stays Ready for a while after its old kubelet
    // stopped, but with the old pod's address.
    let node_ready = |i: i32| {
        let name = format!("{}-{i}", pn.statefulset());
        let pod_ip = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|p| p.status.as_ref()?.pod_ip.clone());
        nodes.iter().any(|n| {
            n.metadata.name.as_deref() == Some(name.as_str())
                && ready_count(std::slice::from_ref(n)) == 1
                && pod_ip.as_deref().is_some_and(|ip| reports_address(n, ip))
        })
    };
    let rollout = node_rollout(replicas, set, template, node_ready);
    let replaced_ready = set.is_none_or(|s| s.updated >= replicas - rollout.partition);
    for node in &nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        match ordinal(&pn.statefulset(), name) {
            // A node being drained to be replaced.
            Some(i) if Some(i) == rollout.drain => {}
            // A node kept (or taken back) after a scale-down, or replaced
            // and Ready again.
            Some(i)
                if i < pool.spec.replicas
                    && (i < rollout.partition || (replaced_ready && node_ready(i))) =>
            {
                nested_nodes::uncordon_if_drained(ctx, &client, names, node).await?
            }
            // Its pod is gone: so is the Node.
            Some(i) if i >= observed.replicas && i >= replicas => {
                nested_nodes::delete_node(ctx, &client, names, name).await?
            }
            _ => {}
        }
    }
    // The next node is drained only once those replaced are uncordoned
    // (its pods need somewhere to go).
    let mut partition = rollout.partition;
    if let Some(i) = rollout.drain {
        let node = format!("{}-{i}", pn.statefulset());
        if nested_nodes::drain(ctx, &client, names, &node).await? {
            info!(pool = %pn.pool, node = %node, "drained; replacing its node pod");
            partition = i;
        }
    }
    settled &=
        partition == 0 && set.is_none_or(|s| !s.rolling && s.template.as_deref() == Some(template));
    let serving =
        nested_nodes::approve_serving_certificates(ctx, &client, names, &pods, &pn.statefulset())
            .await?;
    let ready = ready_count(&nodes);
    observed.nodes_ready = Some(ready);
    observed.serving_certificate_pending = serving.pending.len() as i32;
    settled &= serving.waiting == 0 && serving.pending.is_empty() && ready >= pool.spec.replicas;
    observed.version = pool_version(&nodes, settled);
    Ok((replicas, partition, settled))
}

/// Makes sure the pool's bootstrap Secret holds a token for the current CA
/// that is not yet due for renewal. Returns the token when it still has to
/// be installed in the nested cluster.
async fn ensure_bootstrap_secret(
    ctx: &Context,
    pool: &NodePool,
    names: &ClusterNames,
    ca_fp: &str,
) -> Result<Option<IssuedToken>> {
    let pn = PoolNames::new(pool);
    let cached = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&pn.bootstrap_secret()).within(&pn.namespace));
    let empty = Default::default();
    let annotations = cached.as_ref().map_or(&empty, |s| s.annotations());
    let now = k8s_openapi::jiff::Timestamp::now();
    let current = annotations.get(INPUTS_HASH).map(String::as_str)
        == Some(inputs_hash(["bootstrap", ca_fp]).as_str())
        && !token_due(annotations, now);
    let token_id = annotations.get(TOKEN_ID).cloned();
    if current && let Some(id) = &token_id {
        if annotations.get(NESTED_INSTALLED) == Some(&IssuedToken::installed_hash(ca_fp, id)) {
            return Ok(None);
        }
        // Read the token back to install it.
        let secret = read_secret(ctx, &pn.namespace, &pn.bootstrap_secret()).await?;
        let text = |s: &Secret, key: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let expires = annotations
            .get(TOKEN_EXPIRES)
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        if let (Some((Some(id), Some(secret))), Some(expires)) = (
            secret.map(|s| {
                (
                    text(&s, contract::TOKEN_ID),
                    text(&s, contract::TOKEN_SECRET),
                )
            }),
            expires,
        ) {
            return Ok(Some(IssuedToken {
                token: BootstrapToken { id, secret },
                expires,
                previous_id: annotations.get(PREVIOUS_TOKEN_ID).cloned(),
            }));
        }
    }
    let ca = read_secret(ctx, &names.namespace, &names.ca_secret())
        .await?
        .and_then(|s| bundle_from_secret(&s))
        .ok_or_else(|| Error::DamagedCa {
            namespace: names.namespace.clone(),
            name: names.ca_secret(),
        })?;
    let issued = IssuedToken::issue(now, token_id);
    apply_secret(
        ctx,
        &desired_bootstrap_secret(pool, names, &issued, &ca.cluster.cert_pem, ca_fp),
    )
    .await?;
    info!(pool = %pn.pool, namespace = %pn.namespace, token = %issued.token.id, expires = %issued.expires, "issued a bootstrap token");
    Ok(Some(issued))
}

/// Writes the pool's bootstrap token into the nested cluster, deletes the
/// token it replaced, then records that on the host Secret.
async fn install_in_nested_cluster(
    ctx: &Context,
    client: &kube::Client,
    pool: &NodePool,
    names: &ClusterNames,
    issued: &IssuedToken,
    ca_fp: &str,
) -> Result<()> {
    let pn = PoolNames::new(pool);
    // The node RBAC comes with the cluster's add-ons (see virtualcluster).
    nested::apply(
        ctx,
        client,
        names,
        &nested_bootstrap_token_secret(&pn.pool, issued),
    )
    .await?;
    if let Some(previous) = issued
        .previous_id
        .as_deref()
        .filter(|id| *id != issued.token.id)
    {
        nested_nodes::delete_bootstrap_token(ctx, client, names, previous).await?;
    }
    let installed_hash = IssuedToken::installed_hash(ca_fp, &issued.token.id);
    annotate_secret(
        ctx,
        &pn.namespace,
        &pn.bootstrap_secret(),
        NESTED_INSTALLED,
        &installed_hash,
    )
    .await?;
    Ok(())
}

/// The pool's StatefulSet, from the cache.
fn node_statefulset(ctx: &Context, pn: &PoolNames) -> Option<Arc<Workload<StatefulSet>>> {
    ctx.stores
        .stateful_sets
        .get(&ObjectRef::new(&pn.statefulset()).within(&pn.namespace))
}

fn observe(ctx: &Context, pn: &PoolNames) -> PoolObserved {
    let status = node_statefulset(ctx, pn)
        .and_then(|s| s.status.clone())
        .unwrap_or_default();
    PoolObserved {
        replicas: status.replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        ..PoolObserved::default()
    }
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

/// The kubelet version every Node of a pool reports, once no node is left
/// to replace.
fn pool_version(nodes: &[k8s_openapi::api::core::v1::Node], settled: bool) -> Option<String> {
    let versions: std::collections::BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref()?.node_info.as_ref())
        .map(|i| i.kubelet_version.trim_start_matches('v').to_string())
        .collect();
    match (settled, versions.len()) {
        (true, 1) => versions.into_iter().next(),
        _ => None,
    }
}

fn status_now(
    observed: &PoolObserved,
    pool: &NodePool,
) -> impl FnOnce(Option<&NodePoolStatus>) -> NodePoolStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    move |previous| compute_pool_status(pool, previous, observed, &now)
}
