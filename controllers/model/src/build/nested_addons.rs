//! What Nestor writes into a nested cluster itself, once its API server
//! serves: the tenant admin's binding to `cluster-admin`, the admission
//! policies that confine pods ([`crate::build::admission_policies`]),
//! the RBAC of CoreDNS and of node bootstrapping, and the
//! `kube-system/kube-dns` Service with an EndpointSlice that points at the
//! host Service in front of CoreDNS.

use crate::build::admission_policies::confining_policies;
use crate::build::coredns::COREDNS_USER;
use crate::build::pki_secrets::{KUBELET_CLIENT_USER, admin_group};
use crate::model::hash::desired_hash;
use crate::model::inputs::ClusterInputs;
use crate::model::names::nested_meta;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Everything Nestor writes into a nested cluster for its add-ons.
pub struct NestedAddons {
    pub policies: Vec<ValidatingAdmissionPolicy>,
    pub policy_bindings: Vec<ValidatingAdmissionPolicyBinding>,
    pub roles: Vec<ClusterRole>,
    pub bindings: Vec<ClusterRoleBinding>,
    pub dns_service: Service,
    pub dns_endpoints: EndpointSlice,
}

impl NestedAddons {
    pub fn new(inputs: &ClusterInputs, host_dns_ip: &str) -> Self {
        let (roles, mut bindings) = nested_cluster_roles();
        bindings.push(binding(
            ADMINS_BINDING,
            "cluster-admin",
            "Group",
            &admin_group(inputs),
        ));
        let (dns_service, dns_endpoints) = nested_kube_dns(inputs, host_dns_ip);
        let (policies, policy_bindings) = confining_policies(inputs.workloads);
        Self {
            policies,
            policy_bindings,
            roles,
            bindings,
            dns_service,
            dns_endpoints,
        }
    }

    /// A hash of all of it: when it changes, it is written again.
    pub fn hash(&self) -> String {
        desired_hash(&(
            &self.policies,
            &self.policy_bindings,
            &self.roles,
            &self.bindings,
            &self.dns_service,
            &self.dns_endpoints,
        ))
    }
}

/// The ClusterRoleBinding of the tenant admin's current group.
pub const ADMINS_BINDING: &str = "nestor:cluster-admins";

fn binding(name: &str, role: &str, subject_kind: &str, subject: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: nested_meta(name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: subject_kind.into(),
            name: subject.into(),
            ..Subject::default()
        }]),
    }
}

/// The nested cluster's RBAC for Nestor's add-ons and node bootstrapping:
/// CoreDNS may read what it serves; bootstrap tokens may only create node
/// client CSRs, which are approved automatically; nodes may renew their own
/// certificates, run kube-proxy and read what their NetworkPolicy enforcer
/// (kube-router, in each node pod) enforces.
pub fn nested_cluster_roles() -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let read = |groups: &[&str], resources: &[&str]| rule(&["list", "watch"], groups, resources);
    let coredns = ClusterRole {
        metadata: nested_meta("nestor:coredns", None),
        rules: Some(vec![
            read(&[""], &["endpoints", "services", "pods", "namespaces"]),
            read(&["discovery.k8s.io"], &["endpointslices"]),
        ]),
        ..ClusterRole::default()
    };
    // kube-router's firewall watches these; the Node authorizer alone lets
    // a node read only its own pods and no policies or namespaces.
    let node_network = ClusterRole {
        metadata: nested_meta("nestor:node-network-policy", None),
        rules: Some(vec![
            rule(
                &["get", "list", "watch"],
                &[""],
                &["pods", "namespaces", "nodes", "services", "endpoints"],
            ),
            read(&["discovery.k8s.io"], &["endpointslices"]),
            read(&["networking.k8s.io"], &["networkpolicies"]),
        ]),
        ..ClusterRole::default()
    };
    let bindings = vec![
        binding("nestor:coredns", "nestor:coredns", "User", COREDNS_USER),
        binding(
            "nestor:node-network-policy",
            "nestor:node-network-policy",
            "Group",
            "system:nodes",
        ),
        binding(
            "nestor:node-bootstrapper",
            "system:node-bootstrapper",
            "Group",
            "system:bootstrappers",
        ),
        binding(
            "nestor:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "Group",
            "system:bootstrappers",
        ),
        binding(
            "nestor:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "Group",
            "system:nodes",
        ),
        binding(
            "nestor:kubelet-api",
            "system:kubelet-api-admin",
            "User",
            KUBELET_CLIENT_USER,
        ),
        binding(
            "nestor:node-proxier",
            "system:node-proxier",
            "Group",
            "system:nodes",
        ),
    ];
    (vec![coredns, node_network], bindings)
}

