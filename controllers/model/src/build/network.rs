//! The host NetworkPolicies of a virtual cluster: each of its pods takes
//! only the traffic its role needs, and node pods (where every tenant
//! workload's traffic starts) reach only their own cluster, the host's DNS,
//! what the platform allows and the world outside the host's networks;
//! never the host cluster, another tenant or a link-local address.
//! (Enforced where the host's network plugin implements NetworkPolicy.)
//!
//! The control plane's pods reach only what their role needs too: etcd its
//! members, the API server its etcd, the controller-manager, scheduler and
//! CoreDNS the API servers (CoreDNS also its upstream resolvers), each the
//! host's DNS. Whatever a tenant makes the API server dial (a webhook, an
//! aggregated API, a proxied node, pod or Service) goes through the
//! cluster's own node pods (Konnectivity), never from the API server's pod.
//!
//! Probes come from each pod's own node, which NetworkPolicy does not
//! filter, so no rule opens a health or metrics port.

use crate::build::{apiserver, coredns, etcd, konnectivity};
use crate::model::inputs::ClusterInputs;
use crate::model::names::{Component, cluster_child_meta, selector_labels};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Every host NetworkPolicy of the cluster.
pub fn desired_network_policies(inputs: &ClusterInputs) -> Vec<NetworkPolicy> {
    vec![
        desired_etcd_policy(inputs),
        desired_apiserver_policy(inputs),
        closed_client(inputs, Component::ControllerManager),
        closed_client(inputs, Component::Scheduler),
        desired_coredns_policy(inputs),
        desired_nodes_policy(inputs),
    ]
}

fn selects(inputs: &ClusterInputs, component: Component) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(selector_labels(&inputs.names.cluster, component)),
        ..LabelSelector::default()
    })
}

/// Pods of this cluster in the given role (in the cluster's namespace).
fn peer(inputs: &ClusterInputs, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: selects(inputs, component),
        ..NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    }
}

fn dns_ports() -> Vec<NetworkPolicyPort> {
    vec![
        port("UDP", coredns::DNS_PORT),
        port("TCP", coredns::DNS_PORT),
    ]
}

fn policy(
    inputs: &ClusterInputs,
    component: Component,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let mut types = vec!["Ingress".to_string()];
    if egress.is_some() {
        types.push("Egress".into());
    }
    NetworkPolicy {
        metadata: cluster_child_meta(
            inputs.vc,
            format!("{}-{}", inputs.names.cluster, component.as_str()),
            component,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: selects(inputs, component),
            policy_types: Some(types),
            ingress: Some(ingress),
            egress,
        }),
    }
}

/// No pod may connect: the controller-manager and the scheduler serve
/// nothing but their probes; they reach only the API servers and DNS.
fn closed_client(inputs: &ClusterInputs, component: Component) -> NetworkPolicy {
    policy(inputs, component, Vec::new(), Some(to_apiservers(inputs)))
}

/// Egress to the cluster's API servers' serving port and the host's DNS.
fn to_apiservers(inputs: &ClusterInputs) -> Vec<NetworkPolicyEgressRule> {
    vec![
        NetworkPolicyEgressRule {
            to: Some(vec![peer(inputs, Component::ApiServer)]),
            ports: Some(vec![port("TCP", apiserver::PORT)]),
        },
        to_host_dns(inputs),
    ]
}

/// Egress to the host's DNS pods (`network.hostDNS`), on any port: the
/// control plane names its peers by their host Services.
fn to_host_dns(inputs: &ClusterInputs) -> NetworkPolicyEgressRule {
    let net = &inputs.network;
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    net.dns_namespace.clone(),
                )])),
                ..LabelSelector::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(net.dns_pod_labels.clone()),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: None,
    }
}

