//! What a pool does inside its nested cluster on each pass: installs its
//! bootstrap token, drains the nodes a scale-down removes and the node a
//! new template replaces next, uncordons, deletes Nodes whose pods are
//! gone, decides serving certificate requests and counts Ready nodes.

use super::bootstrap::install_in_nested_cluster;
use crate::build::node::bootstrap::IssuedToken;
use crate::client::context::Context;
use crate::client::error::Result;
use crate::client::{nested, nested_nodes};
use crate::model::names::{ClusterNames, PoolNames};
use crate::model::nodes::{NodeSet, node_rollout, ordinal, ready_count, reports_address};
use crate::model::pool_status::PoolObserved;
use nestor_crds::{NodePool, VirtualCluster};
use tracing::info;

/// A pool's node pods as the cache holds them, and the template they
/// should run.
pub(super) struct NodePods<'a> {
    /// The StatefulSet's replicas.
    pub running: i32,
    pub set: Option<&'a NodeSet>,
    pub template: &'a str,
}

/// What the pool does inside its nested cluster: installs its bootstrap
/// token, drains the nodes a scale-down removes and the node a new template
/// replaces next, uncordons nodes kept or replaced, deletes Nodes whose
/// pods are gone, decides serving certificate requests and counts Ready
/// nodes. Returns the StatefulSet's replicas and partition, and whether
/// everything has settled.
pub(super) async fn nested_pass(
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
