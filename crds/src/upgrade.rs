//! How a change of a `VirtualCluster`'s version or images is rolled out,
//! and where it stands.

use crate::images::ImagesSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a change of the control plane's version or images is rolled out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// How long the API servers of the new version may take until every
    /// replica serves, as a duration such as `10m` (30s to 1h). Past it,
    /// the control plane is rolled back to the version and images it ran
    /// before, and stays there until `version` or `images` change again.
    #[serde(default = "default_api_server_timeout")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && duration(self) >= duration('30s') && duration(self) <= duration('1h')").message("upgrade apiServerTimeout must be a duration from 30s to 1h in hours, minutes and seconds, such as 10m or 1m30s"))]
    pub api_server_timeout: String,
}

/// The API server's default time to serve after a version change.
pub const DEFAULT_API_SERVER_TIMEOUT: &str = "10m";

fn default_api_server_timeout() -> String {
    DEFAULT_API_SERVER_TIMEOUT.to_string()
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        Self {
            api_server_timeout: default_api_server_timeout(),
        }
    }
}

impl UpgradeSpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Where a change of the control plane's version or images stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// The version the control plane ran when the change began.
    pub from: String,
    /// The `spec.images` it ran with: with `from`, what a rollback returns
    /// to.
    #[serde(default)]
    pub from_images: ImagesSpec,
    /// The version asked for.
    pub to: String,
    /// A hash of the version and images asked for: a rollback holds while
    /// they stay the same.
    pub target: String,
    /// The step under way, or how the change ended.
    pub step: UpgradeStep,
    /// When the change began.
    pub started_at: Time,
    /// When the API servers began to change: the start of
    /// `spec.upgrade.apiServerTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_started_at: Option<Time>,
    /// The etcd snapshot taken before etcd or the API servers changed:
    /// `<PersistentVolumeClaim>/<file>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// What happened, in words (a rollback says why, and whether the
    /// snapshot was restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The steps of a version change, in order, and how it ends.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum UpgradeStep {
    /// Taking an etcd snapshot through etcd's snapshot API.
    Snapshot,
    /// Rolling etcd, when its image changes.
    Etcd,
    /// Rolling every API server replica.
    APIServer,
    /// Rolling the controller-manager and the scheduler.
    ControllerManagerAndScheduler,
    /// Rolling the add-ons (CoreDNS).
    Addons,
    /// Replacing the nodes of the pools that follow the cluster's version,
    /// one at a time: cordon, drain, replace, Ready.
    NodePools,
    /// Every component runs what was asked for.
    Complete,
    /// The API servers did not serve in time: the control plane runs the
    /// version it ran before.
    RolledBack,
}
