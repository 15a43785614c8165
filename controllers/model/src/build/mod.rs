//! Pure builders: each turns validated inputs into complete k8s-openapi
//! objects (labels, owner references, probes, security contexts included).
//! One file per component; nothing here can reach a client.
//!
//! A virtual cluster's children are built in stages, because later stages
//! need what earlier writes returned: the Services first (the API server's
//! address goes into its certificate), then the PKI Secrets
//! ([`pki_secrets`]), then the workloads and their configuration, then the
//! API server's clients, held at zero replicas until it serves. Each stage
//! is one struct; the reconciler's apply step destructures it without
//! `..`, so a child added here and not applied there does not compile.
//!
//! A new component is a file here and a field in the stage it belongs to.

pub mod admission_policies;
pub mod apiserver;
pub mod apiserver_config;
pub mod backup;
pub mod controller_manager;
pub mod coredns;
pub mod encryption;
pub mod etcd;
pub mod konnectivity;
pub mod kube_proxy;
pub mod kubeconfig;
pub mod mint;
pub mod nested_addons;
pub mod network;
pub mod node;
pub mod pki;
pub mod pki_secrets;
pub mod podspec;
pub mod scheduler;
pub mod snapshot;

use crate::model::inputs::ClusterInputs;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use mint::Mint;
use pki::{CaBundle, KeyAndCert, PkiError};
use pki_secrets::{Exposure, PkiSecret};

/// The first stage: the cluster's Services.
#[derive(Clone, Debug)]
pub struct ClusterServices {
    pub etcd_peer: Service,
    pub etcd_client: Service,
    pub dns: Service,
    pub apiserver: Service,
}

impl ClusterServices {
    pub fn desired(inputs: &ClusterInputs) -> Self {
        Self {
            etcd_peer: etcd::desired_etcd_peer_service(inputs),
            etcd_client: etcd::desired_etcd_client_service(inputs),
            dns: coredns::desired_dns_service(inputs),
            apiserver: apiserver::desired_apiserver_service(inputs),
        }
    }
}

/// The PKI Secrets: the roots first, then every leaf signed by them.
pub fn desired_pki_secrets(
    inputs: &ClusterInputs,
    exposure: &Exposure,
    bundle: &CaBundle,
    client_signer: &KeyAndCert,
    mint: &mut Mint,
) -> Result<Vec<Secret>, PkiError> {
    [PkiSecret::Ca, PkiSecret::ClientSigner]
        .into_iter()
        .chain(PkiSecret::LEAVES)
        .map(|kind| {
            pki_secrets::desired_pki_secret(kind, inputs, exposure, bundle, client_signer, mint)
        })
        .collect()
}

/// The third stage: etcd, the API server and their configuration.
#[derive(Clone, Debug)]
pub struct ClusterWorkloads {
    pub kube_proxy_config: ConfigMap,
    pub apiserver_config: ConfigMap,
    /// Every host NetworkPolicy of the cluster ([`network`]).
    pub network_policies: Vec<NetworkPolicy>,
    pub etcd: StatefulSet,
    pub apiserver: Deployment,
}

impl ClusterWorkloads {
    pub fn desired(inputs: &ClusterInputs) -> Self {
        Self {
            kube_proxy_config: kube_proxy::desired_kube_proxy_config_map(inputs),
            apiserver_config: apiserver_config::desired_apiserver_config_map(inputs),
            network_policies: network::desired_network_policies(inputs),
            etcd: etcd::desired_etcd_statefulset(inputs),
            apiserver: apiserver::desired_apiserver_deployment(inputs),
        }
    }
}

/// A child Nestor holds back (at zero replicas, or without an annotation)
/// until what it needs is there.
#[derive(Clone, Debug)]
pub struct Holdable<K> {
    /// The form to write now.
    pub desired: K,
    /// The held form, built only when this write releases the child: the
    /// apply engine releases it with one apply when the cache holds exactly
    /// this form.
    pub held: Option<K>,
}

