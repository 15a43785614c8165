//! The operator's own settings, from its flags (and so from the Helm
//! values): not from any object a tenant can write.

use crate::model::network::HostNetwork;
use crate::model::validate::AllowedPlacement;
use crate::model::validate::Platform;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use nestor_crds::Placement;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
    /// Registries a spec's image overrides may name. Empty: the registries
    /// of the operator's own defaults ([`OperatorSettings::allowed_registries`]).
    pub allowed_registries: Vec<String>,
    /// Host namespaces whose virtual clusters may run privileged pods. A
    /// platform admin's choice, never a tenant's: see `docs/security.md`.
    pub privileged_namespaces: BTreeSet<String>,
    /// The image of the authorization guard beside each API server: the
    /// operator's own image.
    pub guard_image: String,
    /// Placement of node pods and of control planes where a spec leaves a
    /// field empty.
    pub node_pool_placement: Placement,
    pub control_plane_placement: Placement,
    /// Whether only these placements apply (a spec that sets one is
    /// refused).
    pub placement_enforced: bool,
    /// Whether node pods prefer host nodes without other clusters' control
    /// planes.
    pub spread_from_other_control_planes: bool,
    /// What node pods may reach on the host network, and nested DNS's
    /// upstream.
    pub network: HostNetwork,
    /// How often, at most, what confines a nested cluster is read back
    /// from it (and repaired): every resync at the latest.
    pub addons_recheck: Duration,
    /// The most a node pod may use (`cpu`, `memory`, `ephemeral-storage`,
    /// which bounds its volumes too): its limits where a pool sets none,
    /// and the ceiling of what a pool may ask for.
    pub node_pod_limits: BTreeMap<String, Quantity>,
    /// What a spec's placement may name.
    pub placement_allowed: AllowedPlacement,
    /// The S3 endpoints backups may be written to, as URLs.
    pub backup_endpoints: Vec<String>,
}

/// The node pods' limits when the platform names none.
pub fn default_node_pod_limits() -> BTreeMap<String, Quantity> {
    [
        ("cpu", "4"),
        ("memory", "8Gi"),
        ("ephemeral-storage", "20Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect()
}

/// Parses the node pods' limits (the Helm value `security.nodePodLimits`,
/// as JSON): known resources, each a quantity above zero.
pub fn parse_node_pod_limits(text: &str) -> Result<BTreeMap<String, Quantity>, String> {
    let limits: BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|e| format!("security.nodePodLimits is not a map of quantities: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, value) in limits {
        if !crate::model::validate::RESOURCE_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "security.nodePodLimits: '{name}' is not one of {}",
                crate::model::validate::RESOURCE_NAMES.join(", ")
            ));
        }
        let ok = kube_quantity::ParsedQuantity::try_from(value.as_str())
            .is_ok_and(|q| q > kube_quantity::ParsedQuantity::default());
        if !ok {
            return Err(format!(
                "security.nodePodLimits.{name}: '{value}' is not a quantity above zero"
            ));
        }
        out.insert(name, Quantity(value));
    }
    Ok(out)
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            default_registry: "registry.k8s.io".into(),
            node_image_repository: "ghcr.io/nestor-dev/nestor-node".into(),
            nested_route: NestedRoute::Internal,
            node_registry_mirrors: Default::default(),
            allowed_registries: Vec::new(),
            privileged_namespaces: BTreeSet::new(),
            guard_image: "ghcr.io/nestor-dev/nestor-operator:latest".into(),
            node_pool_placement: Placement::default(),
            control_plane_placement: Placement::default(),
            placement_enforced: false,
            spread_from_other_control_planes: true,
            network: HostNetwork::default(),
            addons_recheck: Duration::from_secs(600),
            node_pod_limits: default_node_pod_limits(),
            placement_allowed: AllowedPlacement::default(),
            backup_endpoints: Vec::new(),
        }
    }
}

impl OperatorSettings {
    /// The registries image overrides may name: the configured ones, or
    /// those of the operator's default images.
    pub fn allowed_registries(&self) -> Vec<String> {
        if !self.allowed_registries.is_empty() {
            return self.allowed_registries.clone();
        }
        let node_registry = self
            .node_image_repository
            .rsplit_once('/')
            .map_or(self.node_image_repository.as_str(), |(registry, _)| {
                registry
            });
        let mut registries = vec![
            self.default_registry.trim_end_matches('/').to_string(),
            node_registry.to_string(),
        ];
        registries.dedup();
        registries
    }

    /// What validation enforces for the platform admin.
    pub fn platform(&self) -> Platform {
        Platform {
            registries: self.allowed_registries(),
            placement_enforced: self.placement_enforced,
            node_pod_limits: self.node_pod_limits.clone(),
            placement_allowed: self.placement_allowed.clone(),
            backup_endpoints: self.backup_endpoints.clone(),
        }
    }

    /// Whether the virtual clusters of host namespace `namespace` may run
    /// privileged pods.
    pub fn allows_privileged(&self, namespace: &str) -> bool {
        self.privileged_namespaces.contains(namespace)
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
