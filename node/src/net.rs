//! The nested pod network, as pure functions from what the node knows to
//! the files, commands and rules that realise it.
//!
//! flannel carries the pod network: `flanneld` (in VXLAN mode, VNI 1, UDP
//! 8472, between the node pods' own IPs on the host network) takes each
//! node's range from its Node's `spec.podCIDR`, publishes the node's VTEP in
//! the Node's annotations and routes every other node's range over its
//! `flannel.1` device. Each node's pods sit on a Linux bridge (`cni0`) with
//! host-local addresses from that range, the configuration flannel's CNI
//! plugin would delegate to the bridge plugin, written here from the subnet
//! file flanneld leaves. kube-router, in firewall-only mode, enforces the
//! tenant's NetworkPolicies on that bridge.
//!
//! Nestor's own rules stay around it: nested pods may leave the node pod (to
//! the host network) only towards the endpoints of the nested `kubernetes`
//! and `kube-dns` Services and the cluster's own nodes, so tenants' pods
//! reach neither the host's pods nor other tenants'; nothing leaves with a
//! source other than the node pod's own address or a nested pod's; VXLAN is
//! accepted only from the cluster's own nodes.

use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The bridge nested pods are plugged into (flannel's name for it).
pub(crate) const BRIDGE: &str = "cni0";
/// flannel's VXLAN port on Linux, which Nestor's VXLAN filter guards.
pub(crate) const VXLAN_PORT: u16 = 8472;

/// A destination nested pods may reach outside the overlay.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Allowed {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// flanneld's network configuration (`net-conf.json`): the cluster's pod
/// range over VXLAN.
pub(crate) fn flannel_net_conf(cluster_cidr: &Ipv4Net) -> String {
    serde_json::json!({
        "Network": cluster_cidr.to_string(),
        "EnableIPv4": true,
        "Backend": {"Type": "vxlan", "VNI": 1, "Port": VXLAN_PORT},
    })
    .to_string()
}

/// What flanneld's subnet file says of this node: its pod range and the
/// MTU its pods' interfaces get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subnet {
    pub range: Ipv4Net,
    pub mtu: u32,
}

/// Reads flanneld's subnet file (`FLANNEL_SUBNET=10.244.1.1/24`,
/// `FLANNEL_MTU=1450`, ...). `None` until both are there.
pub(crate) fn parse_subnet_env(text: &str) -> Option<Subnet> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let range = value("FLANNEL_SUBNET")?.parse::<Ipv4Net>().ok()?.trunc();
    let mtu = value("FLANNEL_MTU")?.parse().ok()?;
    Some(Subnet { range, mtu })
}

