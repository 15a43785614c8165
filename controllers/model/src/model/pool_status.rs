//! A pool's status, computed from what the pool reconciler observed. Pure.

use crate::model::names::{pool_selector_labels, selector_string};
use crate::model::status::{Computed, READY, settle_conditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nestor_crds::{NodePool, NodePoolStatus};

pub const CONTROL_PLANE_READY: &str = "ControlPlaneReady";
pub const NODES_READY: &str = "NodesReady";

/// What the pool reconciler observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolObserved {
    pub invalid: Option<String>,
    /// `None`: the cluster does not exist; `Some(false)`: not ready yet.
    pub control_plane_ready: Option<bool>,
    /// Node pods (from the StatefulSet).
    pub replicas: i32,
    /// Node pods whose kubelet answers its health check.
    pub ready_replicas: i32,
    /// Node pods of the current template.
    pub updated_replicas: i32,
    /// The kubelet version every Node reports, once none is left to
    /// replace.
    pub version: Option<String>,
    /// The node image every node pod runs, once none is left to replace.
    pub image: Option<String>,
    /// Nested Nodes that are Ready (`None`: the nested cluster is not
    /// reachable yet).
    pub nodes_ready: Option<i32>,
    /// Nodes being drained before a scale-down removes them.
    pub draining: Option<i32>,
    /// Recently started nodes whose kubelet has no approved serving
    /// certificate yet.
    pub serving_certificate_pending: i32,
}

/// The pool's status. Pure.
pub fn compute_pool_status(
    pool: &NodePool,
    previous: Option<&NodePoolStatus>,
    observed: &PoolObserved,
    now: &Time,
) -> NodePoolStatus {
    let desired = pool.spec.replicas;
    let cluster = &pool.spec.cluster_ref.name;
    let cp = match observed.control_plane_ready {
        None => Computed {
            type_: CONTROL_PLANE_READY,
            ok: false,
            reason: "ClusterNotFound",
            message: format!("VirtualCluster {cluster} does not exist"),
        },
        Some(false) => Computed {
            type_: CONTROL_PLANE_READY,
            ok: false,
            reason: "Waiting",
            message: format!("waiting for VirtualCluster {cluster} to be ready"),
        },
        Some(true) => Computed {
            type_: CONTROL_PLANE_READY,
            ok: true,
            reason: "Ready",
            message: format!("VirtualCluster {cluster} is ready"),
        },
    };
    // A node is ready when its nested Node is, not merely its pod.
    let ready_nodes = observed
        .nodes_ready
        .unwrap_or(0)
        .min(observed.ready_replicas);
    let nodes_ok = ready_nodes >= desired && observed.replicas == desired;
    let nodes = match observed.draining {
        Some(n) => Computed {
            type_: NODES_READY,
            ok: false,
            reason: "Draining",
            message: format!("draining {n} node(s) before removing them"),
        },
        None if nodes_ok && observed.serving_certificate_pending > 0 => Computed {
            type_: NODES_READY,
            ok: false,
            reason: "ServingCertificatePending",
            message: format!(
                "{ready_nodes}/{desired} nodes ready; {} wait for their kubelet serving certificate (logs, exec and port-forward to them fail until it is approved)",
                observed.serving_certificate_pending
            ),
        },
        None => Computed {
            type_: NODES_READY,
            ok: nodes_ok,
            reason: if nodes_ok { "Ready" } else { "NotReady" },
            message: format!("{ready_nodes}/{desired} nodes ready"),
        },
    };
    let ready = if let Some(why) = &observed.invalid {
        Computed::invalid_spec(why)
    } else if cp.ok && nodes.ok {
        Computed {
            type_: READY,
            ok: true,
            reason: "Ready",
            message: "every node is ready".into(),
        }
    } else {
        Computed {
            type_: READY,
            ok: false,
            reason: "NotReady",
            message: if cp.ok {
                nodes.message.clone()
            } else {
                cp.message.clone()
            },
        }
    };
    // While the nested cluster cannot be asked, the last version stays.
    let asked = observed.nodes_ready.is_some();
    let previous_version = previous.and_then(|s| s.version.clone());
    let previous_image = previous.and_then(|s| s.image.clone());
    let previous = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    NodePoolStatus {
        observed_generation: pool.metadata.generation,
        desired_replicas: desired,
        replicas: observed.replicas,
        ready_replicas: ready_nodes,
        updated_replicas: observed.updated_replicas,
        version: observed
            .version
            .clone()
            .or_else(|| previous_version.filter(|_| !asked)),
        image: observed
            .image
            .clone()
            .or_else(|| previous_image.filter(|_| !asked)),
        selector: Some(selector_string(&pool_selector_labels(pool))),
        conditions: settle_conditions(&[cp, nodes, ready], previous, pool.metadata.generation, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures::pool;

    #[test]
    fn pool_status_tells_what_it_waits_for() {
        let now = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let p = pool();
        let missing = compute_pool_status(&p, None, &PoolObserved::default(), &now);
        assert_eq!(missing.conditions[0].reason, "ClusterNotFound");
        let waiting = compute_pool_status(
            &p,
            None,
            &PoolObserved {
                control_plane_ready: Some(false),
                ..Default::default()
            },
            &now,
        );
        let ready = waiting
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap();
        assert_eq!(ready.message, "waiting for VirtualCluster demo to be ready");
        assert_eq!(
            waiting.selector.as_deref(),
            Some(
                "app.kubernetes.io/component=node,nestor.dev/cluster=demo,nestor.dev/node-pool=workers"
            )
        );
        let done = compute_pool_status(
            &p,
            None,
            &PoolObserved {
                control_plane_ready: Some(true),
                replicas: 2,
                ready_replicas: 2,
                nodes_ready: Some(2),
                ..Default::default()
            },
            &now,
        );
        assert!(done.conditions.iter().all(|c| c.status == "True"));
        let unverified = compute_pool_status(
            &p,
            None,
            &PoolObserved {
                control_plane_ready: Some(true),
                replicas: 2,
                ready_replicas: 2,
                nodes_ready: Some(2),
                serving_certificate_pending: 1,
                ..Default::default()
            },
            &now,
        );
        let nodes = &unverified.conditions[1];
        assert_eq!(
            (nodes.type_.as_str(), nodes.reason.as_str()),
            (NODES_READY, "ServingCertificatePending")
        );
        assert!(nodes.message.contains("logs, exec and port-forward"));
        assert_eq!(
            (done.desired_replicas, done.replicas, done.ready_replicas),
            (2, 2, 2)
        );
    }
}
