//! What every reconcile shares: the client, the caches of owned objects, the
//! event recorder, the metrics and the operator's settings.

use crate::client::kept::NestedClients;
use crate::client::metrics::Metrics;
use crate::model::cached::{CachedService, Workload};
use crate::model::settings::OperatorSettings;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use nestor_crds::{NodePool, VirtualCluster};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// The status last written for each VirtualCluster, shared with the
    /// watch that hears of deleted clusters.
    pub cluster_statuses: StatusGuard<nestor_crds::VirtualClusterStatus>,
    /// The status last written for each NodePool, likewise.
    pub pool_statuses: StatusGuard<nestor_crds::NodePoolStatus>,
    /// Clients for nested clusters, kept per cluster.
    pub nested: NestedClients,
}

/// The status last written for each object (by UID), so that a reconcile
/// triggered from a cache that has not seen that write yet does not write
/// it again. An entry is dropped once the cache shows it, or the object is
/// deleted.
pub struct StatusGuard<S> {
    written: Arc<Mutex<HashMap<String, S>>>,
}

impl<S> Clone for StatusGuard<S> {
    fn clone(&self) -> Self {
        Self {
            written: self.written.clone(),
        }
    }
}

impl<S> Default for StatusGuard<S> {
    fn default() -> Self {
        Self {
            written: Default::default(),
        }
    }
}

impl<S: Clone + PartialEq> StatusGuard<S> {
    /// The status to compare a new one with: the one last written for
    /// `uid`, unless the cached object's `stored` status has caught up with
    /// it (then the entry goes) or is of a newer generation.
    pub fn previous(
        &self,
        uid: &str,
        stored: Option<&S>,
        generation: impl Fn(&S) -> Option<i64>,
    ) -> Option<S> {
        let mut written = self.written.lock().ok()?;
        match written.get(uid) {
            Some(s) if stored == Some(s) => {
                written.remove(uid);
                None
            }
            s => s
                .cloned()
                .filter(|s| generation(s) >= stored.and_then(&generation)),
        }
    }

    /// Records what was just written for `uid`.
    pub fn record(&self, uid: &str, status: S) {
        if let Ok(mut written) = self.written.lock() {
            written.insert(uid.to_string(), status);
        }
    }

    /// Forgets `uid` (its object was deleted).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(uid);
        }
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.written.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Status {
        generation: Option<i64>,
        text: &'static str,
    }

    fn status(generation: i64, text: &'static str) -> Status {
        Status {
            generation: Some(generation),
            text,
        }
    }

    #[test]
    fn the_last_written_status_stands_in_until_the_cache_shows_it() {
        let guard = StatusGuard::default();
        let generation = |s: &Status| s.generation;
        let stale = status(1, "provisioning");
        assert_eq!(guard.previous("u", Some(&stale), generation), None);
        guard.record("u", status(1, "ready"));
        // The cache still holds the older status: the written one counts.
        assert_eq!(
            guard.previous("u", Some(&stale), generation),
            Some(status(1, "ready"))
        );
        // Another object is not affected.
        assert_eq!(guard.previous("v", Some(&stale), generation), None);
        // A newer generation in the cache wins over what was written.
        assert_eq!(
            guard.previous("u", Some(&status(2, "edited")), generation),
            None
        );
        // The cache caught up: the entry goes.
        assert_eq!(
            guard.previous("u", Some(&status(1, "ready")), generation),
            None
        );
        assert!(guard.is_empty());
        guard.record("u", status(1, "ready"));
        guard.forget("u");
        assert!(guard.is_empty());
    }
}
