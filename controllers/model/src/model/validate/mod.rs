//! Checks the API server's schema cannot express, made before the first
//! write. Pure: no client.
//!
//! A spec that fails here is reported as a `Ready=False/InvalidSpec`
//! condition and a Warning Event; nothing is written, and nothing already
//! provisioned is touched. Everything the API server would refuse in a
//! child (a quantity, a name, a label) is refused here first, so that a
//! cluster never stops half-written. Every problem names its field and
//! quotes at most a short excerpt of the bad value.

mod backup;
mod fields;
mod network;
mod placement;
pub use backup::{
    MIN_BACKUP_INTERVAL_MINUTES, endpoint_problem, latest_slot, next_slot, parse_schedule,
    validate_backup,
};
pub use placement::{AllowedPlacement, parse_allowed_placement};

pub use fields::{MAX_ARG_VALUE, MAX_EXTRA_ARGS, MAX_NAME_LEN, RESOURCE_NAMES, excerpt};
pub use network::{MIN_SERVICE_RANGE_ADDRESSES, NODE_BLOCK_PREFIX};

use crate::model::flags;
use fields::{
    check_extra_args, check_image, check_object_name, check_registry, check_resources, is_dns_name,
    is_label_value, label_key_problem, quantity,
};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;
use nestor_crds::{NodePoolSpec, VirtualClusterSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The Kubernetes versions this operator runs: exactly those its tests
/// run (the test bed's `K8S_VERSION` and `K8S_PREVIOUS_VERSION`, which a
/// test holds to this list), for the control plane and for node pools.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.34.5", "1.35.4"];
/// The smallest etcd volume.
pub const MIN_ETCD_STORAGE: &str = "64Mi";
/// Most problems a message lists; the rest are counted.
const MOST_PROBLEMS_SHOWN: usize = 8;

/// A parsed `1.MINOR.PATCH` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub minor: u64,
    pub patch: u64,
}

/// The version a pool's kubelets run: the one its spec (or the cluster's)
/// asks for, but never newer than what every API server already runs
/// (`status.version`), as the version skew policy requires. While the API
/// servers roll to a new version, the nodes wait; a cluster with no
/// running version yet (a new one) takes the wanted version.
pub fn kubelet_version(wanted: String, running: Option<&str>) -> String {
    match (
        parse_version(&wanted),
        running.and_then(|r| parse_version(r).map(|v| (r, v))),
    ) {
        (Some(w), Some((text, r))) if w > r => text.to_string(),
        _ => wanted,
    }
}

/// Parses `1.MINOR.PATCH` (semver: no leading zeros).
pub fn parse_version(version: &str) -> Option<KubeVersion> {
    let v = semver::Version::parse(version).ok()?;
    (v.major == 1 && v.pre.is_empty() && v.build.is_empty()).then_some(KubeVersion {
        minor: v.minor,
        patch: v.patch,
    })
}

/// What validation learned, for the builders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidCluster {
    pub version: KubeVersion,
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    pub dns_service_ip: IpAddr,
    /// First address of the service range: the nested `kubernetes` Service.
    pub kubernetes_service_ip: IpAddr,
    /// What the platform admin lets this cluster's node pods reach beyond
    /// the platform's own allowances (`spec.allowedEgress`).
    pub allowed_egress: Vec<crate::model::network::AllowedEgress>,
}

/// Why a spec was refused: one `field: problem` sentence per problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", shown(.0))]
pub struct Invalid(pub Vec<String>);

/// The first problems, and how many more there are: a message stays short
/// whatever the spec holds.
fn shown(problems: &[String]) -> String {
    let mut text = problems
        .iter()
        .take(MOST_PROBLEMS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > MOST_PROBLEMS_SHOWN {
        text.push_str(&format!(
            "; and {} more",
            problems.len() - MOST_PROBLEMS_SHOWN
        ));
    }
    text
}

/// The problems found so far, each under the path of its field.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn push(&mut self, field: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{field}: {problem}"));
    }

    pub(crate) fn into_result<T>(self, valid: Option<T>) -> Result<T, Invalid> {
        match valid {
            Some(valid) if self.0.is_empty() => Ok(valid),
            _ => Err(Invalid(self.0)),
        }
    }
}

