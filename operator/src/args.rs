//! Command-line flags; each can also come from the environment.

use clap::{Parser, ValueEnum};
use nestor_controllers::OperatorSettings;
use nestor_controllers::model::network::HostNetwork;
use nestor_controllers::model::settings::NestedRoute;
use nestor_crds::Placement;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Route {
    /// Through the host Service's DNS name (the operator runs in the host cluster).
    Internal,
    /// Through the endpoint published in the admin kubeconfig.
    Published,
}

/// Nestor: Kubernetes clusters inside Kubernetes.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// Log format.
    #[arg(long, env = "NESTOR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, in RUST_LOG syntax.
    #[arg(long, env = "NESTOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "NESTOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease, so that only one replica reconciles.
    #[arg(long, env = "NESTOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "NESTOR_LEASE_NAME", default_value = "nestor-operator")]
    pub lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, env = "NESTOR_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Registry prefix of Kubernetes component images when a spec names none.
    #[arg(long, env = "NESTOR_DEFAULT_REGISTRY")]
    pub default_registry: Option<String>,
    /// Repository of the Nestor node image (tagged with the kubelet version).
    #[arg(long, env = "NESTOR_NODE_IMAGE")]
    pub node_image: Option<String>,
    /// How to reach nested API servers.
    #[arg(
        long,
        env = "NESTOR_NESTED_ROUTE",
        value_enum,
        default_value = "internal"
    )]
    pub nested_route: Route,
    /// A registry mirror for node pods' containerd, as
    /// `REGISTRY=ENDPOINT[,ENDPOINT...]` (repeatable; `;` separates them in
    /// the environment), e.g. `registry.k8s.io=https://mirror.example:5000`.
    #[arg(long = "node-registry-mirror", env = "NESTOR_NODE_REGISTRY_MIRRORS", value_delimiter = ';', value_parser = parse_mirror)]
    pub node_registry_mirrors: Vec<(String, Vec<String>)>,
    /// Watch only these namespaces (comma-separated; default: every
    /// namespace). A namespaced install needs Roles in these only.
    #[arg(long, env = "NESTOR_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// Reconciles run at once, per controller.
    #[arg(long, env = "NESTOR_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Registries image overrides may name (comma-separated; default: the
    /// registries of the operator's default images).
    #[arg(long, env = "NESTOR_ALLOWED_REGISTRIES", value_delimiter = ',')]
    pub allowed_registries: Vec<String>,
    /// Host namespaces whose virtual clusters may run privileged pods
    /// (comma-separated; default: none).
    #[arg(long, env = "NESTOR_PRIVILEGED_NAMESPACES", value_delimiter = ',')]
    pub privileged_namespaces: Vec<String>,
    /// The image of the authorization guard beside each nested API server:
    /// this operator's own image.
    #[arg(long, env = "NESTOR_GUARD_IMAGE")]
    pub guard_image: Option<String>,
    /// Placement of node pods where a NodePool leaves a field empty, as the
    /// JSON of a `spec.placement`.
    #[arg(long, env = "NESTOR_NODE_POOL_PLACEMENT", value_parser = parse_node_pool_placement)]
    pub node_pool_placement: Option<Placement>,
    /// Placement of control-plane pods where a VirtualCluster leaves a
    /// field empty, as the JSON of a `spec.placement`.
    #[arg(long, env = "NESTOR_CONTROL_PLANE_PLACEMENT", value_parser = parse_control_plane_placement)]
    pub control_plane_placement: Option<Placement>,
    /// What a spec's placement may name, as the JSON of the Helm value
    /// `placement.allowed`; empty: a spec may set no placement field.
    #[arg(long, env = "NESTOR_PLACEMENT_ALLOWED", value_parser = nestor_controllers::model::validate::parse_allowed_placement)]
    pub placement_allowed: Option<nestor_controllers::model::validate::AllowedPlacement>,
    /// The S3 endpoints backups may be written to, as `http` or `https`
    /// URLs of a host and port (comma-separated; default: none, so only
    /// volume destinations).
    #[arg(long = "backup-allowed-endpoint", env = "NESTOR_BACKUP_ALLOWED_ENDPOINTS", value_delimiter = ',', value_parser = parse_backup_endpoint)]
    pub backup_endpoints: Vec<String>,
    /// Apply only the operator's placements; refuse specs that set one.
    #[arg(long, env = "NESTOR_PLACEMENT_ENFORCED", default_value_t = false, action = clap::ArgAction::Set)]
    pub placement_enforced: bool,
    /// Node pods prefer host nodes without other clusters' control planes.
    #[arg(long, env = "NESTOR_SPREAD_FROM_OTHER_CONTROL_PLANES", default_value_t = true, action = clap::ArgAction::Set)]
    pub spread_from_other_control_planes: bool,
    /// What node pods may reach on the host network and where nested DNS
    /// forwards, as the JSON of the Helm value `network`.
    #[arg(long, env = "NESTOR_NETWORK", value_parser = HostNetwork::parse)]
    pub network: Option<HostNetwork>,
    /// Seconds between two reads of what confines each nested cluster (its
    /// admission policies, RBAC and DNS objects); a missing or changed one
    /// is written again.
    #[arg(long, env = "NESTOR_ADDONS_RECHECK_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub addons_recheck_seconds: u64,
    /// The most a node pod may use, as JSON such as
    /// `{"cpu":"4","memory":"8Gi","ephemeral-storage":"20Gi"}`: its limits
    /// where a pool sets none, and the ceiling of what a pool may ask for.
    #[arg(long, env = "NESTOR_NODE_POD_LIMITS", value_parser = nestor_controllers::model::settings::parse_node_pod_limits)]
    pub node_pod_limits: Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
    #[command(subcommand)]
    pub command: Option<Command>,
}