/// Only the cluster's API servers (and members, the Job that takes a
/// snapshot before a version change and the backup Jobs) reach etcd's
/// client port, only its
/// members the peer port; the metrics port (plain HTTP, the probes'
/// target) is open to no pod.
fn desired_etcd_policy(inputs: &ClusterInputs) -> NetworkPolicy {
    policy(
        inputs,
        Component::Etcd,
        vec![
            NetworkPolicyIngressRule {
                from: Some(vec![
                    peer(inputs, Component::ApiServer),
                    peer(inputs, Component::Etcd),
                    peer(inputs, Component::EtcdSnapshot),
                    peer(inputs, Component::EtcdBackup),
                ]),
                ports: Some(vec![port("TCP", etcd::CLIENT_PORT)]),
            },
            NetworkPolicyIngressRule {
                from: Some(vec![peer(inputs, Component::Etcd)]),
                ports: Some(vec![port("TCP", etcd::PEER_PORT)]),
            },
        ],
        Some(vec![
            NetworkPolicyEgressRule {
                to: Some(vec![peer(inputs, Component::Etcd)]),
                ports: Some(vec![
                    port("TCP", etcd::CLIENT_PORT),
                    port("TCP", etcd::PEER_PORT),
                ]),
            },
            to_host_dns(inputs),
        ]),
    )
}

/// Clients reach the serving port from anywhere (that is the API server's
/// job); only the cluster's own node pods reach Konnectivity's agent port.
/// The API server reaches its etcd and the host's DNS, and nothing else:
/// its traffic into the cluster leaves through Konnectivity's server in
/// its own pod, over the agents' connections.
fn desired_apiserver_policy(inputs: &ClusterInputs) -> NetworkPolicy {
    policy(
        inputs,
        Component::ApiServer,
        vec![
            NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![port("TCP", apiserver::PORT)]),
            },
            NetworkPolicyIngressRule {
                from: Some(vec![peer(inputs, Component::Node)]),
                ports: Some(vec![port("TCP", konnectivity::AGENT_PORT)]),
            },
        ],
        Some(vec![
            NetworkPolicyEgressRule {
                to: Some(vec![peer(inputs, Component::Etcd)]),
                ports: Some(vec![port("TCP", etcd::CLIENT_PORT)]),
            },
            to_host_dns(inputs),
        ]),
    )
}

/// Nested DNS answers the cluster's own node pods only (nested pods'
/// queries leave their node pod from its address). It reads the API
/// servers and forwards to the host's DNS, or to `network.dnsUpstream`.
fn desired_coredns_policy(inputs: &ClusterInputs) -> NetworkPolicy {
    let mut egress = to_apiservers(inputs);
    let upstream: Vec<NetworkPolicyPeer> = inputs
        .network
        .dns_upstream
        .iter()
        .map(|ip| ip_block(&IpNet::from(*ip).to_string(), &[]))
        .collect();
    if !upstream.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(upstream),
            ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
        });
    }
    policy(
        inputs,
        Component::CoreDns,
        vec![NetworkPolicyIngressRule {
            from: Some(vec![peer(inputs, Component::Node)]),
            ports: Some(dns_ports()),
        }],
        Some(egress),
    )
}

