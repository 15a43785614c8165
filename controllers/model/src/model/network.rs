//! The host network as the platform admin describes it (the Helm value
//! `network`, the operator's `--network`): what node pods may reach beyond
//! their own cluster, and where nested DNS sends names it does not serve.
//! Never from an object a tenant can write.

use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Link-local ranges (cloud metadata services live there): never reachable
/// from node pods, whatever the settings say.
pub const LINK_LOCAL: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// The host network, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNetwork {
    /// Ranges node pods never reach: the host cluster's pod, Service and
    /// node networks (its API server is in one of them), other tenants'.
    pub denied: Vec<IpNet>,
    /// Destinations node pods may reach even inside `denied` (a registry
    /// mirror, a proxy), with their ports (none: every port).
    pub allowed_egress: Vec<AllowedEgress>,
    /// The host cluster's DNS pods, which node pods ask for the names of
    /// their API server and registries.
    pub dns_namespace: String,
    pub dns_pod_labels: BTreeMap<String, String>,
    /// Where nested CoreDNS forwards names outside the nested cluster's
    /// domain. Empty: the resolver of CoreDNS's pod (the host's DNS).
    pub dns_upstream: Vec<IpAddr>,
    /// The host cluster's domain, which nested DNS never answers.
    pub host_cluster_domain: String,
}

/// A destination inside the denied ranges that node pods may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedEgress {
    pub cidr: IpNet,
    /// TCP ports; empty: every port.
    pub ports: Vec<u16>,
}

/// The private IPv4 and IPv6 ranges: what `denied` is when the platform
/// admin names none, so that a host whose networks are not described
/// denies too much rather than too little.
pub const PRIVATE_RANGES: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

impl Default for HostNetwork {
    fn default() -> Self {
        Self {
            denied: PRIVATE_RANGES
                .iter()
                .map(|c| c.parse().expect("a valid range"))
                .collect(),
            allowed_egress: Vec::new(),
            dns_namespace: "kube-system".into(),
            dns_pod_labels: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
            dns_upstream: Vec::new(),
            host_cluster_domain: "cluster.local".into(),
        }
    }
}

