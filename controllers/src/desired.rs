//! Every object one virtual cluster owns, built at once by the pure
//! builders: what the benchmarks measure and compare against a plain client.
//! (The reconciler calls the same builders step by step, because some
//! inputs, like the API server's address, come from earlier writes.)

use crate::cluster::ClusterInputs;
use crate::pki::{CaBundle, PkiError};
use crate::secrets::{self, Exposure, PkiSecret};
use crate::{addons, apiserver, controller_manager, etcd, scheduler};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;

/// The children of one virtual cluster, by kind.
#[derive(Clone, Debug)]
pub struct DesiredObjects {
    pub secrets: Vec<Secret>,
    pub services: Vec<Service>,
    pub config_maps: Vec<ConfigMap>,
    pub network_policies: Vec<NetworkPolicy>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
}

impl DesiredObjects {
    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.secrets.len()
            + self.services.len()
            + self.config_maps.len()
            + self.network_policies.len()
            + self.stateful_sets.len()
            + self.deployments.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds every child of a virtual cluster, issuing its certificates from
/// `bundle`, as a settled cluster has them (every component started).
pub fn desired_objects(
    inputs: &ClusterInputs,
    exposure: &Exposure,
    bundle: &CaBundle,
) -> Result<DesiredObjects, PkiError> {
    let secrets = PkiSecret::ALL
        .iter()
        .map(|kind| secrets::desired_pki_secret(*kind, inputs, exposure, bundle))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DesiredObjects {
        secrets,
        services: vec![
            etcd::desired_etcd_peer_service(inputs),
            etcd::desired_etcd_client_service(inputs),
            addons::desired_dns_service(inputs),
            apiserver::desired_apiserver_service(inputs),
        ],
        config_maps: vec![
            addons::desired_coredns_config_map(inputs, None),
            addons::desired_kube_proxy_config_map(inputs),
        ],
        network_policies: vec![etcd::desired_etcd_network_policy(inputs)],
        stateful_sets: vec![etcd::desired_etcd_statefulset(inputs)],
        deployments: vec![
            apiserver::desired_apiserver_deployment(inputs),
            controller_manager::desired_controller_manager_deployment(inputs, true),
            scheduler::desired_scheduler_deployment(inputs, true),
            addons::desired_coredns_deployment(inputs, true),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures;
    use serde_json::json;

    #[test]
    fn a_cluster_owns_nineteen_objects() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let bundle = crate::pki::generate_ca_bundle("demo").unwrap();
        let objects = desired_objects(&inputs, &Exposure::default(), &bundle).unwrap();
        assert_eq!(objects.len(), 19);
        assert!(
            objects
                .deployments
                .iter()
                .all(|d| d.metadata.owner_references.is_some())
        );
    }
}
