//! The benchmark's view of the operator's progress, from watches.

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::watcher;
use nestor_crds::VirtualCluster;

/// How many of the operator's children exist and how many clusters report
/// a status for their current generation, read from watches. Polling with
/// lists would read every object from etcd every poll (20,000 of them at
/// N = 1,000): load on the API server under test that the floor, which
/// only awaits its own creates, does not carry.
pub(crate) struct Progress {
    children: Vec<Box<dyn Fn() -> usize + Send + Sync>>,
    clusters: Store<VirtualCluster>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) async fn start(client: &kube::Client, namespace: &str) -> Result<Self> {
        let (clusters, writer) = reflector::store();
        let api = Api::<VirtualCluster>::namespaced(client.clone(), namespace);
        let stream = reflector(writer, watcher(api, watcher::Config::default()));
        let mut progress = Progress {
            children: vec![],
            clusters,
            tasks: vec![tokio::spawn(stream.for_each(|_| async {}))],
        };
        progress.clusters.wait_until_ready().await?;
        progress.count::<Secret>(client, namespace).await?;
        progress.count::<Service>(client, namespace).await?;
        progress.count::<ConfigMap>(client, namespace).await?;
        progress.count::<NetworkPolicy>(client, namespace).await?;
        progress.count::<StatefulSet>(client, namespace).await?;
        progress.count::<Deployment>(client, namespace).await?;
        Ok(progress)
    }

    async fn count<K>(&mut self, client: &kube::Client, namespace: &str) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store::<PartialObjectMeta<K>>();
        // An Api of PartialObjectMeta sends metadata-only requests.
        let api = Api::<PartialObjectMeta<K>>::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(&owned_selector());
        let stream = reflector(writer, watcher(api, config));
        self.tasks.push(tokio::spawn(stream.for_each(|_| async {})));
        store.wait_until_ready().await?;
        self.children.push(Box::new(move || store.state().len()));
        Ok(())
    }

    pub(crate) fn now(&self) -> (usize, usize) {
        let children = self.children.iter().map(|count| count()).sum();
        let settled = self
            .clusters
            .state()
            .iter()
            .filter(|vc| {
                vc.status.as_ref().is_some_and(|s| {
                    s.observed_generation == vc.metadata.generation && s.endpoint.is_some()
                })
            })
            .count();
        (children, settled)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Selects the objects Nestor's builders make.
pub(crate) fn owned_selector() -> String {
    let (key, value) = nestor_controllers::model::names::MANAGED_BY;
    format!("{key}={value}")
}
