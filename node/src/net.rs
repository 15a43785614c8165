//! The nested pod network, as pure functions from what the nested API says
//! to the commands and rules that realise it.
//!
//! Every node pod holds one `/24` (its Node's `spec.podCIDR`) on a Linux
//! bridge for its pods. Node pods reach each other over VXLAN (VNI 1, UDP
//! 8472) between their own pod IPs on the host network, so the overlay works
//! on any host network that lets pods talk (no routes on the host needed).
//! Each node's VTEP has the first address of its pod range and a MAC derived
//! from its pod IP, so no agent has to publish anything: a Node's
//! `spec.podCIDR` and `InternalIP` are enough to reach it.
//!
//! Nested pods may leave the node pod (to the host network) only towards
//! the endpoints of the nested `kubernetes` and `kube-dns` Services and the
//! cluster's own nodes; every other new connection from a nested pod to the
//! host network is dropped, so tenants' pods reach neither the host's pods
//! nor other tenants'. VXLAN packets are accepted only from the cluster's
//! own nodes.

use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The overlay device.
pub const VXLAN_DEVICE: &str = "nestor.1";
/// The bridge nested pods are plugged into.
pub const BRIDGE: &str = "nestor0";
pub const VXLAN_PORT: u16 = 8472;
/// VXLAN adds 50 bytes to each packet.
pub const VXLAN_OVERHEAD: u32 = 50;

/// A node of the nested cluster, as far as the network is concerned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

impl Peer {
    /// The VTEP address of the node: the first address of its pod range.
    pub fn vtep(&self) -> Ipv4Addr {
        self.pod_cidr.network()
    }
}

/// A locally administered MAC derived from the node's pod IP.
pub fn vtep_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("0e:4e:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A destination nested pods may reach outside the overlay.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allowed {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Commands (argv) that create this node's VXLAN device.
pub fn vxlan_setup(own: &Peer, mtu: u32) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let local = own.ip.to_string();
    let port = VXLAN_PORT.to_string();
    let mtu = (mtu - VXLAN_OVERHEAD).to_string();
    let addr = format!("{}/32", own.vtep());
    vec![
        s(&[
            "ip",
            "link",
            "add",
            VXLAN_DEVICE,
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &local,
            "dstport",
            &port,
            "nolearning",
            "dev",
            "eth0",
        ]),
        s(&[
            "ip",
            "link",
            "set",
            VXLAN_DEVICE,
            "address",
            &vtep_mac(own.ip),
            "mtu",
            &mtu,
        ]),
        s(&["ip", "addr", "replace", &addr, "dev", VXLAN_DEVICE]),
        s(&["ip", "link", "set", VXLAN_DEVICE, "up"]),
    ]
}

/// Commands that make `peer`'s pods reachable through the overlay.
pub fn peer_add(peer: &Peer) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mac = vtep_mac(peer.ip);
    let vtep = peer.vtep().to_string();
    vec![
        s(&[
            "ip",
            "neigh",
            "replace",
            &vtep,
            "lladdr",
            &mac,
            "dev",
            VXLAN_DEVICE,
            "nud",
            "permanent",
        ]),
        s(&[
            "bridge",
            "fdb",
            "replace",
            &mac,
            "dev",
            VXLAN_DEVICE,
            "dst",
            &peer.ip.to_string(),
        ]),
        s(&[
            "ip",
            "route",
            "replace",
            &peer.pod_cidr.to_string(),
            "via",
            &vtep,
            "dev",
            VXLAN_DEVICE,
            "onlink",
        ]),
    ]
}

/// Commands that forget a peer that left.
pub fn peer_remove(peer: &Peer) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        s(&["ip", "route", "del", &peer.pod_cidr.to_string()]),
        s(&[
            "bridge",
            "fdb",
            "del",
            &vtep_mac(peer.ip),
            "dev",
            VXLAN_DEVICE,
        ]),
        s(&[
            "ip",
            "neigh",
            "del",
            &peer.vtep().to_string(),
            "dev",
            VXLAN_DEVICE,
        ]),
    ]
}