impl<K> Holdable<K> {
    /// `build(true)` is the started form; `build(false)` the held one.
    /// `Start::releases` says whether this write starts it.
    fn build(start: Start, build: impl Fn(bool) -> K) -> Self {
        Self {
            desired: build(start.started),
            held: start.releases.then(|| build(false)),
        }
    }
}

/// Whether a held child runs from this write on, and whether this write is
/// the one that starts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Start {
    pub started: bool,
    pub releases: bool,
}

impl Start {
    /// From whether the child may run now (`ready`) and whether it is still
    /// held (at zero replicas or not yet written): once started, a child
    /// stays started.
    pub fn new(ready: bool, held: bool) -> Self {
        Self {
            started: ready || !held,
            releases: ready && held,
        }
    }

    /// Started, as in a settled cluster.
    pub const STARTED: Start = Start {
        started: true,
        releases: false,
    };
}

/// The fourth stage: the API server's clients, held until it serves (and
/// CoreDNS until its RBAC is in the nested cluster).
#[derive(Clone, Debug)]
pub struct ClusterClients {
    pub controller_manager: Holdable<Deployment>,
    pub scheduler: Holdable<Deployment>,
    pub coredns: Holdable<Deployment>,
}

/// When each of [`ClusterClients`] starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientStarts {
    pub controller_manager: Start,
    pub scheduler: Start,
    pub coredns: Start,
}

impl ClusterClients {
    pub fn desired(inputs: &ClusterInputs, starts: ClientStarts) -> Self {
        Self {
            controller_manager: Holdable::build(starts.controller_manager, |started| {
                controller_manager::desired_controller_manager_deployment(inputs, started)
            }),
            scheduler: Holdable::build(starts.scheduler, |started| {
                scheduler::desired_scheduler_deployment(inputs, started)
            }),
            coredns: Holdable::build(starts.coredns, |started| {
                coredns::desired_coredns_deployment(inputs, started)
            }),
        }
    }
}

/// The CoreDNS ConfigMap, whose annotation records what was written into
/// the nested cluster (`installed`); `written` is what the cache holds.
pub fn desired_coredns_config(
    inputs: &ClusterInputs,
    installed: Option<&str>,
    releases: bool,
    written: Option<&str>,
) -> Holdable<ConfigMap> {
    Holdable {
        desired: coredns::desired_coredns_config_map(inputs, installed),
        held: releases.then(|| coredns::desired_coredns_config_map(inputs, written)),
    }
}

/// Every child of a virtual cluster, built by the same stage builders the
/// reconciler uses, as a settled cluster has them (every component
/// started, the add-ons written): what the benchmarks write and measure.
#[derive(Clone, Debug)]
pub struct DesiredCluster {
    pub services: ClusterServices,
    /// The PKI Secrets and the encryption key ring.
    pub secrets: Vec<Secret>,
    pub workloads: ClusterWorkloads,
    pub clients: ClusterClients,
    pub coredns_config: ConfigMap,
}

/// The children of [`DesiredCluster`], by kind.
#[derive(Clone, Debug, Default)]
pub struct ByKind {
    pub secrets: Vec<Secret>,
    pub services: Vec<Service>,
    pub config_maps: Vec<ConfigMap>,
    pub network_policies: Vec<NetworkPolicy>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
}

impl ByKind {
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

    /// Appends `other`'s objects, kind by kind.
    pub fn extend(&mut self, other: ByKind) {
        self.secrets.extend(other.secrets);
        self.services.extend(other.services);
        self.config_maps.extend(other.config_maps);
        self.network_policies.extend(other.network_policies);
        self.stateful_sets.extend(other.stateful_sets);
        self.deployments.extend(other.deployments);
    }
}