/// A version that parses and that this operator runs (a node image exists
/// for it, and a test has run it).
fn check_version(problems: &mut Problems, field: &str, version: &str) -> Option<KubeVersion> {
    match parse_version(version) {
        None => {
            problems.push(
                field,
                format!(
                    "'{}' is not MAJOR.MINOR.PATCH with major 1 and no leading zeros",
                    excerpt(version)
                ),
            );
            None
        }
        Some(_) if !SUPPORTED_VERSIONS.contains(&version) => {
            problems.push(
                field,
                format!(
                    "{version} is not supported; this operator runs {} (the versions its tests run)",
                    SUPPORTED_VERSIONS.join(" and ")
                ),
            );
            None
        }
        Some(v) => Some(v),
    }
}

/// What the platform admin decided that validation enforces
/// ([`crate::model::settings::OperatorSettings::platform`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Platform {
    /// Registries image overrides must come from.
    pub registries: Vec<String>,
    /// Whether only the operator's own placement applies.
    pub placement_enforced: bool,
    /// The most a node pod may ask for or be limited to, by resource.
    pub node_pod_limits: BTreeMap<String, Quantity>,
    /// What a spec's placement may name.
    pub placement_allowed: AllowedPlacement,
    /// The S3 endpoints backups may be written to.
    pub backup_endpoints: Vec<String>,
}

/// Validates a `VirtualCluster` named `name` and returns what the builders
/// need. Image overrides must come from the platform's registries.
pub fn validate_cluster(
    name: &str,
    spec: &VirtualClusterSpec,
    platform: &Platform,
) -> Result<ValidCluster, Invalid> {
    let registries = &platform.registries;
    let mut problems = Problems::default();
    check_object_name(&mut problems, "metadata.name", name);
    let version = check_version(&mut problems, "spec.version", &spec.version);

    let etcd = &spec.etcd;
    if ![1, 3, 5].contains(&etcd.replicas) {
        problems.push(
            "spec.etcd.replicas",
            format!("{}; it must be 1, 3 or 5", etcd.replicas),
        );
    }
    if let Some(size) = quantity(&mut problems, "spec.etcd.storage", &etcd.storage) {
        let least = ParsedQuantity::try_from(MIN_ETCD_STORAGE).unwrap_or_default();
        if size < least {
            problems.push(
                "spec.etcd.storage",
                format!(
                    "'{}' is less than {MIN_ETCD_STORAGE}, too small for etcd",
                    excerpt(&etcd.storage)
                ),
            );
        }
    }
    if let Some(class) = &etcd.storage_class_name
        && !is_dns_name(class, false)
    {
        problems.push(
            "spec.etcd.storageClassName",
            format!(
                "'{}' is not a storage class name (a DNS subdomain of at most 253 characters)",
                excerpt(class)
            ),
        );
    }

    for (field, replicas, most) in [
        ("spec.apiServer.replicas", spec.api_server.replicas, 5),
        (
            "spec.controllerManager.replicas",
            spec.controller_manager.replicas,
            5,
        ),
        ("spec.scheduler.replicas", spec.scheduler.replicas, 5),
        (
            "spec.addons.coreDNS.replicas",
            spec.addons.core_dns.replicas,
            10,
        ),
    ] {
        if !(1..=most).contains(&replicas) {
            problems.push(field, format!("{replicas}; it must be 1 to {most}"));
        }
    }
    for (field, resources) in [
        ("spec.etcd.resources", &etcd.resources),
        ("spec.apiServer.resources", &spec.api_server.resources),
        (
            "spec.controllerManager.resources",
            &spec.controller_manager.resources,
        ),
        ("spec.scheduler.resources", &spec.scheduler.resources),
    ] {
        check_resources(&mut problems, field, resources.as_ref());
    }
    check_extra_args(
        &mut problems,
        "spec.apiServer.extraArgs",
        &spec.api_server.extra_args,
        flags::APISERVER,
        flags::APISERVER_ALLOWED,
    );
    check_extra_args(
        &mut problems,
        "spec.controllerManager.extraArgs",
        &spec.controller_manager.extra_args,
        flags::CONTROLLER_MANAGER,
        flags::CONTROLLER_MANAGER_ALLOWED,
    );
    check_extra_args(
        &mut problems,
        "spec.scheduler.extraArgs",
        &spec.scheduler.extra_args,
        flags::SCHEDULER,
        flags::SCHEDULER_ALLOWED,
    );
    for san in &spec.api_server.cert_sans {
        if san.parse::<IpAddr>().is_err() && !is_dns_name(san, true) {
            problems.push(
                "spec.apiServer.certSANs",
                format!("'{}' is neither an IP address nor a DNS name", excerpt(san)),
            );
        }
    }

    let images = &spec.images;
    if let Some(registry) = &images.registry {
        check_registry(&mut problems, "spec.images.registry", registry);
        check_allowed(&mut problems, "spec.images.registry", registry, registries);
    }
    for (field, image) in [
        ("spec.images.etcd", &images.etcd),
        ("spec.images.apiServer", &images.api_server),
        ("spec.images.controllerManager", &images.controller_manager),
        ("spec.images.scheduler", &images.scheduler),
        ("spec.images.coreDNS", &images.core_dns),
        (
            "spec.images.konnectivityServer",
            &images.konnectivity_server,
        ),
        ("spec.images.node", &images.node),
    ] {
        if let Some(image) = image {
            check_image(&mut problems, field, image);
            check_allowed(&mut problems, field, image, registries);
        }
    }

    if let Some(node) = &images.node
        && !crate::model::image_ref::node_image_is_of(node, &spec.version)
    {
        problems.push(
            "spec.images.node",
            format!(
                "'{}' is not tagged v{} (the cluster's version): a node image carries its kubelet, so its tag is the version it runs (REPOSITORY:v{}, optionally @sha256:DIGEST)",
                excerpt(node),
                excerpt(&spec.version),
                excerpt(&spec.version)
            ),
        );
    }

    let domain = &spec.networking.cluster_domain;
    if !is_dns_name(domain, false) {
        problems.push(
            "spec.networking.clusterDomain",
            format!("'{}' is not a DNS domain", excerpt(domain)),
        );
    }
    placement::check_tenant_placement(&mut problems, &spec.placement, platform);
    let network = network::check_networking(&mut problems, &spec.networking);
    let allowed_egress = network::check_allowed_egress(&mut problems, &spec.allowed_egress);
    if let Some(backup) = &spec.backup {
        backup::check_backup(&mut problems, backup, &platform.backup_endpoints);
    }
    let valid = version.zip(network).map(|(version, net)| ValidCluster {
        version,
        pod_cidr: net.pod_cidr,
        service_cidr: net.service_cidr,
        dns_service_ip: net.dns_service_ip,
        kubernetes_service_ip: net.kubernetes_service_ip,
        allowed_egress,
    });
    problems.into_result(valid)
}

