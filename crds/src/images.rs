//! Where a `VirtualCluster`'s images come from.

use crate::common::{IMAGE_PATTERN, REGISTRY_PATTERN};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Image sources. Each image left unset is `<registry>/<upstream name>:<tag
/// matching the version>`. An image is a reference of at most 512
/// characters: lowercase repository, optional tag, optional digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagesSpec {
    /// Registry (and path) prefix that replaces the operator's default
    /// registry for every image, for example `mirror.example.com/k8s`: a
    /// host (lowercase, an optional port) and optional path, no scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = REGISTRY_PATTERN))]
    pub registry: Option<String>,
    /// Full image reference of etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub etcd: Option<String>,
    /// Full image reference of kube-apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub api_server: Option<String>,
    /// Full image reference of kube-controller-manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub controller_manager: Option<String>,
    /// Full image reference of kube-scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub scheduler: Option<String>,
    /// Full image reference of CoreDNS.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "coreDNS")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub core_dns: Option<String>,
    /// Full image reference of Konnectivity's proxy-server, which runs
    /// beside each API server and carries its traffic into the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub konnectivity_server: Option<String>,
    /// Full image reference of the Nestor node image (kubelet, containerd,
    /// kube-proxy, Konnectivity's proxy-agent and CNI plugins) that node
    /// pools run, tagged with the cluster's version (`REPOSITORY:vVERSION`,
    /// optionally `@sha256:DIGEST`); a pool of another version runs the same
    /// repository at its own version's tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub node: Option<String>,
}