/// The nested `kube-system/kube-dns` Service and its EndpointSlice, which
/// send DNS to the host Service in front of CoreDNS (`host_dns_ip`).
pub fn nested_kube_dns(inputs: &ClusterInputs, host_dns_ip: &str) -> (Service, EndpointSlice) {
    let dns_port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: 53,
        target_port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    };
    let mut service_meta = nested_meta("kube-dns", Some("kube-system"));
    service_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("k8s-app".into(), "kube-dns".into());
    let service = Service {
        metadata: service_meta,
        spec: Some(ServiceSpec {
            cluster_ip: Some(inputs.valid.dns_service_ip.to_string()),
            ports: Some(vec![dns_port("dns", "UDP"), dns_port("dns-tcp", "TCP")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let mut slice_meta = nested_meta("kube-dns-nestor", Some("kube-system"));
    slice_meta.labels.get_or_insert_with(BTreeMap::new).extend([
        (
            "kubernetes.io/service-name".to_string(),
            "kube-dns".to_string(),
        ),
        (
            "endpointslice.kubernetes.io/managed-by".to_string(),
            "nestor.dev".to_string(),
        ),
    ]);
    let family = if host_dns_ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    };
    let slice = EndpointSlice {
        metadata: slice_meta,
        address_type: family.into(),
        endpoints: vec![Endpoint {
            addresses: vec![host_dns_ip.into()],
            ..Endpoint::default()
        }],
        ports: Some(vec![
            EndpointPort {
                name: Some("dns".into()),
                port: Some(53),
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            EndpointPort {
                name: Some("dns-tcp".into()),
                port: Some(53),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
    };
    (service, slice)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::coredns::desired_coredns_config_map;
    use crate::model::inputs::fixtures;
    use crate::model::names::NESTED_ADDONS;
    use serde_json::json;

    #[test]
    fn the_admin_group_is_bound_and_moves_with_its_generation() {
        let admins = |generation: i64| {
            let vc = fixtures::vc(json!({"apiServer": {"adminCredentialGeneration": generation}}));
            let addons = NestedAddons::new(&fixtures::inputs(&vc), "10.0.0.53");
            let binding = addons
                .bindings
                .iter()
                .find(|b| b.metadata.name.as_deref() == Some(ADMINS_BINDING))
                .cloned()
                .unwrap();
            assert_eq!(binding.role_ref.name, "cluster-admin");
            (binding.subjects.unwrap()[0].name.clone(), addons.hash())
        };
        let (first, first_hash) = admins(0);
        let (second, second_hash) = admins(1);
        assert_eq!(first, "nestor:cluster-admins:0");
        assert_eq!(second, "nestor:cluster-admins:1");
        assert_ne!(first_hash, second_hash);
    }

    #[test]
    fn the_kubelet_client_is_a_kubelet_api_admin_only() {
        let (_, bindings) = nested_cluster_roles();
        let kubelet = bindings
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some("nestor:kubelet-api"))
            .unwrap();
        assert_eq!(kubelet.role_ref.name, "system:kubelet-api-admin");
        let subject = &kubelet.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str()),
            ("User", KUBELET_CLIENT_USER)
        );
    }

    #[test]
    fn nested_objects() {
        let (roles, bindings) = nested_cluster_roles();
        assert_eq!(roles[0].metadata.name.as_deref(), Some("nestor:coredns"));
        // Nodes read what kube-router enforces, and write nothing more.
        let network = &roles[1];
        assert_eq!(
            network.metadata.name.as_deref(),
            Some("nestor:node-network-policy")
        );
        let rules = network.rules.as_ref().unwrap();
        assert!(rules.iter().all(|r| {
            r.verbs
                .iter()
                .all(|v| ["get", "list", "watch"].contains(&v.as_str()))
        }));
        assert!(
            rules
                .iter()
                .any(|r| { r.resources.as_deref() == Some(&["networkpolicies".to_string()][..]) })
        );
        let network_binding = bindings
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some("nestor:node-network-policy"))
            .unwrap();
        assert_eq!(
            network_binding.subjects.as_ref().unwrap()[0].name,
            "system:nodes"
        );
        let bootstrap = bindings
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some("nestor:node-bootstrapper"))
            .unwrap();
        assert_eq!(
            bootstrap.subjects.as_ref().unwrap()[0].name,
            "system:bootstrappers"
        );
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let (svc, slice) = nested_kube_dns(&inputs, "10.0.0.53");
        assert_eq!(
            NestedAddons::new(&inputs, "10.0.0.53").hash(),
            NestedAddons::new(&inputs, "10.0.0.53").hash()
        );
        assert_ne!(
            NestedAddons::new(&inputs, "10.0.0.53").hash(),
            NestedAddons::new(&inputs, "10.0.0.54").hash()
        );
        let cm = desired_coredns_config_map(&inputs, Some("h"));
        assert_eq!(cm.metadata.annotations.unwrap()[NESTED_ADDONS], "h");
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(slice.endpoints[0].addresses, vec!["10.0.0.53"]);
        assert_eq!(
            slice.metadata.labels.unwrap()["kubernetes.io/service-name"],
            "kube-dns"
        );
    }
}
