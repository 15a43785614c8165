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
    /// (without the leading dashes). Flags that Nestor manages itself (for
    /// example the kubeconfig or the certificate paths) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
    /// CPU and memory requests and limits of the component's container. When
    /// unset, Nestor requests a small footprint suited to a minimal cluster.
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

pub(crate) fn one() -> i32 {
    1
}

/// A reference to a `VirtualCluster` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    /// Name of the `VirtualCluster`, in the namespace of the referring object.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}
