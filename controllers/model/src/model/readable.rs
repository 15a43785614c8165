//! Watched objects that may not be readable. The API server stores what
//! its schema admits at the time; an object stored under a looser schema
//! (an older CRD) may not decode into this operator's types. One such
//! object must not stop the watch, and with it every other cluster: it is
//! cached as a stand-in with its metadata, a default spec and, in an
//! annotation, what could not be read, and its reconciler reports it as
//! invalid.

use crate::model::names::UNREADABLE;
use crate::model::validate::excerpt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::Resource;
use nestor_crds::{ClusterReference, NodePool, NodePoolSpec, VirtualCluster};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;

/// A kind whose objects may be cached as a stand-in.
pub trait StandIn: Resource<DynamicType = ()> + DeserializeOwned + Sized {
    /// An object with `metadata`, a spec that nothing reads, and `status`
    /// when it decodes.
    fn stand_in(metadata: ObjectMeta, status: Option<&serde_json::Value>) -> Self;
}

impl StandIn for VirtualCluster {
    fn stand_in(metadata: ObjectMeta, status: Option<&serde_json::Value>) -> Self {
        let mut vc = VirtualCluster::new("", Default::default());
        vc.metadata = metadata;
        vc.status = status.and_then(|s| serde_json::from_value(s.clone()).ok());
        vc
    }
}

impl StandIn for NodePool {
    fn stand_in(metadata: ObjectMeta, status: Option<&serde_json::Value>) -> Self {
        let spec = NodePoolSpec {
            cluster_ref: ClusterReference::default(),
            ..NodePoolSpec::default()
        };
        let mut pool = NodePool::new("", spec);
        pool.metadata = metadata;
        pool.status = status.and_then(|s| serde_json::from_value(s.clone()).ok());
        pool
    }
}

/// What could not be read of `meta`'s object, if anything.
pub fn unreadable(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(UNREADABLE)
        .map(String::as_str)
}

/// A watched `K`, or its stand-in when it does not decode.
#[derive(Clone, Debug)]
pub struct Readable<K>(pub K);

impl<'de, K: StandIn> Deserialize<'de> for Readable<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(mut object) => {
                // Only this decoder may say an object is unreadable.
                if let Some(annotations) = object.meta_mut().annotations.as_mut() {
                    annotations.remove(UNREADABLE);
                }
                Ok(Readable(object))
            }
            Err(error) => {
                let metadata = value.get("metadata").cloned().unwrap_or_default();
                let mut metadata: ObjectMeta =
                    serde_json::from_value(metadata).map_err(serde::de::Error::custom)?;
                // The path names the field; the message may quote the value.
                let why = format!(
                    "{}: cannot be read ({})",
                    error.path(),
                    excerpt(&error.inner().to_string())
                );
                metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(UNREADABLE.into(), why);
                Ok(Readable(K::stand_in(metadata, value.get("status"))))
            }
        }
    }
}

impl<K: Serialize> Serialize for Readable<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Readable<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_that_does_not_decode_becomes_a_stand_in_that_says_why() {
        let stored = json!({
            "apiVersion": "nestor.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "old", "namespace": "t", "uid": "u",
                "annotations": {"keep": "me"}},
            "spec": {"clusterRef": {"name": "demo"},
                "taints": [{"key": "k", "effect": "NoSchedule",
                    "timeAdded": "2026-01-01T00:00:00.1234567891Z", "bogus": {"x": 1}}],
                "replicas": "three"},
        });
        let Readable(pool) = serde_json::from_value::<Readable<NodePool>>(stored).unwrap();
        assert_eq!(pool.metadata.name.as_deref(), Some("old"));
        let why = unreadable(&pool.metadata).expect("marked");
        assert!(why.starts_with("spec.replicas: cannot be read"), "{why}");
        assert!(why.len() < 120, "{why}");
        assert_eq!(pool.metadata.annotations.as_ref().unwrap()["keep"], "me");
    }

    #[test]
    fn a_readable_object_cannot_claim_to_be_unreadable() {
        let stored = json!({
            "apiVersion": "nestor.dev/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": "demo", "annotations": {UNREADABLE: "spoofed"}},
            "spec": {},
        });
        let Readable(vc) = serde_json::from_value::<Readable<VirtualCluster>>(stored).unwrap();
        assert_eq!(unreadable(&vc.metadata), None);
        assert_eq!(vc.spec.etcd.replicas, 1);
    }
}
