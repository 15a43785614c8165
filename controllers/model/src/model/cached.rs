//! What the caches keep of the Deployments, StatefulSets and Services
//! Nestor owns (of Secrets, ConfigMaps and NetworkPolicies they keep only
//! metadata, as `PartialObjectMeta`).
//!
//! A k8s-openapi `Deployment` holds its pod template inline (about 2.5 KB
//! before any field is set), and decoding one from a watch allocates every
//! container, volume and probe just to drop them. A [`Workload`] decodes
//! only what reconcilers read: metadata, the desired replicas, the
//! template's annotations (the running version) and the rollout counters;
//! a [`CachedService`] only the type, the cluster IP, the node ports and the
//! load balancer's address. The rest of each event is skipped by the
//! decoder, never allocated.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::PartialObjectMeta;
use kube_core::Resource;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// What the caches keep of a kind, and so what a write asks back: the
/// metadata only, or the whole object (decoded into a narrow view).
pub trait CachedForm {
    const METADATA_ONLY: bool;
}

impl<K> CachedForm for PartialObjectMeta<K> {
    const METADATA_ONLY: bool = true;
}

/// The `Resource` methods of a cached view: the kind's names, and the
/// view's own `metadata`.
macro_rules! delegate_resource {
    ($kind:ty) => {
        fn kind(_: &()) -> Cow<'_, str> {
            <$kind>::kind(&())
        }

        fn group(_: &()) -> Cow<'_, str> {
            <$kind>::group(&())
        }

        fn version(_: &()) -> Cow<'_, str> {
            <$kind>::version(&())
        }

        fn plural(_: &()) -> Cow<'_, str> {
            <$kind>::plural(&())
        }

        fn meta(&self) -> &ObjectMeta {
            &self.metadata
        }

        fn meta_mut(&mut self) -> &mut ObjectMeta {
            &mut self.metadata
        }
    };
}

/// The cached form of a workload of kind `K` (Deployment or StatefulSet).
#[derive(Deserialize, Serialize)]
#[serde(bound = "")]
pub struct Workload<K> {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<WorkloadSpec>,
    pub status: Option<WorkloadStatus>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

/// The part of a workload's spec that reconcilers read.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WorkloadSpec {
    pub replicas: Option<i32>,
    pub template: Option<Template>,
    /// A StatefulSet's update strategy (node pools replace their pods one
    /// at a time by lowering its partition).
    #[serde(rename = "updateStrategy")]
    pub update_strategy: Option<UpdateStrategy>,
}

/// A StatefulSet's update strategy: its partition.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    pub rolling_update: Option<RollingUpdate>,
}

/// Pods of ordinals below the partition keep the current revision.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RollingUpdate {
    pub partition: Option<i32>,
}

/// A pod template's metadata, without its spec.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Template {
    pub metadata: Option<TemplateMetadata>,
}

/// The pod template's annotations.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TemplateMetadata {
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A workload's rollout counters (the fields Deployments and StatefulSets
/// share, and `availableReplicas`, which StatefulSets also report).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub observed_generation: Option<i64>,
    pub replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    /// A StatefulSet's revisions: they differ while pods of the current one
    /// remain to be replaced.
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
}

impl<K> Workload<K> {
    /// The replicas the spec asks for.
    pub fn replicas(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.replicas)
    }

    /// A StatefulSet's partition (0 when unset).
    pub fn partition(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
    }

    /// A pod template annotation.
    pub fn template_annotation(&self, key: &str) -> Option<&String> {
        self.spec
            .as_ref()?
            .template
            .as_ref()?
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(key)
    }
}

impl<K> CachedForm for Workload<K> {
    const METADATA_ONLY: bool = false;
}

// Derives would bound `K`, which is only a marker.
impl<K> Clone for Workload<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Workload<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("metadata", &self.metadata)
            .field("spec", &self.spec)
            .field("status", &self.status)
            .finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Workload<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    delegate_resource!(K);
}

/// The cached form of a Service: what the API server's address and the
/// nested DNS are derived from.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedService {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<CachedServiceSpec>,
    pub status: Option<CachedServiceStatus>,
}

/// The part of a Service's spec that reconcilers read.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    pub ports: Option<Vec<CachedServicePort>>,
}

/// A Service port's node port.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedServicePort {
    pub node_port: Option<i32>,
}

/// A Service's load balancer addresses.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedServiceStatus {
    pub load_balancer: Option<CachedLoadBalancer>,
}

/// The addresses a load balancer gave a Service.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedLoadBalancer {
    pub ingress: Option<Vec<CachedIngress>>,
}

/// One load balancer address.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedIngress {
    pub ip: Option<String>,
    pub hostname: Option<String>,
}

impl CachedService {
    /// The Service's cluster IP, if it has one.
    pub fn cluster_ip(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
    }
}

impl CachedForm for CachedService {
    const METADATA_ONLY: bool = false;
}

impl Resource for CachedService {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    delegate_resource!(Service);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

    #[test]
    fn decodes_what_reconcilers_read_and_nothing_of_the_pod_spec() {
        let d: Workload<Deployment> = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "generation": 4},
            "spec": {"replicas": 2, "selector": {}, "template": {
                "metadata": {"labels": {"a": "b"}, "annotations": {"v": "1"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"observedGeneration": 4, "availableReplicas": 1, "updatedReplicas": 2}
        }))
        .unwrap();
        assert_eq!(d.replicas(), Some(2));
        assert_eq!(d.template_annotation("v").map(String::as_str), Some("1"));
        let status = d.status.as_ref().unwrap();
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(Workload::<Deployment>::kind(&()), "Deployment");
        assert_eq!(Workload::<StatefulSet>::plural(&()), "statefulsets");
        assert_eq!(Workload::<StatefulSet>::api_version(&()), "apps/v1");
    }

    #[test]
    fn services_keep_their_addresses() {
        let svc: CachedService = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "selector": {"a": "b"},
                     "ports": [{"port": 6443, "nodePort": 31443, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}
        }))
        .unwrap();
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(svc.cluster_ip(), Some("10.96.0.7"));
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(31443));
        let ingress = &svc.status.as_ref().unwrap().load_balancer.as_ref().unwrap();
        assert_eq!(
            ingress.ingress.as_ref().unwrap()[0].ip.as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(CachedService::plural(&()), "services");
        let headless: CachedService =
            serde_json::from_value(serde_json::json!({"spec": {"clusterIP": "None"}})).unwrap();
        assert_eq!(headless.cluster_ip(), None);
    }
}
