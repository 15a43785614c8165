//! The `NodePool` kind: a scalable group of kubelet nodes of one
//! `VirtualCluster`.

use crate::common::{ClusterReference, NodeTaint, one};
use crate::placement::Placement;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A group of kubelet node pods that join one `VirtualCluster` as Nodes,
/// scaled like a Deployment (`kubectl scale np/NAME --replicas=N`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "nestor.dev",
    version = "v1alpha1",
    kind = "NodePool",
    namespaced,
    shortname = "np",
    category = "nestor",
    status = "NodePoolStatus",
    doc = "A scalable group of kubelet nodes that join one VirtualCluster.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef.name", description = "VirtualCluster the nodes join"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas", description = "Nodes wanted"),
    printcolumn(name = "Current", type_ = "integer", json_path = ".status.replicas", description = "Node pods that exist"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Node pods that are ready"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "Kubelet version every node runs"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("the name must be a DNS label that starts with a letter: lowercase letters, digits and '-' (children such as Services take names derived from it)"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("a NodePool name may have at most 40 characters (children add suffixes)")
)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// The `VirtualCluster` (in this namespace) whose Nodes this pool adds.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable; create another NodePool for another cluster"))]
    pub cluster_ref: ClusterReference,
    /// Number of nodes. Scaling down first cordons and drains the
    /// highest-numbered nodes (evictions respect PodDisruptionBudgets; a
    /// drain that cannot finish ends after five minutes), then removes
    /// their node pods.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Kubelet version of the pool's nodes, as `1.MINOR.PATCH`: one of the
    /// versions the operator runs (1.34.5, 1.35.4), not newer than the
    /// control plane's. Unset, the pool follows the cluster's version. Nodes
    /// never run a version newer than every API server already runs (the
    /// cluster's `status.version`): while the API servers change version,
    /// the pool waits for them. A new version (or any change of the node
    /// pods) replaces one node at a time: cordon, drain (respecting
    /// PodDisruptionBudgets), replace, wait until its Node is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 5, max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^1\\\\.(0|[1-9][0-9]{0,2})\\\\.(0|[1-9][0-9]{0,3})$')").message("version must be MAJOR.MINOR.PATCH with major 1 and no leading zeros, for example 1.35.4 (no leading 'v')"))]
    pub version: Option<String>,
    /// CPU and memory of each node pod: what the node's daemons and its
    /// workloads share (`cpu`, `memory`, `ephemeral-storage` or
    /// `hugepages-*`; each limit at least its request). Default: requests of
    /// 100m CPU and 256Mi of memory (the daemons' own needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Labels put on every Node of the pool in the nested cluster: at most
    /// 32, with keys and values as Kubernetes labels have them; keys under
    /// `kubernetes.io`, `k8s.io` (but for the prefixes a kubelet may set)
    /// and `nestor.dev` are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}))]
    pub labels: BTreeMap<String, String>,
    /// Taints put on every Node of the pool in the nested cluster: at most
    /// 32, no two with the same key and effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub taints: Vec<NodeTaint>,
    /// Where the pool's node pods run on the host, and in which runtime.
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
}

/// What the operator observed of a `NodePool`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes wanted (the spec's replicas once it is applied).
    #[serde(default)]
    pub desired_replicas: i32,
    /// Node pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Node pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Node pods of the current template. A new template (a new version,
    /// for one) replaces one node at a time: cordon, drain (respecting
    /// PodDisruptionBudgets), replace, wait until its Node is Ready.
    #[serde(default)]
    pub updated_replicas: i32,
    /// The kubelet version every Node of the pool reports, once they all
    /// report the same one and no node is left to replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The node image every node pod runs, once none is left to replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Label selector of the pool's node pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `ControlPlaneReady`, `NodesReady` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
