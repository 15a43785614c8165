//! Whether the controller-manager and the scheduler of a version lead: the
//! last condition of their upgrade step ([`upgrade::leads`]). Read only
//! while that step waits: the components' pods on the host and their
//! leader Leases in the nested cluster.

use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::nested;
use crate::client::nested_nodes::{nested_error, short};
use crate::model::names::{ClusterNames, Component, selector_labels, selector_string};
use crate::model::upgrade;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use nestor_crds::VirtualCluster;

/// Whether a replica at `version` holds the leader Lease of each of
/// `components`.
pub async fn lead(
    ctx: &Context,
    vc: &VirtualCluster,
    names: &ClusterNames,
    components: [Component; 2],
    version: &str,
) -> Result<bool> {
    let client = nested::client(ctx, vc).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    for component in components {
        let selector = selector_string(&selector_labels(&names.cluster, component));
        let pods = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::Read {
                what: format!(
                    "the {} pods of {}/{}",
                    component.as_str(),
                    names.namespace,
                    names.cluster
                ),
                source,
            })?
            .items;
        let lease = leases.get_opt(component.program()).await.map_err(|e| {
            let lease = component.program();
            nested_error(
                names,
                format!(
                    "reading the Lease kube-system/{lease} failed: {}",
                    short(&e)
                ),
            )
        })?;
        let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
        if !upgrade::leads(holder.as_deref(), &pods, version) {
            return Ok(false);
        }
    }
    Ok(true)
}