/// Label prefixes a kubelet may not set on its own Node (NodeRestriction).
const RESTRICTED_LABEL_DOMAINS: &[&str] = &["kubernetes.io", "k8s.io"];
/// Labels under those domains a kubelet may set.
const ALLOWED_KUBELET_LABEL_PREFIXES: &[&str] = &[
    "kubelet.kubernetes.io/",
    "node.kubernetes.io/",
    "topology.kubernetes.io/",
    "beta.kubernetes.io/",
];
/// The domain of Nestor's own labels.
const NESTOR_LABEL_DOMAIN: &str = "nestor.dev";
/// Most labels and taints of a pool.
pub const MAX_POOL_LABELS: usize = 32;

fn under(prefix: &str, domain: &str) -> bool {
    prefix == domain || prefix.ends_with(&format!(".{domain}"))
}

fn check_pool_label(problems: &mut Problems, key: &str, value: &str) {
    let field = "spec.labels";
    if let Some(why) = label_key_problem(key) {
        problems.push(
            field,
            format!("'{}' is not a label key: {why}", excerpt(key)),
        );
        return;
    }
    let prefix = key.split_once('/').map(|(p, _)| p);
    if prefix.is_some_and(|p| under(p, NESTOR_LABEL_DOMAIN)) {
        problems.push(
            field,
            format!(
                "'{}' is under nestor.dev, which Nestor's own labels use",
                excerpt(key)
            ),
        );
    } else if prefix.is_some_and(|p| RESTRICTED_LABEL_DOMAINS.iter().any(|d| under(p, d)))
        && !ALLOWED_KUBELET_LABEL_PREFIXES
            .iter()
            .any(|allowed| key.starts_with(allowed))
    {
        problems.push(
            field,
            format!(
                "a kubelet may not set '{}' on its Node (NodeRestriction); use your own prefix",
                excerpt(key)
            ),
        );
    }
    if !is_label_value(value) {
        problems.push(
            &format!("{field}.{}", excerpt(key)),
            format!(
                "'{}' is not a label value (at most 63 alphanumerics, '-', '_' or '.' between alphanumerics)",
                excerpt(value)
            ),
        );
    }
}