impl DesiredCluster {
    /// Builds every child, issuing certificates from `bundle` (and
    /// `client_signer`) and keys from `mint`; `addons` is the hash recorded
    /// once the add-ons are in the nested cluster.
    pub fn new(
        inputs: &ClusterInputs,
        exposure: &Exposure,
        (bundle, client_signer): (&CaBundle, &KeyAndCert),
        addons: Option<&str>,
        mint: &mut Mint,
    ) -> Result<Self, PkiError> {
        let started = ClientStarts {
            controller_manager: Start::STARTED,
            scheduler: Start::STARTED,
            coredns: Start::STARTED,
        };
        let ring = encryption::KeyRing::default().next(
            inputs.vc.spec.api_server.encryption_key_generation,
            None,
            mint,
        );
        let mut secrets = desired_pki_secrets(inputs, exposure, bundle, client_signer, mint)?;
        secrets.push(encryption::desired_encryption_secret(inputs, &ring, None));
        Ok(Self {
            services: ClusterServices::desired(inputs),
            secrets,
            workloads: ClusterWorkloads::desired(inputs),
            clients: ClusterClients::desired(inputs, started),
            coredns_config: coredns::desired_coredns_config_map(inputs, addons),
        })
    }

    /// Every child, kind by kind.
    pub fn by_kind(self) -> ByKind {
        let DesiredCluster {
            services:
                ClusterServices {
                    etcd_peer,
                    etcd_client,
                    dns,
                    apiserver: apiserver_service,
                },
            secrets,
            workloads:
                ClusterWorkloads {
                    kube_proxy_config,
                    apiserver_config,
                    network_policies,
                    etcd,
                    apiserver,
                },
            clients:
                ClusterClients {
                    controller_manager,
                    scheduler,
                    coredns,
                },
            coredns_config,
        } = self;
        ByKind {
            secrets,
            services: vec![etcd_peer, etcd_client, dns, apiserver_service],
            config_maps: vec![coredns_config, kube_proxy_config, apiserver_config],
            network_policies,
            stateful_sets: vec![etcd],
            deployments: vec![
                apiserver,
                controller_manager.desired,
                scheduler.desired,
                coredns.desired,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;
    use std::collections::BTreeSet;

    #[test]
    fn a_cluster_has_every_child_once() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let mut mint = Mint::fixed();
        let bundle = pki::generate_ca_bundle("demo", &mut mint).unwrap();
        let signer = pki::generate_ca("demo-client-signer", &mut mint).unwrap();
        let objects = DesiredCluster::new(
            &inputs,
            &Exposure::default(),
            (&bundle, &signer),
            None,
            &mut mint,
        )
        .unwrap()
        .by_kind();
        assert_eq!(objects.len(), 28);
        let mut names = BTreeSet::new();
        for (kind, meta) in (objects.secrets.iter().map(|o| ("Secret", &o.metadata)))
            .chain(objects.services.iter().map(|o| ("Service", &o.metadata)))
            .chain(
                objects
                    .config_maps
                    .iter()
                    .map(|o| ("ConfigMap", &o.metadata)),
            )
            .chain(
                objects
                    .network_policies
                    .iter()
                    .map(|o| ("NetworkPolicy", &o.metadata)),
            )
            .chain(
                objects
                    .stateful_sets
                    .iter()
                    .map(|o| ("StatefulSet", &o.metadata)),
            )
            .chain(
                objects
                    .deployments
                    .iter()
                    .map(|o| ("Deployment", &o.metadata)),
            )
        {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.controller, Some(true));
            assert!(names.insert((kind, meta.name.clone().unwrap())), "{meta:?}");
        }
        assert_eq!(objects.secrets[0].metadata.name.as_deref(), Some("demo-ca"));
    }

    #[test]
    fn a_held_child_is_built_held_only_when_released() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
        let held = ClusterClients::desired(&inputs, ClientStarts::default());
        assert_eq!(replicas(&held.scheduler.desired), Some(0));
        assert!(held.scheduler.held.is_none(), "nothing released");
        let starting = Start::new(true, true);
        assert_eq!(
            starting,
            Start {
                started: true,
                releases: true
            }
        );
        let released = ClusterClients::desired(
            &inputs,
            ClientStarts {
                scheduler: starting,
                ..ClientStarts::default()
            },
        );
        assert_eq!(replicas(&released.scheduler.desired), Some(1));
        assert_eq!(replicas(released.scheduler.held.as_ref().unwrap()), Some(0));
        // Once started, it stays started, and nothing is released again.
        assert_eq!(Start::new(false, false), Start::STARTED);
        assert_eq!(Start::new(true, false), Start::STARTED);
    }
}