/// The CNI configuration for this node's pods.
pub fn cni_conflist(pod_cidr: &Ipv4Net, mtu: u32) -> String {
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
                "mtu": mtu - VXLAN_OVERHEAD,
                "ipam": {
                    "type": "host-local",
                    "dataDir": "/run/nestor/ipam",
                    "ranges": [[{"subnet": pod_cidr.to_string()}]],
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
/// the cluster's nodes; nothing leaves the node pod with a source other
/// than its own address or a nested pod's (masqueraded to it), whatever
/// sends it, so a raw socket cannot pass as another pod of the host; VXLAN
/// comes only from `peers`; traffic leaving the overlay is masqueraded.
pub fn rules(
    cluster_cidr: &Ipv4Net,
    own_ip: Ipv4Addr,
    allowed: &BTreeSet<Allowed>,
    peers: &BTreeSet<Peer>,
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
        out.push_str(&format!("-A NESTOR-EGRESS -d {}/32 -j RETURN\n", p.ip));
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
    out.push_str("COMMIT\n*filter\n:NESTOR-VXLAN - [0:0]\n");
    for p in peers {
        out.push_str(&format!("-A NESTOR-VXLAN -s {}/32 -j RETURN\n", p.ip));
    }
    out.push_str("-A NESTOR-VXLAN -j DROP\nCOMMIT\n*nat\n:NESTOR-MASQ - [0:0]\n");
    out.push_str(&format!(
        "-A NESTOR-MASQ -d {cluster_cidr} -j RETURN\n-A NESTOR-MASQ -j MASQUERADE\nCOMMIT\n"
    ));
    out
}

/// The jumps into Nestor's chains: `(table, chain, rule)`, each inserted
/// once at the top of its built-in chain.
pub fn jumps(cluster_cidr: &Ipv4Net) -> Vec<(&'static str, &'static str, Vec<String>)> {
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

    fn peer(ip: &str, cidr: &str) -> Peer {
        Peer {
            ip: ip.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
        }
    }

    #[test]
    fn mac_and_vtep_follow_the_node() {
        let p = peer("10.88.0.12", "10.244.3.0/24");
        assert_eq!(vtep_mac(p.ip), "0e:4e:0a:58:00:0c");
        assert_eq!(p.vtep().to_string(), "10.244.3.0");
    }

    #[test]
    fn peers_are_routed_through_the_overlay() {
        let cmds = peer_add(&peer("10.88.0.12", "10.244.3.0/24"));
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            [
                "ip neigh replace 10.244.3.0 lladdr 0e:4e:0a:58:00:0c dev nestor.1 nud permanent",
                "bridge fdb replace 0e:4e:0a:58:00:0c dev nestor.1 dst 10.88.0.12",
                "ip route replace 10.244.3.0/24 via 10.244.3.0 dev nestor.1 onlink",
            ]
        );
        let removed: Vec<String> = peer_remove(&peer("10.88.0.12", "10.244.3.0/24"))
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(removed[0], "ip route del 10.244.3.0/24");
    }

    #[test]
    fn vxlan_device_leaves_room_for_the_header() {
        let cmds = vxlan_setup(&peer("10.88.0.5", "10.244.1.0/24"), 1500);
        assert!(
            cmds[0]
                .join(" ")
                .contains("local 10.88.0.5 dstport 8472 nolearning")
        );
        assert!(cmds[1].join(" ").ends_with("mtu 1450"));
        assert_eq!(
            cmds[2].join(" "),
            "ip addr replace 10.244.1.0/32 dev nestor.1"
        );
        let cni: serde_json::Value =
            serde_json::from_str(&cni_conflist(&"10.244.1.0/24".parse().unwrap(), 1500)).unwrap();
        assert_eq!(cni["plugins"][0]["mtu"], 1450);
        assert_eq!(
            cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
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
        let peers = BTreeSet::from([peer("10.88.0.12", "10.244.3.0/24")]);
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