/// Validates a placement on its own (the operator's defaults, from its
/// flags), naming problems under `field`.
pub fn validate_placement(field: &str, placement: &nestor_crds::Placement) -> Result<(), Invalid> {
    let mut problems = Problems::default();
    placement::check_placement(&mut problems, field, placement, false);
    problems.into_result(Some(()))
}

/// An image or registry under one of the allowed registries: equal to one,
/// or below it after a `/`.
fn check_allowed(problems: &mut Problems, field: &str, reference: &str, registries: &[String]) {
    let under = |registry: &String| {
        reference == registry
            || reference
                .strip_prefix(registry.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if !registries.iter().any(under) {
        problems.push(
            field,
            format!(
                "'{}' is not from a registry this platform allows (allowed: {})",
                excerpt(reference),
                registries.join(", ")
            ),
        );
    }
}

/// Validates a `NodePool` named `name` against its cluster's version (the
/// skew policy: a kubelet may be up to three minor versions older than the
/// control plane, never newer). Returns the kubelet version the pool runs.
pub fn validate_pool(
    name: &str,
    spec: &NodePoolSpec,
    cluster_version: &str,
    platform: &Platform,
) -> Result<String, Invalid> {
    let mut problems = Problems::default();
    placement::check_tenant_placement(&mut problems, &spec.placement, platform);
    check_object_name(&mut problems, "metadata.name", name);
    check_object_name(
        &mut problems,
        "spec.clusterRef.name",
        &spec.cluster_ref.name,
    );
    if !(0..=1000).contains(&spec.replicas) {
        problems.push(
            "spec.replicas",
            format!("{}; it must be 0 to 1000", spec.replicas),
        );
    }
    let kubelet = spec
        .version
        .clone()
        .unwrap_or_else(|| cluster_version.to_string());
    if let (Some(k), Some(cp)) = (
        check_version(&mut problems, "spec.version", &kubelet),
        parse_version(cluster_version),
    ) {
        if k > cp {
            problems.push(
                "spec.version",
                format!(
                    "kubelet version {kubelet} is newer than the control plane's {cluster_version}"
                ),
            );
        } else if cp.minor - k.minor > 3 {
            problems.push(
                "spec.version",
                format!("kubelet version {kubelet} is more than three minor versions older than the control plane's {cluster_version}"),
            );
        }
    }
    check_resources(&mut problems, "spec.resources", spec.resources.as_ref());
    fields::check_within(
        &mut problems,
        "spec.resources",
        spec.resources.as_ref(),
        &platform.node_pod_limits,
    );
    if spec.labels.len() > MAX_POOL_LABELS {
        problems.push(
            "spec.labels",
            format!("{} labels; at most {MAX_POOL_LABELS}", spec.labels.len()),
        );
    }
    for (key, value) in &spec.labels {
        check_pool_label(&mut problems, key, value);
    }
    if spec.taints.len() > MAX_POOL_LABELS {
        problems.push(
            "spec.taints",
            format!("{} taints; at most {MAX_POOL_LABELS}", spec.taints.len()),
        );
    }
    let mut seen = BTreeSet::new();
    for taint in &spec.taints {
        if let Some(why) = label_key_problem(&taint.key) {
            problems.push(
                "spec.taints",
                format!("'{}' is not a taint key: {why}", excerpt(&taint.key)),
            );
        }
        if let Some(value) = &taint.value
            && !is_label_value(value)
        {
            problems.push(
                "spec.taints",
                format!(
                    "the value '{}' of '{}' is not a label value",
                    excerpt(value),
                    excerpt(&taint.key)
                ),
            );
        }
        if !seen.insert((taint.key.as_str(), taint.effect)) {
            problems.push(
                "spec.taints",
                format!(
                    "'{}' with effect {:?} is listed twice",
                    excerpt(&taint.key),
                    taint.effect
                ),
            );
        }
    }
    problems.into_result(Some(kubelet))
}

#[cfg(test)]
mod tests;
