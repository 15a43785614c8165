//! Where and how Nestor's pods run on the host: the fields a platform
//! admin sets (or lets tenants set) to put node pods and control planes on
//! dedicated host nodes or in a sandboxing runtime.

use crate::common::{LABEL_VALUE_PATTERN, TaintEffect};
use k8s_openapi::api::core::v1::Affinity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Host placement of a set of pods. A field left empty takes the
/// operator's default (the Helm values `placement.nodePools` and
/// `placement.controlPlane`); with `placement.enforced` the operator's
/// values are the only ones, and a spec that sets any of these is refused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// RuntimeClass of the pods, for example a sandbox (Kata Containers,
    /// gVisor) the host offers: a DNS subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_class_name: Option<String>,
    /// Host node labels the pods require: at most 32, keys and values as
    /// Kubernetes labels have them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    pub node_selector: BTreeMap<String, String>,
    /// Host taints the pods tolerate: at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<PlacementToleration>,
    /// Host node and pod affinity of the pods, as Kubernetes' `affinity`.
    /// Node pods also prefer host nodes without other clusters' control
    /// planes, unless the operator is told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the pods: a DNS subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
}

impl Placement {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self == &Placement::default()
    }
}

/// A host taint the pods tolerate, as Kubernetes' `tolerations` entries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementToleration {
    /// The taint's key (`[prefix/]name`); empty with `Exists` tolerates
    /// every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 317))]
    pub key: Option<String>,
    /// `Equal` (the default) matches the value; `Exists` any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// The taint's value, with `Equal`: a label value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = LABEL_VALUE_PATTERN))]
    pub value: Option<String>,
    /// The effect tolerated; empty means every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// With `NoExecute`: how long the pods stay once tainted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub toleration_seconds: Option<i64>,
}

/// How a toleration matches a taint's value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TolerationOperator {
    Equal,
    Exists,
}
