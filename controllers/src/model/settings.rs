//! The operator's own settings, from its flags (and so from the Helm
//! values): not from any object a tenant can write.

use std::collections::BTreeMap;

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct OperatorSettings {
    /// Registry prefix of the Kubernetes component images when a spec names
    /// none.
    pub default_registry: String,
    /// Repository of the Nestor node image (tagged with the kubelet version).
    pub node_image_repository: String,
    /// How the operator reaches nested API servers.
    pub nested_route: NestedRoute,
    /// Registry mirrors of node pods' containerd: registry host to mirror
    /// endpoints, tried in order.
    pub node_registry_mirrors: BTreeMap<String, Vec<String>>,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            default_registry: "registry.k8s.io".into(),
            node_image_repository: "ghcr.io/nestor-dev/nestor-node".into(),
            nested_route: NestedRoute::Internal,
            node_registry_mirrors: Default::default(),
        }
    }
}

/// How the operator reaches nested API servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NestedRoute {
    /// Through the host Service's DNS name (the operator runs in the host
    /// cluster).
    #[default]
    Internal,
    /// Through the endpoint published in the admin kubeconfig (the operator
    /// runs outside the host cluster).
    Published,
}
