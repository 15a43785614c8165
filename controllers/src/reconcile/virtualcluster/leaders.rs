//! Whether the controller-manager and the scheduler of a version lead: the
//! last condition of their upgrade step ([`upgrade::leads`]). Read only
//! while that step waits: the two components' pods on the host (one list)
//! and their leader Leases in the nested cluster.

use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::nested::{self, request_failed};
use crate::model::names::{CLUSTER_LABEL, COMPONENT_LABEL, ClusterNames, Component};
use crate::model::upgrade;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use nestor_crds::VirtualCluster;
use tracing::debug;

const LEADERS: [Component; 2] = [Component::ControllerManager, Component::Scheduler];

/// Whether a replica at `version` holds the leader Lease of the
/// controller-manager and of the scheduler. A read that fails counts as
/// not yet: the next pass asks again.
pub(super) async fn new_ones_lead(
    ctx: &Context,
    vc: &VirtualCluster,
    names: &ClusterNames,
    version: &str,
) -> bool {
    read(ctx, vc, names, version).await.unwrap_or_else(|e| {
        debug!(cluster = %names.cluster, namespace = %names.namespace, error = %e, "reading the new controllers' leader Leases failed");
        false
    })
}

async fn read(
    ctx: &Context,
    vc: &VirtualCluster,
    names: &ClusterNames,
    version: &str,
) -> Result<bool> {
    let [first, second] = LEADERS.map(Component::as_str);
    let selector = format!(
        "{CLUSTER_LABEL}={},{COMPONENT_LABEL} in ({first},{second})",
        names.cluster
    );
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &names.namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Read {
            what: format!(
                "the {first} and {second} pods of {}/{}",
                names.namespace, names.cluster
            ),
            source,
        })?
        .items;
    let leases: Api<Lease> = Api::namespaced(nested::client(ctx, vc).await?, "kube-system");
    for component in LEADERS {
        let name = component.program();
        let lease = leases.get_opt(name).await.map_err(|e| {
            request_failed(names, &format!("reading the Lease kube-system/{name}"), &e)
        })?;
        let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
        if !upgrade::leads(holder.as_deref(), &pods, version) {
            return Ok(false);
        }
    }
    Ok(true)
}