fn parse_placement(flag: &str, text: &str) -> Result<Placement, String> {
    let placement: Placement =
        serde_json::from_str(text).map_err(|e| format!("{flag} is not a placement: {e}"))?;
    nestor_controllers::model::validate::validate_placement(flag, &placement)
        .map_err(|e| e.to_string())?;
    Ok(placement)
}

fn parse_node_pool_placement(text: &str) -> Result<Placement, String> {
    parse_placement("placement.nodePools", text)
}

fn parse_control_plane_placement(text: &str) -> Result<Placement, String> {
    parse_placement("placement.controlPlane", text)
}

/// What else this binary runs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// The authorization guard beside a nested API server.
    Guard {
        /// Where to listen: loopback in the API server's pod.
        #[arg(long, default_value = "127.0.0.1:10260")]
        listen: SocketAddr,
    },
}

impl Args {
    pub(crate) fn init_tracing(&self) {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        match self.log_format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
    }

    pub(crate) fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }

    pub(crate) fn settings(&self) -> OperatorSettings {
        let defaults = OperatorSettings::default();
        OperatorSettings {
            default_registry: self
                .default_registry
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(defaults.default_registry),
            node_image_repository: self
                .node_image
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(defaults.node_image_repository),
            nested_route: match self.nested_route {
                Route::Internal => NestedRoute::Internal,
                Route::Published => NestedRoute::Published,
            },
            node_registry_mirrors: self.node_registry_mirrors.iter().cloned().collect(),
            allowed_registries: self
                .allowed_registries
                .iter()
                .map(|r| r.trim().trim_end_matches('/').to_string())
                .filter(|r| !r.is_empty())
                .collect(),
            privileged_namespaces: self
                .privileged_namespaces
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            guard_image: self
                .guard_image
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(defaults.guard_image),
            node_pool_placement: self.node_pool_placement.clone().unwrap_or_default(),
            control_plane_placement: self.control_plane_placement.clone().unwrap_or_default(),
            placement_enforced: self.placement_enforced,
            placement_allowed: self.placement_allowed.clone().unwrap_or_default(),
            spread_from_other_control_planes: self.spread_from_other_control_planes,
            network: self.network.clone().unwrap_or_default(),
            addons_recheck: std::time::Duration::from_secs(self.addons_recheck_seconds),
            node_pod_limits: self
                .node_pod_limits
                .clone()
                .unwrap_or(defaults.node_pod_limits),
            backup_endpoints: self.backup_endpoints.clone(),
        }
    }
}

/// Checks one of `backup.allowedEndpoints`.
fn parse_backup_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    match nestor_controllers::model::validate::endpoint_problem(text) {
        None => Ok(text.to_string()),
        Some(why) => Err(format!(
            "backup.allowedEndpoints: {text:?} is not an http or https URL of a host and port ({why})"
        )),
    }
}

/// Parses `REGISTRY=ENDPOINT[,ENDPOINT...]`.
fn parse_mirror(text: &str) -> Result<(String, Vec<String>), String> {
    let (registry, endpoints) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not REGISTRY=ENDPOINT[,ENDPOINT...]"))?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:/[]*".contains(c))
    };
    if !plain(registry) || registry.contains('/') {
        return Err(format!(
            "registry {registry:?} must be a host name with an optional port"
        ));
    }
    let endpoints: Vec<String> = endpoints.split(',').map(|e| e.trim().to_string()).collect();
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) || !plain(e) {
            return Err(format!(
                "mirror endpoint {e:?} must be an http:// or https:// URL"
            ));
        }
    }
    Ok((registry.to_string(), endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_mirror("registry.k8s.io=http://10.0.0.1:5000,https://m.example").unwrap(),
            (
                "registry.k8s.io".to_string(),
                vec![
                    "http://10.0.0.1:5000".to_string(),
                    "https://m.example".to_string()
                ]
            )
        );
        assert!(
            parse_mirror("registry.k8s.io")
                .unwrap_err()
                .contains("REGISTRY=ENDPOINT")
        );
        assert!(parse_mirror("a=ftp://x").unwrap_err().contains("http"));
        assert!(parse_mirror("a=http://x\"y").is_err());
    }

    #[test]
    fn placements_parse_and_bad_ones_are_refused_by_field() {
        let p = parse_node_pool_placement(
            r#"{"runtimeClassName":"kata","nodeSelector":{"pool":"tenants"}}"#,
        )
        .unwrap();
        assert_eq!(p.runtime_class_name.as_deref(), Some("kata"));
        let bad =
            parse_control_plane_placement(r#"{"priorityClassName":"Not_A_Name"}"#).unwrap_err();
        assert!(
            bad.contains("placement.controlPlane.priorityClassName"),
            "{bad}"
        );
        assert!(
            parse_node_pool_placement("[1]")
                .unwrap_err()
                .contains("placement.nodePools is not a placement")
        );
        assert!(parse_mirror("a/b=http://x").is_err());
        let args = Args::try_parse_from([
            "nestor-operator",
            "--node-registry-mirror",
            "a=http://x",
            "--node-registry-mirror",
            "b=http://y",
        ])
        .unwrap();
        assert_eq!(args.settings().node_registry_mirrors.len(), 2);
    }
}
