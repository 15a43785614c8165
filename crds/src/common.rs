//! Types shared by more than one Nestor kind.

use k8s_openapi::api::core::v1::ResourceRequirements;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Settings shared by the control-plane components that run as Deployments
/// (kube-controller-manager, kube-scheduler).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Number of replicas. More than one turns on leader election in the
    /// component, so that only one of them acts at a time.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
    /// Extra command-line flags for the component, as `flag-name: value`
    /// (without the leading dashes): at most 32, each value at most 1024
    /// characters on one line. Only flags that change nothing Nestor relies
    /// on are accepted (listed in docs/security.md); any other is refused by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub extra_args: BTreeMap<String, String>,
    /// CPU and memory requests and limits of the component's container
    /// (`cpu`, `memory`, `ephemeral-storage` or `hugepages-*`; each limit at
    /// least its request). When unset, Nestor requests a small footprint
    /// suited to a minimal cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ComponentSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            extra_args: BTreeMap::new(),
            resources: None,
        }
    }
}

/// A DNS subdomain (RFC 1123): what Kubernetes names most objects with.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS label that starts with a letter (RFC 1035): what a Service may be
/// named, and so a VirtualCluster or NodePool, whose children's names
/// derive from theirs.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// A label value: alphanumerics at both ends, `-`, `_` and `.` between.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// A registry host (lowercase, an optional port) and optional path.
pub const REGISTRY_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*$";
/// An image reference: a lowercase repository (with its registry), an
/// optional tag and an optional digest.
pub const IMAGE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";

pub(crate) fn one() -> i32 {
    1
}

/// A reference to a `VirtualCluster` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    /// Name of the `VirtualCluster`, in the namespace of the referring
    /// object: a DNS label that starts with a letter, at most 40 characters.
    #[schemars(length(min = 1, max = 40), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
}

/// A taint put on every Node of a pool, as the kubelet registers it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTaint {
    /// The taint's key: a label key (`[prefix/]name`).
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// The taint's value: a label value (at most 63 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = LABEL_VALUE_PATTERN))]
    pub value: Option<String>,
    /// What the taint does to pods that do not tolerate it.
    pub effect: TaintEffect,
}

/// The effect of a taint.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TaintEffect {
    /// New pods are not scheduled onto the node.
    NoSchedule,
    /// The scheduler avoids the node when it can.
    PreferNoSchedule,
    /// New pods are not scheduled and running ones are evicted.
    NoExecute,
}