fn ip_block(cidr: &str, except: &[IpNet]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then(|| except.iter().map(|n| n.to_string()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Node pods: in from their own cluster's node pods only (the API server
/// reaches them through the agents' own connections); out to their own
/// node pods, API servers and DNS, the host's DNS, what the platform
/// allows every cluster and this one (`spec.allowedEgress`), and every
/// address outside the host's networks and link-local ranges.
fn desired_nodes_policy(inputs: &ClusterInputs) -> NetworkPolicy {
    let net = &inputs.network;
    let nodes = peer(inputs, Component::Node);
    let (v4, v6) = net.denied_by_family();
    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![nodes.clone()]),
            ports: None,
        },
        NetworkPolicyEgressRule {
            to: Some(vec![peer(inputs, Component::ApiServer)]),
            ports: Some(vec![
                port("TCP", apiserver::PORT),
                port("TCP", konnectivity::AGENT_PORT),
            ]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![peer(inputs, Component::CoreDns)]),
            ports: Some(dns_ports()),
        },
        to_host_dns(inputs),
        NetworkPolicyEgressRule {
            to: Some(vec![ip_block("0.0.0.0/0", &v4), ip_block("::/0", &v6)]),
            ports: None,
        },
    ];
    egress.extend(
        net.allowed_egress
            .iter()
            .chain(&inputs.valid.allowed_egress)
            .map(|e| NetworkPolicyEgressRule {
                to: Some(vec![ip_block(&e.cidr.to_string(), &[])]),
                ports: (!e.ports.is_empty())
                    .then(|| e.ports.iter().map(|p| port("TCP", i32::from(*p))).collect()),
            }),
    );
    policy(
        inputs,
        Component::Node,
        vec![NetworkPolicyIngressRule {
            from: Some(vec![nodes]),
            ports: None,
        }],
        Some(egress),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use crate::model::network::HostNetwork;
    use serde_json::json;

    fn by_name(policies: &[NetworkPolicy], name: &str) -> serde_json::Value {
        let p = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no policy {name}"));
        serde_json::to_value(p.spec.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn every_pod_of_the_cluster_is_selected_once() {
        let vc = fixtures::vc(json!({}));
        let policies = desired_network_policies(&fixtures::inputs(&vc));
        let mut components: Vec<String> = policies
            .iter()
            .map(|p| {
                p.spec
                    .as_ref()
                    .unwrap()
                    .pod_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap()["app.kubernetes.io/component"]
                    .clone()
            })
            .collect();
        components.sort();
        assert_eq!(
            components,
            [
                "apiserver",
                "controller-manager",
                "coredns",
                "etcd",
                "node",
                "scheduler"
            ]
        );
        for p in &policies {
            assert_eq!(p.metadata.namespace.as_deref(), Some("tenants"));
            assert!(p.metadata.owner_references.is_some());
        }
    }

    #[test]
    fn node_pods_reach_neither_the_host_nor_link_local_addresses() {
        let vc = fixtures::vc(json!({}));
        let mut inputs = fixtures::inputs(&vc);
        inputs.network = HostNetwork::parse(
            r#"{"hostCIDRs": ["10.88.0.0/16", "10.0.0.0/16"],
                "allowedEgress": [{"cidr": "10.77.0.1/32", "ports": [5000]}]}"#,
        )
        .unwrap();
        let policies = desired_network_policies(&inputs);
        let nodes = by_name(&policies, "demo-node");
        assert_eq!(nodes["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            nodes["ingress"],
            json!([{"from": [{"podSelector": {"matchLabels": {
                "app.kubernetes.io/component": "node", "nestor.dev/cluster": "demo"}}}]}])
        );
        let egress = nodes["egress"].as_array().unwrap();
        let world = &egress[4]["to"];
        assert_eq!(world[0]["ipBlock"]["cidr"], "0.0.0.0/0");
        assert_eq!(
            world[0]["ipBlock"]["except"],
            json!(["10.0.0.0/16", "10.88.0.0/16", "169.254.0.0/16"])
        );
        assert_eq!(world[1]["ipBlock"]["except"], json!(["fe80::/10"]));
        assert_eq!(
            egress[5],
            json!({"to": [{"ipBlock": {"cidr": "10.77.0.1/32"}}],
                   "ports": [{"port": 5000, "protocol": "TCP"}]})
        );
        assert_eq!(
            egress[3]["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "kube-system"
        );
    }

    #[test]
    fn a_clusters_own_allowances_follow_the_platforms() {
        let vc = fixtures::vc(json!({
            "allowedEgress": [{"cidr": "10.0.9.0/24", "ports": [443]}, {"cidr": "10.0.8.7/32"}]
        }));
        let mut inputs = fixtures::inputs(&vc);
        inputs.network =
            HostNetwork::parse(r#"{"allowedEgress": [{"cidr": "10.77.0.1/32", "ports": [5000]}]}"#)
                .unwrap();
        let nodes = by_name(&desired_network_policies(&inputs), "demo-node");
        let egress = nodes["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 8);
        assert_eq!(egress[5]["to"][0]["ipBlock"]["cidr"], "10.77.0.1/32");
        assert_eq!(
            egress[6],
            json!({"to": [{"ipBlock": {"cidr": "10.0.9.0/24"}}],
                   "ports": [{"port": 443, "protocol": "TCP"}]})
        );
        assert_eq!(
            egress[7],
            json!({"to": [{"ipBlock": {"cidr": "10.0.8.7/32"}}]})
        );
        // Nothing else of the cluster changes with them.
        let plain = fixtures::vc(json!({}));
        let others = |inputs: &ClusterInputs| -> Vec<serde_json::Value> {
            desired_network_policies(inputs)
                .iter()
                .filter(|p| p.metadata.name.as_deref() != Some("demo-node"))
                .map(|p| serde_json::to_value(p).unwrap())
                .collect()
        };
        let mut plain_inputs = fixtures::inputs(&plain);
        plain_inputs.network = inputs.network.clone();
        assert_eq!(others(&inputs), others(&plain_inputs));
    }

    #[test]
    fn etcd_takes_only_its_api_servers_and_members() {
        let vc = fixtures::vc(json!({}));
        let policies = desired_network_policies(&fixtures::inputs(&vc));
        let etcd = by_name(&policies, "demo-etcd");
        let rules = etcd["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "no rule for the metrics port");
        let first = rules[0].to_string();
        assert!(first.contains("apiserver") && first.contains("2379"));
        assert!(first.contains("etcd-snapshot"), "the snapshot Job");
        assert!(first.contains("etcd-backup"), "the backup Jobs");
        assert_eq!(
            rules[1]["ports"],
            json!([{"port": 2380, "protocol": "TCP"}])
        );
    }

    #[test]
    fn the_control_plane_reaches_only_its_own_peers_and_dns() {
        let vc = fixtures::vc(json!({}));
        let mut inputs = fixtures::inputs(&vc);
        inputs.network = HostNetwork::parse(r#"{"dnsUpstream": ["192.0.2.53"]}"#).unwrap();
        let policies = desired_network_policies(&inputs);
        let host_dns = json!({"to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]});
        let apiservers = json!({"to": [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/component": "apiserver", "nestor.dev/cluster": "demo"}}}],
            "ports": [{"port": 6443, "protocol": "TCP"}]});
        for p in &policies {
            let spec = serde_json::to_value(p.spec.as_ref().unwrap()).unwrap();
            assert_eq!(
                spec["policyTypes"],
                json!(["Ingress", "Egress"]),
                "{:?}",
                p.metadata.name
            );
        }
        for name in ["demo-controller-manager", "demo-scheduler"] {
            assert_eq!(
                by_name(&policies, name)["egress"],
                json!([apiservers, host_dns]),
                "{name}"
            );
        }
        let api = by_name(&policies, "demo-apiserver");
        assert_eq!(api["egress"].as_array().unwrap().len(), 2);
        assert_eq!(api["egress"][1], host_dns);
        let etcd = by_name(&policies, "demo-etcd");
        assert_eq!(
            etcd["egress"][0]["ports"],
            json!([{"port": 2379, "protocol": "TCP"}, {"port": 2380, "protocol": "TCP"}])
        );
        assert_eq!(etcd["egress"][1], host_dns);
        let dns = by_name(&policies, "demo-coredns");
        assert_eq!(dns["egress"][0], apiservers);
        assert_eq!(dns["egress"][1], host_dns);
        assert_eq!(
            dns["egress"][2],
            json!({"to": [{"ipBlock": {"cidr": "192.0.2.53/32"}}],
                   "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]})
        );
    }

    #[test]
    fn only_the_serving_port_is_open_to_all() {
        let vc = fixtures::vc(json!({}));
        let policies = desired_network_policies(&fixtures::inputs(&vc));
        let api = by_name(&policies, "demo-apiserver");
        assert_eq!(
            api["ingress"][0],
            json!({"ports": [{"port": 6443, "protocol": "TCP"}]})
        );
        assert_eq!(
            api["ingress"][1]["ports"],
            json!([{"port": 8132, "protocol": "TCP"}])
        );
        assert!(api["ingress"][1]["from"].is_array());
        assert_eq!(by_name(&policies, "demo-scheduler")["ingress"], json!([]));
        assert_eq!(
            api["egress"][0],
            json!({"to": [{"podSelector": {"matchLabels": {
                "app.kubernetes.io/component": "etcd", "nestor.dev/cluster": "demo"}}}],
                "ports": [{"port": 2379, "protocol": "TCP"}]})
        );
        assert_eq!(
            by_name(&policies, "demo-controller-manager")["ingress"],
            json!([])
        );
        let dns = by_name(&policies, "demo-coredns");
        assert_eq!(dns["ingress"].as_array().unwrap().len(), 1);
        assert!(dns["ingress"][0]["from"].is_array());
    }
}
