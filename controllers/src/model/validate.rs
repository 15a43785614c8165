//! Checks the apiserver's schema cannot express. Pure: no client.
//!
//! A spec that fails here is reported as a `Ready=False/InvalidSpec`
//! condition and a Warning Event; nothing already provisioned is touched.

use crate::model::flags;
use ipnet::IpNet;
use nestor_crds::{NodePoolSpec, VirtualClusterSpec};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Kubernetes minor versions this operator knows how to configure.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u64> = 33..=37;
/// Longest name of a `VirtualCluster` or `NodePool`: children add suffixes
/// and must stay valid DNS labels.
pub const MAX_NAME_LEN: usize = 40;

/// A parsed `1.MINOR.PATCH` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub minor: u64,
    pub patch: u64,
}

/// Parses `1.MINOR.PATCH`.
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
}

/// Why a spec was refused: one sentence per problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

fn check_name(name: &str, kind: &str, problems: &mut Vec<String>) {
    if name.len() > MAX_NAME_LEN {
        problems.push(format!(
            "{kind} name '{name}' is longer than {MAX_NAME_LEN} characters"
        ));
    }
}

fn check_extra_args(
    field: &str,
    args: &BTreeMap<String, String>,
    managed: &[&str],
    problems: &mut Vec<String>,
) {
    for key in args.keys() {
        if key.starts_with('-') {
            problems.push(format!(
                "{field}: write '{}' without leading dashes",
                key.trim_start_matches('-')
            ));
        } else if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.push(format!(
                "{field}: '{key}' is not a flag name (lowercase letters, digits and dashes)"
            ));
        } else if managed.contains(&key.as_str()) {
            problems.push(format!(
                "{field}: '{key}' is set by Nestor and cannot be overridden"
            ));
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Validates a `VirtualCluster` spec and returns what the builders need.
pub fn validate_cluster(name: &str, spec: &VirtualClusterSpec) -> Result<ValidCluster, Invalid> {
    let mut problems = Vec::new();
    check_name(name, "VirtualCluster", &mut problems);

    let version = parse_version(&spec.version);
    match version {
        None => problems.push(format!(
            "version '{}' is not MAJOR.MINOR.PATCH with major 1",
            spec.version
        )),
        Some(v) if !SUPPORTED_MINORS.contains(&v.minor) => problems.push(format!(
            "version {} is not supported; this operator runs 1.{} to 1.{}",
            spec.version,
            SUPPORTED_MINORS.start(),
            SUPPORTED_MINORS.end()
        )),
        Some(_) => {}
    }
    if ![1, 3, 5].contains(&spec.etcd.replicas) {
        problems.push(format!(
            "etcd.replicas is {}; it must be 1, 3 or 5",
            spec.etcd.replicas
        ));
    }
    for (field, replicas) in [
        ("apiServer.replicas", spec.api_server.replicas),
        (
            "controllerManager.replicas",
            spec.controller_manager.replicas,
        ),
        ("scheduler.replicas", spec.scheduler.replicas),
        ("addons.coreDNS.replicas", spec.addons.core_dns.replicas),
    ] {
        if replicas < 1 {
            problems.push(format!("{field} is {replicas}; it must be at least 1"));
        }
    }
    check_extra_args(
        "apiServer.extraArgs",
        &spec.api_server.extra_args,
        flags::APISERVER,
        &mut problems,
    );
    check_extra_args(
        "controllerManager.extraArgs",
        &spec.controller_manager.extra_args,
        flags::CONTROLLER_MANAGER,
        &mut problems,
    );
    check_extra_args(
        "scheduler.extraArgs",
        &spec.scheduler.extra_args,
        flags::SCHEDULER,
        &mut problems,
    );
    for san in &spec.api_server.cert_sans {
        if san.parse::<IpAddr>().is_err() && !is_dns_name(san) {
            problems.push(format!(
                "apiServer.certSANs: '{san}' is neither an IP address nor a DNS name"
            ));
        }
    }

    let net = &spec.networking;
    let pod_cidr = net
        .pod_cidr
        .parse::<IpNet>()
        .map_err(|_| format!("networking.podCIDR '{}' is not a CIDR", net.pod_cidr));
    let service_cidr = net.service_cidr.parse::<IpNet>().map_err(|_| {
        format!(
            "networking.serviceCIDR '{}' is not a CIDR",
            net.service_cidr
        )
    });
    let dns_ip = net.dns_service_ip.parse::<IpAddr>().map_err(|_| {
        format!(
            "networking.dnsServiceIP '{}' is not an IP address",
            net.dns_service_ip
        )
    });
    if !is_dns_name(&net.cluster_domain) || net.cluster_domain.starts_with("*.") {
        problems.push(format!(
            "networking.clusterDomain '{}' is not a DNS domain",
            net.cluster_domain
        ));
    }
    let mut valid_net = None;
    match (pod_cidr, service_cidr, dns_ip) {
        (Ok(pods), Ok(services), Ok(dns)) => {
            let (pods, services) = (pods.trunc(), services.trunc());
            if pods.contains(&services.network()) || services.contains(&pods.network()) {
                problems.push(format!(
                    "networking: podCIDR {pods} and serviceCIDR {services} overlap"
                ));
            }
            if !services.contains(&dns) {
                problems.push(format!(
                    "networking.dnsServiceIP {dns} is outside serviceCIDR {services}"
                ));
            }
            let max_bits = match services {
                IpNet::V4(_) => 20,
                IpNet::V6(_) => 20,
            };
            if u32::from(services.max_prefix_len() - services.prefix_len()) > max_bits {
                problems.push(format!(
                    "networking.serviceCIDR {services} is too large; the API server allocates from at most 2^20 addresses"
                ));
            }
            if services.hosts().next().is_none() {
                problems.push(format!(
                    "networking.serviceCIDR {services} has no usable address"
                ));
            }
            if matches!(pods, IpNet::V4(_)) != matches!(services, IpNet::V4(_)) {
                problems.push(
                    "networking: podCIDR and serviceCIDR must be of the same IP family".into(),
                );
            }
            if let Some(first) = services.hosts().next() {
                if first == dns {
                    problems.push(format!(
                        "networking.dnsServiceIP {dns} is the first service address, which the `kubernetes` Service takes"
                    ));
                }
                valid_net = Some((pods, services, dns, first));
            }
        }
        (pods, services, dns) => {
            problems.extend(
                [pods.err(), services.err(), dns.err()]
                    .into_iter()
                    .flatten(),
            );
        }
    }

    match (problems.is_empty(), version, valid_net) {
        (
            true,
            Some(version),
            Some((pod_cidr, service_cidr, dns_service_ip, kubernetes_service_ip)),
        ) => Ok(ValidCluster {
            version,
            pod_cidr,
            service_cidr,
            dns_service_ip,
            kubernetes_service_ip,
        }),
        _ => Err(Invalid(problems)),
    }
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

fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !name_ok || prefix.is_some_and(|p| !is_dns_name(p)) {
        return Some(format!("labels: '{key}' is not a valid label key"));
    }
    let restricted = prefix.is_some_and(|p| {
        RESTRICTED_LABEL_DOMAINS
            .iter()
            .any(|d| p == *d || p.ends_with(&format!(".{d}")))
    });
    if restricted
        && !ALLOWED_KUBELET_LABEL_PREFIXES
            .iter()
            .any(|allowed| key.starts_with(allowed))
    {
        return Some(format!(
            "labels: a kubelet may not set '{key}' on its Node (NodeRestriction); use your own prefix"
        ));
    }
    None
}

/// Validates a `NodePool` against its cluster's version (the skew policy:
/// a kubelet may be up to three minor versions older than the control plane,
/// never newer). Returns the kubelet version the pool runs.
pub fn validate_pool(
    name: &str,
    spec: &NodePoolSpec,
    cluster_version: &str,
) -> Result<String, Invalid> {
    let mut problems = Vec::new();
    check_name(name, "NodePool", &mut problems);
    if spec.replicas < 0 {
        problems.push(format!(
            "replicas is {}; it must be 0 or more",
            spec.replicas
        ));
    }
    let kubelet = spec
        .version
        .clone()
        .unwrap_or_else(|| cluster_version.to_string());
    match (parse_version(&kubelet), parse_version(cluster_version)) {
        (None, _) => problems.push(format!(
            "version '{kubelet}' is not MAJOR.MINOR.PATCH with major 1"
        )),
        (Some(k), Some(cp)) => {
            if k > cp {
                problems.push(format!(
                    "kubelet version {kubelet} is newer than the control plane's {cluster_version}"
                ));
            } else if cp.minor - k.minor > 3 {
                problems.push(format!(
                    "kubelet version {kubelet} is more than three minor versions older than the control plane's {cluster_version}"
                ));
            }
        }
        (Some(_), None) => problems.push(format!(
            "the cluster's version '{cluster_version}' is invalid"
        )),
    }
    for key in spec.labels.keys() {
        problems.extend(label_key_problem(key));
    }
    for taint in &spec.taints {
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&taint.effect.as_str()) {
            problems.push(format!(
                "taints: effect '{}' of '{}' must be NoSchedule, PreferNoSchedule or NoExecute",
                taint.effect, taint.key
            ));
        }
        if label_key_problem(&taint.key).is_some_and(|p| !p.contains("NodeRestriction")) {
            problems.push(format!("taints: '{}' is not a valid taint key", taint.key));
        }
    }
    if problems.is_empty() {
        Ok(kubelet)
    } else {
        Err(Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Taint;
    use nestor_crds::ClusterReference;

    fn spec() -> VirtualClusterSpec {
        serde_json::from_value(serde_json::json!({})).unwrap()
    }

    #[test]
    fn empty_spec_is_valid_with_defaults() {
        let valid = validate_cluster("demo", &spec()).unwrap();
        assert_eq!(
            valid.version,
            KubeVersion {
                minor: 35,
                patch: 4
            }
        );
        assert_eq!(valid.kubernetes_service_ip.to_string(), "10.96.0.1");
        assert_eq!(valid.dns_service_ip.to_string(), "10.96.0.10");
    }

    fn problems(mutate: impl FnOnce(&mut VirtualClusterSpec)) -> String {
        let mut s = spec();
        mutate(&mut s);
        validate_cluster("demo", &s).unwrap_err().to_string()
    }

    #[test]
    fn every_managed_flag_is_refused_by_name() {
        type Args = fn(&mut VirtualClusterSpec) -> &mut BTreeMap<String, String>;
        let components: [(&str, &[&str], Args); 3] = [
            ("apiServer.extraArgs", flags::APISERVER, |s| {
                &mut s.api_server.extra_args
            }),
            (
                "controllerManager.extraArgs",
                flags::CONTROLLER_MANAGER,
                |s| &mut s.controller_manager.extra_args,
            ),
            ("scheduler.extraArgs", flags::SCHEDULER, |s| {
                &mut s.scheduler.extra_args
            }),
        ];
        for (field, managed, args) in components {
            for flag in managed {
                let message = problems(|s| {
                    args(s).insert(flag.to_string(), "x".into());
                });
                assert!(
                    message.contains(field) && message.contains(&format!("'{flag}'")),
                    "{flag}: {message}"
                );
            }
        }
    }

    #[test]
    fn each_bad_input_gets_a_clear_message() {
        assert!(problems(|s| s.version = "v1.35.0".into()).contains("not MAJOR.MINOR.PATCH"));
        assert!(problems(|s| s.version = "1.20.0".into()).contains("not supported"));
        assert!(problems(|s| s.etcd.replicas = 2).contains("1, 3 or 5"));
        assert!(problems(|s| s.api_server.replicas = 0).contains("at least 1"));
        assert!(
            problems(|s| {
                s.api_server.extra_args.insert("--v".into(), "2".into());
            })
            .contains("without leading dashes")
        );
        assert!(
            problems(|s| {
                s.api_server
                    .extra_args
                    .insert("etcd-servers".into(), "x".into());
            })
            .contains("set by Nestor")
        );
        assert!(
            problems(|s| s.api_server.cert_sans.push("not a name!".into()))
                .contains("neither an IP")
        );
        assert!(problems(|s| s.networking.pod_cidr = "10.96.0.0/16".into()).contains("overlap"));
        assert!(problems(|s| s.networking.pod_cidr = "10.0.0.0/33".into()).contains("not a CIDR"));
        assert!(
            problems(|s| s.networking.dns_service_ip = "10.200.0.10".into())
                .contains("outside serviceCIDR")
        );
        assert!(
            problems(|s| s.networking.dns_service_ip = "10.96.0.1".into())
                .contains("first service address")
        );
        assert!(
            problems(|s| s.networking.service_cidr = "10.0.0.0/8".into()).contains("too large")
        );
        assert!(
            problems(|s| s.networking.cluster_domain = "Bad_Domain".into())
                .contains("not a DNS domain")
        );
        assert!(
            problems(|s| {
                s.networking.service_cidr = "fd00::/108".into();
                s.networking.dns_service_ip = "fd00::a".into();
            })
            .contains("same IP family")
        );
        let long = "x".repeat(41);
        assert!(
            validate_cluster(&long, &spec())
                .unwrap_err()
                .to_string()
                .contains("longer than 40")
        );
    }

    #[test]
    fn several_problems_are_all_reported() {
        let err = problems(|s| {
            s.etcd.replicas = 4;
            s.version = "banana".into();
        });
        assert!(err.contains("1, 3 or 5") && err.contains("banana"), "{err}");
    }

    fn pool(version: Option<&str>) -> NodePoolSpec {
        NodePoolSpec {
            cluster_ref: ClusterReference {
                name: "demo".into(),
            },
            replicas: 1,
            version: version.map(Into::into),
            ..NodePoolSpec::default()
        }
    }

    #[test]
    fn pool_versions_respect_the_skew_policy() {
        assert_eq!(validate_pool("p", &pool(None), "1.35.4").unwrap(), "1.35.4");
        assert_eq!(
            validate_pool("p", &pool(Some("1.32.0")), "1.35.4").unwrap(),
            "1.32.0"
        );
        assert!(
            validate_pool("p", &pool(Some("1.36.0")), "1.35.4")
                .unwrap_err()
                .to_string()
                .contains("newer")
        );
        assert!(
            validate_pool("p", &pool(Some("1.31.9")), "1.35.4")
                .unwrap_err()
                .to_string()
                .contains("three minor")
        );
    }

    #[test]
    fn pool_labels_and_taints_are_checked() {
        let mut p = pool(None);
        p.labels
            .insert("node-role.kubernetes.io/worker".into(), "".into());
        p.labels.insert("team".into(), "a".into());
        p.labels
            .insert("node.kubernetes.io/pool".into(), "a".into());
        p.taints.push(Taint {
            key: "dedicated".into(),
            effect: "Sometimes".into(),
            ..Taint::default()
        });
        let err = validate_pool("p", &p, "1.35.4").unwrap_err().to_string();
        assert!(
            err.contains("NodeRestriction") && err.contains("Sometimes"),
            "{err}"
        );
        assert!(
            !err.contains("'team'") && !err.contains("node.kubernetes.io/pool"),
            "{err}"
        );
    }
}