/// The CNI configuration for this node's pods: a bridge with host-local
/// addresses of the node's range, as flannel's CNI plugin delegates it.
/// Masquerading is Nestor's (`rules`), not the bridge plugin's.
pub(crate) fn cni_conflist(subnet: &Subnet) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "nestor",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": subnet.mtu,
                "ipam": {
                    "type": "host-local",
                    "dataDir": "/run/nestor/ipam",
                    "ranges": [[{"subnet": subnet.range.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// The chains Nestor owns, as `iptables-restore --noflush` input: nested
/// pods' new connections out of the node pod go only to `allowed` and to
/// the cluster's nodes; from the host network, nested pods take only
/// replies and what kube-proxy translated for a Service (a NodePort, a
/// hostPort), never a packet some other pod of the host routed at a
/// nested pod's address through this node pod (other nodes' pods arrive
/// over flannel's device, not `eth0`); nothing leaves the node pod with a source other
/// than its own address or a nested pod's (masqueraded to it), whatever
/// sends it, so a raw socket cannot pass as another pod of the host; VXLAN
/// comes only from `peers`; traffic leaving the overlay is masqueraded.
pub(crate) fn rules(
    cluster_cidr: &Ipv4Net,
    own_ip: Ipv4Addr,
    allowed: &BTreeSet<Allowed>,
    peers: &BTreeSet<Ipv4Addr>,
) -> String {
    let mut out = String::new();
    out.push_str("*mangle\n:NESTOR-SPOOF - [0:0]\n");
    out.push_str(&format!(
        "-A NESTOR-SPOOF -s {own_ip}/32 -j RETURN\n-A NESTOR-SPOOF -s {cluster_cidr} -j RETURN\n"
    ));
    out.push_str(
        "-A NESTOR-SPOOF -m comment --comment \"no spoofed source leaves the node\" -j DROP\n",
    );
    out.push_str(":NESTOR-EGRESS - [0:0]\n");
    out.push_str("-A NESTOR-EGRESS -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n");
    for p in peers {
        out.push_str(&format!("-A NESTOR-EGRESS -d {p}/32 -j RETURN\n"));
    }
    for a in allowed {
        out.push_str(&format!(
            "-A NESTOR-EGRESS -d {}/32 -p {} -m {} --dport {} -j RETURN\n",
            a.ip, a.protocol, a.protocol, a.port
        ));
    }
    out.push_str(
        "-A NESTOR-EGRESS -m comment --comment \"nested pods reach only their control plane\" -j DROP\n",
    );
    out.push_str(":NESTOR-INGRESS - [0:0]\n");
    out.push_str("-A NESTOR-INGRESS -m conntrack --ctstate ESTABLISHED,RELATED,DNAT -j RETURN\n");
    out.push_str(
        "-A NESTOR-INGRESS -m comment --comment \"from the host network, nested pods take only replies and Service traffic\" -j DROP\n",
    );
    out.push_str("COMMIT\n*filter\n:NESTOR-VXLAN - [0:0]\n");
    for p in peers {
        out.push_str(&format!("-A NESTOR-VXLAN -s {p}/32 -j RETURN\n"));
    }
    out.push_str("-A NESTOR-VXLAN -j DROP\nCOMMIT\n*nat\n:NESTOR-MASQ - [0:0]\n");
    out.push_str(&format!(
        "-A NESTOR-MASQ -d {cluster_cidr} -j RETURN\n-A NESTOR-MASQ -j MASQUERADE\nCOMMIT\n"
    ));
    out
}

/// The jumps into Nestor's chains: `(table, chain, rule)`, each inserted
/// once at the top of its built-in chain.
pub(crate) fn jumps(cluster_cidr: &Ipv4Net) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cidr = cluster_cidr.to_string();
    let port = VXLAN_PORT.to_string();
    vec![
        (
            "mangle",
            "POSTROUTING",
            s(&["-o", "eth0", "-j", "NESTOR-SPOOF"]),
        ),
        (
            "mangle",
            "FORWARD",
            s(&["-s", &cidr, "-o", "eth0", "-j", "NESTOR-EGRESS"]),
        ),
        (
            "mangle",
            "FORWARD",
            s(&["-i", "eth0", "-d", &cidr, "-j", "NESTOR-INGRESS"]),
        ),
        (
            "filter",
            "INPUT",
            s(&[
                "-i",
                "eth0",
                "-p",
                "udp",
                "--dport",
                &port,
                "-j",
                "NESTOR-VXLAN",
            ]),
        ),
        (
            "nat",
            "POSTROUTING",
            s(&["-s", &cidr, "-o", "eth0", "-j", "NESTOR-MASQ"]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cni_configuration_follows_flannels_subnet_file() {
        let subnet = parse_subnet_env(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        assert_eq!(
            subnet,
            Subnet {
                range: "10.244.3.0/24".parse().unwrap(),
                mtu: 1450
            }
        );
        assert_eq!(parse_subnet_env("FLANNEL_SUBNET=10.244.3.1/24\n"), None);
        let cni: serde_json::Value = serde_json::from_str(&cni_conflist(&subnet)).unwrap();
        assert_eq!(cni["plugins"][0]["bridge"], "cni0");
        assert_eq!(cni["plugins"][0]["mtu"], 1450);
        assert_eq!(cni["plugins"][0]["ipMasq"], false);
        assert_eq!(
            cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.3.0/24"
        );
        let conf: serde_json::Value =
            serde_json::from_str(&flannel_net_conf(&"10.244.0.0/16".parse().unwrap())).unwrap();
        assert_eq!(conf["Network"], "10.244.0.0/16");
        assert_eq!(conf["Backend"]["Type"], "vxlan");
        assert_eq!(conf["Backend"]["Port"], 8472);
    }

    #[test]
    fn egress_allows_only_the_control_plane() {
        let allowed = BTreeSet::from([
            Allowed {
                ip: "10.88.0.3".parse().unwrap(),
                port: 6443,
                protocol: "tcp".into(),
            },
            Allowed {
                ip: "10.0.0.53".parse().unwrap(),
                port: 53,
                protocol: "udp".into(),
            },
        ]);
        let peers = BTreeSet::from(["10.88.0.12".parse().unwrap()]);
        let r = rules(
            &"10.244.0.0/16".parse().unwrap(),
            "10.88.0.11".parse().unwrap(),
            &allowed,
            &peers,
        );
        // Only the node pod's own and nested pods' sources leave.
        assert!(r.contains(
            "-A NESTOR-SPOOF -s 10.88.0.11/32 -j RETURN\n-A NESTOR-SPOOF -s 10.244.0.0/16 -j RETURN\n-A NESTOR-SPOOF -m comment"
        ));
        let lines: Vec<&str> = r.lines().collect();
        let drop = lines
            .iter()
            .position(|l| l.starts_with("-A NESTOR-EGRESS") && l.ends_with("-j DROP"))
            .unwrap();
        let api = lines
            .iter()
            .position(|l| {
                *l == "-A NESTOR-EGRESS -d 10.88.0.3/32 -p tcp -m tcp --dport 6443 -j RETURN"
            })
            .unwrap();
        assert!(api < drop, "allowances come before the drop");
        assert!(r.contains("-A NESTOR-EGRESS -d 10.88.0.12/32 -j RETURN"));
        assert!(r.contains("-A NESTOR-VXLAN -s 10.88.0.12/32 -j RETURN\n-A NESTOR-VXLAN -j DROP"));
        assert!(r.contains("-A NESTOR-MASQ -d 10.244.0.0/16 -j RETURN"));
        assert!(r.contains(
            "-A NESTOR-INGRESS -m conntrack --ctstate ESTABLISHED,RELATED,DNAT -j RETURN\n-A NESTOR-INGRESS -m comment"
        ));
        assert!(
            jumps(&"10.244.0.0/16".parse().unwrap())
                .iter()
                .any(|(t, c, rule)| {
                    *t == "mangle"
                        && *c == "FORWARD"
                        && rule.join(" ") == "-i eth0 -d 10.244.0.0/16 -j NESTOR-INGRESS"
                })
        );
        assert_eq!(r.matches("COMMIT").count(), 3);
        assert!(
            jumps(&"10.244.0.0/16".parse().unwrap())
                .iter()
                .any(|(t, c, rule)| {
                    *t == "mangle"
                        && *c == "POSTROUTING"
                        && rule.join(" ") == "-o eth0 -j NESTOR-SPOOF"
                })
        );
    }
}
