//! What every reconcile shares: the client, the caches of owned objects, the
//! event recorder, the metrics and the operator's settings.

use crate::cached::{CachedService, Workload};
use crate::metrics::Metrics;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use nestor_crds::{NodePool, VirtualCluster};
use std::sync::Arc;

/// Operator-wide settings, from flags.
#[derive(Clone, Debug)]
pub struct OperatorSettings {
    /// Registry prefix of the Kubernetes component images when a spec names
    /// none.
    pub default_registry: String,
    /// Repository of the Nestor node image (tagged with the kubelet version).
    pub node_image_repository: String,
    /// How the operator reaches nested API servers.
    pub nested_route: crate::nested::NestedRoute,
    /// Registry mirrors of node pods' containerd: registry host to mirror
    /// endpoints, tried in order.
    pub node_registry_mirrors: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            default_registry: "registry.k8s.io".into(),
            node_image_repository: "ghcr.io/nestor-dev/nestor-node".into(),
            nested_route: crate::nested::NestedRoute::Internal,
            node_registry_mirrors: Default::default(),
        }
    }
}

/// Read-only caches of what Nestor owns, filled by watches that select on the
/// `app.kubernetes.io/managed-by` label. Of Secrets, ConfigMaps and
/// NetworkPolicies only metadata is watched and cached; of Deployments,
/// StatefulSets and Services only what [`Workload`] and [`CachedService`]
/// decode.
#[derive(Clone)]
pub struct Stores {
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub services: Store<CachedService>,
    pub stateful_sets: Store<Workload<StatefulSet>>,
    pub deployments: Store<Workload<Deployment>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub virtual_clusters: Store<VirtualCluster>,
    pub node_pools: Store<NodePool>,
}

impl Context {
    /// Publishes an Event about `object`. A failure is logged, not
    /// returned: an Event is never worth failing a reconcile for.
    pub async fn publish<K: kube::Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: kube::runtime::events::EventType,
        reason: &str,
        note: String,
    ) {
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.metrics.write("create", "Event");
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    /// One recorder for every Event, so that repeats are aggregated.
    pub recorder: Recorder,
    pub settings: OperatorSettings,
    /// The status last written for each VirtualCluster (by UID), so that a
    /// reconcile triggered from a lagging cache does not write it again;
    /// dropped once the cache shows it, or the cluster is deleted.
    pub written_status: WrittenStatus,
}

/// See [`Context::written_status`]; shared with the watch that hears of
/// deleted clusters.
pub type WrittenStatus =
    Arc<std::sync::Mutex<std::collections::HashMap<String, nestor_crds::VirtualClusterStatus>>>;
