//! A pool's Nodes inside the nested cluster: their readiness, their serving
//! certificates, and draining them before their pods are removed.
//! What to approve and what to evict is decided in
//! [`crate::model::nodes`]; this module only asks and writes.

use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::nested::request_failed;
use crate::model::names::{ClusterNames, POOL_LABEL, patch_params};
use crate::model::nodes::{
    DRAIN_TIMEOUT, DRAINED_BY, KUBELET_SERVING_SIGNER, Verdict, check_request, evictable, ordinal,
    ready_count, triage, without_serving_certificate,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, EvictParams, ListParams, Patch};
use std::net::IpAddr;

/// The pool's Nodes in the nested cluster.
pub async fn list(client: &Client, names: &ClusterNames, pool: &str) -> Result<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    api.list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
        .map(|l| l.items)
        .map_err(|e| request_failed(names, "listing nodes", &e))
}

/// What [`approve_serving_certificates`] left undone.
#[derive(Debug, Default)]
pub struct ServingCertificates {
    /// Requests waiting for their node pod's IP.
    pub waiting: usize,
    /// Recently started node pods whose kubelet has no approved serving
    /// certificate yet ([`without_serving_certificate`]).
    pub pending: Vec<String>,
}

/// The node pods of a pool, on the host.
pub async fn node_pods(
    ctx: &Context,
    namespace: &str,
    pool: &str,
    statefulset: &str,
) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
        .map_err(|source| Error::Read {
            what: format!("the node pods of pool {namespace}/{pool}"),
            source,
        })?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| ordinal(statefulset, n).is_some())
        })
        .collect())
}

/// Approves the pool's nodes' valid serving certificate requests and denies
/// invalid ones, and tells which recently started nodes still wait for one.
pub async fn approve_serving_certificates(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
    pods: &[Pod],
    statefulset: &str,
) -> Result<ServingCertificates> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csrs = api
        .list(&ListParams::default().fields(&format!("spec.signerName={KUBELET_SERVING_SIGNER}")))
        .await
        .map_err(|e| request_failed(names, "listing CSRs", &e))?;
    let pod_ip = |node: &str| -> Option<Option<IpAddr>> {
        let pod = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(node))?;
        Some(
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
        )
    };
    let mut result = ServingCertificates::default();
    let mut csrs = csrs.items;
    for csr in &mut csrs {
        let name = csr.metadata.name.clone().unwrap_or_default();
        let decision = match triage(csr, statefulset) {
            Verdict::Skip => continue,
            Verdict::Deny(why) => Err(why),
            Verdict::Check { node } => match pod_ip(&node) {
                Some(Some(ip)) => check_request(csr, &node, ip),
                Some(None) => {
                    result.waiting += 1;
                    continue;
                }
                None => Err(format!("no node pod {node} exists")),
            },
        };
        let (type_, reason, message) = match &decision {
            Ok(()) => (
                "Approved",
                "NestorApproved",
                "the node pod's own name and IP".to_string(),
            ),
            Err(why) => ("Denied", "NestorDenied", why.clone()),
        };
        let status = CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            }]),
            ..Default::default()
        };
        ctx.metrics.write("approve", "NestedCSR");
        api.patch_approval(
            &name,
            &patch_params(),
            &Patch::Merge(serde_json::json!({ "status": &status })),
        )
        .await
        .map_err(|e| request_failed(names, &format!("deciding CSR {name}"), &e))?;
        // The list as it now stands.
        csr.status = Some(status);
    }
    let started: Vec<(String, Timestamp)> = pods
        .iter()
        .filter_map(|p| {
            Some((
                p.metadata.name.clone()?,
                p.status.as_ref()?.start_time.as_ref()?.0,
            ))
        })
        .collect();
    result.pending = without_serving_certificate(&started, &csrs, Timestamp::now());
    Ok(result)
}

/// Cordons `node` and evicts its pods (those of DaemonSets and static pods
/// stay). Unlike `kubectl drain`, bare pods and pods with `emptyDir` data
/// are evicted too: the node is going away. Returns true once no evictable
/// pod is left on it, once the node is not Ready (its kubelet will not
/// finish anything), or after [`DRAIN_TIMEOUT`]. Evictions that a
/// PodDisruptionBudget refuses are retried on the next call.
pub async fn drain(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
    node: &str,
) -> Result<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(current) = nodes
        .get_opt(node)
        .await
        .map_err(|e| request_failed(names, &format!("reading node {node}"), &e))?
    else {
        return Ok(true);
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let since = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRAINED_BY))
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let cordoned = current
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned || since.is_none() {
        ctx.metrics.write("patch", "NestedNode");
        nodes
            .patch(
                node,
                &patch_params(),
                &Patch::Merge(serde_json::json!({
                    "metadata": {"annotations": {DRAINED_BY: since.unwrap_or(now).to_string()}},
                    "spec": {"unschedulable": true}
                })),
            )
            .await
            .map_err(|e| request_failed(names, &format!("cordoning {node}"), &e))?;
    }
    let timed_out = since.is_some_and(|t| {
        now.duration_since(t)
            .try_into()
            .is_ok_and(|d: std::time::Duration| d > DRAIN_TIMEOUT)
    });
    let ready = ready_count(std::slice::from_ref(&current)) == 1;
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| request_failed(names, &format!("listing pods on {node}"), &e))?;
    let mut left = 0;
    for pod in &on_node.items {
        // A pod being deleted is waited for until its kubelet is done (a
        // node that is not Ready will never be).
        if pod.metadata.deletion_timestamp.is_some() {
            left += 1;
            continue;
        }
        if !evictable(pod) {
            continue;
        }
        left += 1;
        let (Some(name), Some(ns)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            continue;
        };
        ctx.metrics.write("evict", "NestedPod");
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        match api.evict(name, &EvictParams::default()).await {
            Ok(_) => {}
            // A disruption budget says not now, or the pod is already gone.
            Err(kube::Error::Api(s)) if s.code == 429 || s.code == 404 => {}
            Err(e) => {
                return Err(request_failed(names, &format!("evicting {ns}/{name}"), &e));
            }
        }
    }
    if left > 0 && timed_out {
        tracing::warn!(node, left, "drain timed out; removing the node anyway");
        return Ok(true);
    }
    Ok(left == 0 || !ready)
}
/// Makes a node Nestor cordoned schedulable again (a scale-down that was
/// taken back).
pub async fn uncordon_if_drained(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
    node: &Node,
) -> Result<()> {
    let ours = node
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(DRAINED_BY));
    if !ours {
        return Ok(());
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Node> = Api::all(client.clone());
    ctx.metrics.write("patch", "NestedNode");
    api.patch(
        &name,
        &patch_params(),
        &Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {DRAINED_BY: null}},
            "spec": {"unschedulable": null}
        })),
    )
    .await
    .map_err(|e| request_failed(names, &format!("uncordoning {name}"), &e))?;
    Ok(())
}

/// Deletes the Node object of a node pod that is gone for good.
pub async fn delete_node(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
    node: &str,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    ctx.metrics.write("delete", "NestedNode");
    match api.delete(node, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(request_failed(names, &format!("deleting node {node}"), &e)),
    }
}

/// Revokes a pool's bootstrap token in the nested cluster.
pub async fn delete_bootstrap_token(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
    id: &str,
) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "kube-system");
    ctx.metrics.write("delete", "NestedSecret");
    match api
        .delete(&format!("bootstrap-token-{id}"), &Default::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(request_failed(names, "revoking the bootstrap token", &e)),
    }
}
