//! The nested cluster's address ranges: what the API server, the
//! controller-manager and the node agent will actually need of them.

use super::Problems;
use super::fields::excerpt;
use crate::model::network::{AllowedEgress, allowance};
use ipnet::{IpNet, Ipv4Net};
use nestor_crds::{EgressAllowance, NetworkingSpec};
use std::net::{IpAddr, Ipv4Addr};

/// The prefix of the block the controller-manager gives each node.
pub const NODE_BLOCK_PREFIX: u8 = 24;
/// The smallest service range: room for the `kubernetes` Service, DNS and
/// a few Services.
pub const MIN_SERVICE_RANGE_ADDRESSES: u32 = 16;
/// The largest service range the API server allocates from (2^20).
const MAX_SERVICE_RANGE_BITS: u8 = 20;

/// Address space no nested cluster may use, and why.
const RESERVED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "the unspecified range"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "the reserved range (and broadcast)"),
];

/// What the builders need of valid networking.
pub(super) struct ValidNetwork {
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    pub dns_service_ip: IpAddr,
    pub kubernetes_service_ip: IpAddr,
}

/// The destinations the platform admin lets this cluster's node pods
/// reach (`spec.allowedEgress`), each checked as the Helm value's are.
pub(super) fn check_allowed_egress(
    problems: &mut Problems,
    allowances: &[EgressAllowance],
) -> Vec<AllowedEgress> {
    allowances
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let ports: Vec<i64> = a.ports.iter().map(|p| i64::from(*p)).collect();
            allowance(&a.cidr, &ports)
                .map_err(|(sub, problem)| {
                    problems.push(&format!("spec.allowedEgress[{i}].{sub}"), problem)
                })
                .ok()
        })
        .collect()
}

/// A CIDR of the nested cluster, IPv4 and outside reserved space.
fn range(problems: &mut Problems, field: &str, text: &str) -> Option<Ipv4Net> {
    let Ok(net) = text.parse::<IpNet>() else {
        problems.push(field, format!("'{}' is not a CIDR", excerpt(text)));
        return None;
    };
    let IpNet::V4(net) = net.trunc() else {
        problems.push(
            field,
            format!("{net} is IPv6; the node pods' network is IPv4 only, so nested clusters are IPv4 single-stack"),
        );
        return None;
    };
    for (reserved, what) in RESERVED {
        let reserved: Ipv4Net = reserved.parse().expect("a constant CIDR");
        if reserved.contains(&net.network()) || net.contains(&reserved.network()) {
            problems.push(
                field,
                format!("{net} overlaps {reserved}, {what}, which no pod or Service can use"),
            );
            return None;
        }
    }
    Some(net)
}

/// Checks `spec.networking`.
pub(super) fn check_networking(
    problems: &mut Problems,
    net: &NetworkingSpec,
) -> Option<ValidNetwork> {
    let pods = range(problems, "spec.networking.podCIDR", &net.pod_cidr);
    let services = range(problems, "spec.networking.serviceCIDR", &net.service_cidr);
    let dns = match net.dns_service_ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Some(ip),
        Ok(IpAddr::V6(_)) => {
            problems.push(
                "spec.networking.dnsServiceIP",
                "is IPv6; nested clusters are IPv4 single-stack",
            );
            None
        }
        Err(_) => {
            problems.push(
                "spec.networking.dnsServiceIP",
                format!("'{}' is not an IP address", excerpt(&net.dns_service_ip)),
            );
            None
        }
    };
    if let Some(pods) = pods
        && pods.prefix_len() > NODE_BLOCK_PREFIX
    {
        problems.push(
            "spec.networking.podCIDR",
            format!("{pods} is smaller than one node's /{NODE_BLOCK_PREFIX}; each node takes a /{NODE_BLOCK_PREFIX} of it"),
        );
    }
    if let Some(services) = services {
        let size = 1u64 << (32 - services.prefix_len());
        if size < u64::from(MIN_SERVICE_RANGE_ADDRESSES) {
            problems.push(
                "spec.networking.serviceCIDR",
                format!("{services} has {size} addresses; it needs at least {MIN_SERVICE_RANGE_ADDRESSES} (a /28) for the `kubernetes` Service, DNS and the cluster's Services"),
            );
        } else if 32 - services.prefix_len() > MAX_SERVICE_RANGE_BITS {
            problems.push(
                "spec.networking.serviceCIDR",
                format!("{services} is too large; the API server allocates from at most 2^{MAX_SERVICE_RANGE_BITS} addresses (a /12)"),
            );
        }
    }
    let (Some(pods), Some(services), Some(dns)) = (pods, services, dns) else {
        return None;
    };
    let mut ok = true;
    if pods.contains(&services.network()) || services.contains(&pods.network()) {
        problems.push(
            "spec.networking",
            format!("podCIDR {pods} and serviceCIDR {services} overlap"),
        );
        ok = false;
    }
    let kubernetes = first_host(services);
    if !services.contains(&dns) {
        problems.push(
            "spec.networking.dnsServiceIP",
            format!("{dns} is outside serviceCIDR {services}"),
        );
        ok = false;
    } else if dns == services.network() || dns == services.broadcast() {
        problems.push(
            "spec.networking.dnsServiceIP",
            format!("{dns} is the network or broadcast address of {services}"),
        );
        ok = false;
    } else if dns == kubernetes {
        problems.push(
            "spec.networking.dnsServiceIP",
            format!("{dns} is the first service address, which the `kubernetes` Service takes"),
        );
        ok = false;
    }
    ok.then_some(ValidNetwork {
        pod_cidr: IpNet::V4(pods),
        service_cidr: IpNet::V4(services),
        dns_service_ip: IpAddr::V4(dns),
        kubernetes_service_ip: IpAddr::V4(kubernetes),
    })
}

fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}
