//! The clients of nested clusters the operator keeps between reconciles.

use crate::model::names::ClusterNames;
use kube::Client;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients for nested clusters, one per cluster, built once and kept while
/// the cluster's UID, its roots of trust and its endpoint stay the same: a
/// reconcile that talks to a nested cluster reads no Secret and builds no
/// TLS context.
#[derive(Clone, Default)]
pub struct NestedClients {
    clients: Arc<Mutex<HashMap<(String, String), KeptClient>>>,
}

struct KeptClient {
    uid: String,
    /// The CA fingerprint and the endpoint.
    credentials: String,
    client: Client,
    /// When its certificate must be replaced.
    renew_at: Instant,
    /// When the add-ons were last read back and found (or made) whole.
    addons_checked: Option<Instant>,
}

impl NestedClients {
    pub(crate) fn get(&self, names: &ClusterNames, uid: &str, credentials: &str) -> Option<Client> {
        let clients = self.clients.lock().ok()?;
        clients
            .get(&(names.namespace.clone(), names.cluster.clone()))
            .filter(|kept| {
                kept.uid == uid && kept.credentials == credentials && Instant::now() < kept.renew_at
            })
            .map(|kept| kept.client.clone())
    }

    pub(crate) fn keep(
        &self,
        names: &ClusterNames,
        uid: &str,
        credentials: &str,
        client: Client,
        renew_at: Instant,
    ) {
        if let Ok(mut clients) = self.clients.lock() {
            let kept = KeptClient {
                uid: uid.into(),
                credentials: credentials.into(),
                client,
                renew_at,
                addons_checked: None,
            };
            clients.insert((names.namespace.clone(), names.cluster.clone()), kept);
        }
    }

    /// Whether the add-ons of the cluster are due to be read back: never
    /// since its client was built, or not for `every`.
    pub fn addons_due(&self, names: &ClusterNames, every: Duration) -> bool {
        let Ok(clients) = self.clients.lock() else {
            return true;
        };
        clients
            .get(&(names.namespace.clone(), names.cluster.clone()))
            .and_then(|kept| kept.addons_checked)
            .is_none_or(|at| at.elapsed() >= every)
    }

    /// Records that the cluster's add-ons were found (or made) whole now.
    pub fn addons_checked(&self, names: &ClusterNames) {
        if let Ok(mut clients) = self.clients.lock()
            && let Some(kept) = clients.get_mut(&(names.namespace.clone(), names.cluster.clone()))
        {
            kept.addons_checked = Some(Instant::now());
        }
    }

    /// Drops the client of a deleted cluster.
    pub fn forget(&self, namespace: &str, cluster: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(&(namespace.to_string(), cluster.to_string()));
        }
    }

    /// How many clients are kept.
    pub fn len(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