/// The Helm value as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    #[serde(default, rename = "hostCIDRs")]
    host_cidrs: Option<Vec<String>>,
    #[serde(default)]
    allowed_egress: Vec<RawEgress>,
    #[serde(default, rename = "hostDNS")]
    host_dns: Option<RawDns>,
    #[serde(default)]
    dns_upstream: Vec<String>,
    #[serde(default)]
    host_cluster_domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEgress {
    cidr: String,
    #[serde(default)]
    ports: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDns {
    namespace: String,
    pod_labels: BTreeMap<String, String>,
}

fn cidr(field: &str, text: &str) -> Result<IpNet, String> {
    range(text).map_err(|problem| format!("{field}: {problem}"))
}

/// A range a platform admin names: a CIDR without host bits, narrower
/// than every address.
fn range(text: &str) -> Result<IpNet, String> {
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("{text:?} is not a CIDR (address/prefix)"))?;
    if net.prefix_len() == 0 {
        return Err(format!(
            "{text:?} covers every address; name the host's ranges"
        ));
    }
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// One destination node pods may reach (from the Helm value
/// `network.allowedEgress` or a cluster's `spec.allowedEgress`). An error
/// names the sub-field (`cidr` or `ports`) and the problem. No allowance
/// reaches into a link-local range.
pub fn allowance(cidr: &str, ports: &[i64]) -> Result<AllowedEgress, (&'static str, String)> {
    let net = range(cidr).map_err(|problem| ("cidr", problem))?;
    if let Some(local) = link_local()
        .into_iter()
        .find(|l| l.contains(&net) || net.contains(l))
    {
        return Err((
            "cidr",
            format!("{net} overlaps the link-local range {local}, which node pods never reach"),
        ));
    }
    let ports = ports
        .iter()
        .map(|p| {
            u16::try_from(*p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ("ports", format!("{p} is not a port (1 to 65535)")))
        })
        .collect::<Result<Vec<u16>, _>>()?;
    Ok(AllowedEgress { cidr: net, ports })
}

fn link_local() -> Vec<IpNet> {
    LINK_LOCAL
        .iter()
        .map(|c| c.parse().expect("a valid range"))
        .collect()
}

impl HostNetwork {
    /// Parses and validates the JSON of the Helm value `network`; every
    /// error names its field.
    pub fn parse(json: &str) -> Result<Self, String> {
        let raw: Raw = serde_json::from_str(json).map_err(|e| format!("network: {e}"))?;
        let defaults = Self::default();
        let denied = match raw.host_cidrs {
            None => defaults.denied,
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, c)| cidr(&format!("network.hostCIDRs[{i}]"), c))
                .collect::<Result<_, _>>()?,
        };
        let allowed_egress = raw
            .allowed_egress
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let ports: Vec<i64> = e.ports.iter().map(|p| i64::from(*p)).collect();
                allowance(&e.cidr, &ports).map_err(|(sub, problem)| {
                    format!("network.allowedEgress[{i}].{sub}: {problem}")
                })
            })
            .collect::<Result<_, _>>()?;
        let (dns_namespace, dns_pod_labels) = match raw.host_dns {
            None => (defaults.dns_namespace, defaults.dns_pod_labels),
            Some(d) if d.namespace.is_empty() || d.pod_labels.is_empty() => {
                return Err("network.hostDNS: needs a namespace and at least one pod label".into());
            }
            Some(d) => (d.namespace, d.pod_labels),
        };
        let dns_upstream = raw
            .dns_upstream
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse()
                    .map_err(|_| format!("network.dnsUpstream[{i}]: {a:?} is not an IP address"))
            })
            .collect::<Result<_, _>>()?;
        let host_cluster_domain = match raw.host_cluster_domain {
            None => defaults.host_cluster_domain,
            Some(d) => {
                let valid = !d.is_empty()
                    && d.len() <= 253
                    && d.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                            && !l.starts_with('-')
                            && !l.ends_with('-')
                    });
                if !valid {
                    return Err(format!(
                        "network.hostClusterDomain: {d:?} is not a DNS domain"
                    ));
                }
                d
            }
        };
        Ok(Self {
            denied,
            allowed_egress,
            dns_namespace,
            dns_pod_labels,
            dns_upstream,
            host_cluster_domain,
        })
    }

    /// The ranges node pods never reach, link-local included, split by
    /// address family (an `ipBlock` holds one family).
    pub fn denied_by_family(&self) -> (Vec<IpNet>, Vec<IpNet>) {
        let all: Vec<IpNet> = self.denied.iter().copied().chain(link_local()).collect();
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
            all.into_iter().partition(|net| matches!(net, IpNet::V4(_)));
        // `aggregate` also drops duplicates and ranges inside others.
        (IpNet::aggregate(&v4), IpNet::aggregate(&v6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_deny_private_and_link_local_ranges() {
        let net = HostNetwork::parse("{}").unwrap();
        assert_eq!(net, HostNetwork::default());
        let (v4, v6) = net.denied_by_family();
        let v4: Vec<String> = v4.iter().map(|n| n.to_string()).collect();
        assert!(v4.contains(&"10.0.0.0/8".to_string()));
        assert!(v4.contains(&"169.254.0.0/16".to_string()));
        assert!(v6.iter().any(|n| n.to_string() == "fe80::/10"));
    }

    #[test]
    fn link_local_stays_denied_whatever_the_settings() {
        let net = HostNetwork::parse(r#"{"hostCIDRs": ["10.96.0.0/12"]}"#).unwrap();
        let (v4, _) = net.denied_by_family();
        let v4: Vec<String> = v4.iter().map(|n| n.to_string()).collect();
        assert_eq!(v4, ["10.96.0.0/12", "169.254.0.0/16"]);
    }

    #[test]
    fn every_error_names_its_field() {
        for (json, field) in [
            (r#"{"hostCIDRs": ["10.0.0.1"]}"#, "network.hostCIDRs[0]"),
            (r#"{"hostCIDRs": ["0.0.0.0/0"]}"#, "network.hostCIDRs[0]"),
            (r#"{"hostCIDRs": ["10.0.0.1/8"]}"#, "network.hostCIDRs[0]"),
            (
                r#"{"allowedEgress": [{"cidr": "x", "ports": [5000]}]}"#,
                "network.allowedEgress[0].cidr",
            ),
            (
                r#"{"allowedEgress": [{"cidr": "10.0.0.1/32", "ports": [0]}]}"#,
                "network.allowedEgress[0].ports",
            ),
            (
                r#"{"allowedEgress": [{"cidr": "169.254.169.254/32"}]}"#,
                "network.allowedEgress[0].cidr",
            ),
            (
                r#"{"allowedEgress": [{"cidr": "128.0.0.0/1"}]}"#,
                "network.allowedEgress[0].cidr",
            ),
            (
                r#"{"dnsUpstream": ["dns.example"]}"#,
                "network.dnsUpstream[0]",
            ),
            (
                r#"{"hostClusterDomain": "Cluster.Local"}"#,
                "network.hostClusterDomain",
            ),
            (
                r#"{"hostDNS": {"namespace": "", "podLabels": {}}}"#,
                "network.hostDNS",
            ),
            (r#"{"hostCidrs": []}"#, "network"),
        ] {
            let err = HostNetwork::parse(json).unwrap_err();
            assert!(err.starts_with(field), "{json}: {err}");
        }
    }
}
