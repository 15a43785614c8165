//! Cluster add-ons: CoreDNS and kube-proxy, and the objects Nestor writes
//! into the nested cluster itself.
//!
//! Where they run:
//! - **CoreDNS** runs on the host, in the virtual cluster's namespace, as a
//!   hardened Deployment that watches the *nested* API server with its own
//!   client certificate (user `nestor:coredns`). Inside the nested cluster,
//!   the usual `kube-system/kube-dns` Service (at `dnsServiceIP`) has no
//!   selector; its EndpointSlice points at the host DNS Service, so nested
//!   pods resolve names the usual way while the tenant cannot tamper with
//!   its DNS server.
//! - **kube-proxy** runs in every node pod, next to the kubelet, with the
//!   node's own credentials; its configuration is a ConfigMap here.

use crate::apiserver::control_plane_deployment;
use crate::cluster::ClusterInputs;
use crate::meta::{Component, cluster_child_meta, selector_labels};
use crate::podspec::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, Service, ServicePort, ServiceSpec,
    Volume,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nestor_crds::KubeProxyMode;
use std::collections::BTreeMap;

/// The unprivileged port CoreDNS listens on in its pod.
pub const DNS_PORT: i32 = 1053;
/// The user CoreDNS authenticates as to the nested API server.
pub const COREDNS_USER: &str = "nestor:coredns";
/// The label Nestor puts on what it writes into a nested cluster.
pub const NESTED_MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "nestor");

/// CoreDNS's configuration: authoritative for the nested cluster domain,
/// forwarding the rest to the host's resolver.
pub fn corefile(cluster_domain: &str) -> String {
    format!(
        ".:{DNS_PORT} {{\n    errors\n    health :8080\n    ready :8181\n    kubernetes {cluster_domain} in-addr.arpa ip6.arpa {{\n        kubeconfig /etc/coredns/kubeconfig/kubeconfig\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }}\n    forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n    loadbalance\n}}\n"
    )
}

/// Annotation on the CoreDNS ConfigMap: the hash of the objects Nestor last
/// wrote into the nested cluster ([`nested_addons_hash`]).
pub const NESTED_ADDONS: &str = "nestor.dev/nested-addons";

/// The ConfigMap holding the Corefile. `nested_addons` is the hash of what
/// was written into the nested cluster, once it was.
pub fn desired_coredns_config_map(
    inputs: &ClusterInputs,
    nested_addons: Option<&str>,
) -> ConfigMap {
    let mut metadata = cluster_child_meta(inputs.vc, inputs.names.coredns(), Component::CoreDns);
    if let Some(hash) = nested_addons {
        metadata.annotations = Some(BTreeMap::from([(
            NESTED_ADDONS.to_string(),
            hash.to_string(),
        )]));
    }
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            "Corefile".into(),
            corefile(&inputs.vc.spec.networking.cluster_domain),
        )])),
        ..ConfigMap::default()
    }
}

/// Everything Nestor writes into a nested cluster for its add-ons.
pub struct NestedAddons {
    pub roles: Vec<ClusterRole>,
    pub bindings: Vec<ClusterRoleBinding>,
    pub dns_service: Service,
    pub dns_endpoints: EndpointSlice,
}

impl NestedAddons {
    pub fn new(inputs: &ClusterInputs, host_dns_ip: &str) -> Self {
        let (roles, bindings) = nested_cluster_roles();
        let (dns_service, dns_endpoints) = nested_kube_dns(inputs, host_dns_ip);
        Self {
            roles,
            bindings,
            dns_service,
            dns_endpoints,
        }
    }

    /// A hash of all of it: when it changes, it is written again.
    pub fn hash(&self) -> String {
        crate::apply::desired_hash(&(
            &self.roles,
            &self.bindings,
            &self.dns_service,
            &self.dns_endpoints,
        ))
    }
}

/// The CoreDNS Deployment; no replicas until `started` (its RBAC is in the
/// nested cluster).
pub fn desired_coredns_deployment(inputs: &ClusterInputs, started: bool) -> Deployment {
    let names = &inputs.names;
    let container = Container {
        name: "coredns".into(),
        image: Some(inputs.images.coredns.clone()),
        args: Some(vec!["-conf".into(), "/etc/coredns/config/Corefile".into()]),
        ports: Some(vec![
            ContainerPort {
                name: Some("dns".into()),
                container_port: DNS_PORT,
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("dns-tcp".into()),
                container_port: DNS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("health".into()),
                container_port: 8080,
                ..Default::default()
            },
        ]),
        volume_mounts: Some(vec![
            read_only_mount("config", "/etc/coredns/config"),
            read_only_mount("kubeconfig", "/etc/coredns/kubeconfig"),
        ]),
        liveness_probe: Some(http_probe("/health", 8080, false, 10, 5)),
        readiness_probe: Some(http_probe("/ready", 8181, false, 2, 3)),
        resources: Some(resources_or(&None, "20m", "32Mi")),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    let config = Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.coredns(),
            ..Default::default()
        }),
        ..Volume::default()
    };
    control_plane_deployment(
        inputs,
        names.coredns(),
        Component::CoreDns,
        if started {
            inputs.vc.spec.addons.core_dns.replicas
        } else {
            0
        },
        container,
        vec![config, secret_volume("kubeconfig", &names.coredns_secret())],
    )
}

/// The host Service in front of CoreDNS (port 53).
pub fn desired_dns_service(inputs: &ClusterInputs) -> Service {
    let port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: 53,
        target_port: Some(IntOrString::Int(DNS_PORT)),
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    };
    Service {
        metadata: cluster_child_meta(inputs.vc, inputs.names.dns_service(), Component::CoreDns),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&inputs.names.cluster, Component::CoreDns)),
            ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// kube-proxy's configuration, mounted by every node pod. Conntrack limits
/// are left to the host: a node pod cannot set those sysctls.
pub fn kube_proxy_config(inputs: &ClusterInputs) -> String {
    let mode = match inputs.vc.spec.addons.kube_proxy.mode {
        KubeProxyMode::Iptables => "iptables",
        KubeProxyMode::Nftables => "nftables",
    };
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: {mode}\nclusterCIDR: {}\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig\nconntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\nmetricsBindAddress: 127.0.0.1:10249\nhealthzBindAddress: 0.0.0.0:10256\n",
        inputs.valid.pod_cidr
    )
}

/// The ConfigMap holding kube-proxy's configuration.
pub fn desired_kube_proxy_config_map(inputs: &ClusterInputs) -> ConfigMap {
    ConfigMap {
        metadata: cluster_child_meta(
            inputs.vc,
            inputs.names.kube_proxy_config(),
            Component::KubeProxy,
        ),
        data: Some(BTreeMap::from([(
            "config.conf".into(),
            kube_proxy_config(inputs),
        )])),
        ..ConfigMap::default()
    }
}

fn nested_meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([(
            NESTED_MANAGED_BY.0.into(),
            NESTED_MANAGED_BY.1.into(),
        )])),
        ..ObjectMeta::default()
    }
}

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
/// certificates and run kube-proxy.
pub fn nested_cluster_roles() -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    let read = |groups: &[&str], resources: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: vec!["list".into(), "watch".into()],
        ..PolicyRule::default()
    };
    let coredns = ClusterRole {
        metadata: nested_meta("nestor:coredns", None),
        rules: Some(vec![
            read(&[""], &["endpoints", "services", "pods", "namespaces"]),
            read(&["discovery.k8s.io"], &["endpointslices"]),
        ]),
        ..ClusterRole::default()
    };
    let bindings = vec![
        binding("nestor:coredns", "nestor:coredns", "User", COREDNS_USER),
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
            "nestor:node-proxier",
            "system:node-proxier",
            "Group",
            "system:nodes",
        ),
    ];
    (vec![coredns], bindings)
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
    use crate::cluster::fixtures;
    use serde_json::json;

    #[test]
    fn corefile_serves_the_cluster_domain() {
        let text = corefile("tenant.local");
        assert!(text.contains("kubernetes tenant.local in-addr.arpa ip6.arpa"));
        assert!(text.contains(&format!(".:{DNS_PORT}")));
    }

    #[test]
    fn coredns_deployment_and_service() {
        let vc = fixtures::vc(json!({"addons": {"coreDNS": {"replicas": 2}}}));
        let inputs = fixtures::inputs(&vc);
        let d = desired_coredns_deployment(&inputs, true);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("registry.k8s.io/coredns/coredns:v1.12.1")
        );
        assert_eq!(
            c.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let svc = desired_dns_service(&inputs);
        let ports = svc.spec.unwrap().ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert!(
            ports
                .iter()
                .all(|p| p.port == 53 && p.target_port == Some(IntOrString::Int(DNS_PORT)))
        );
    }

    #[test]
    fn kube_proxy_mode_follows_spec() {
        let vc = fixtures::vc(json!({"addons": {"kubeProxy": {"mode": "nftables"}}}));
        let cm = desired_kube_proxy_config_map(&fixtures::inputs(&vc));
        let text = &cm.data.unwrap()["config.conf"];
        assert!(text.contains("mode: nftables") && text.contains("clusterCIDR: 10.244.0.0/16"));
    }

    #[test]
    fn nested_objects() {
        let (roles, bindings) = nested_cluster_roles();
        assert_eq!(roles[0].metadata.name.as_deref(), Some("nestor:coredns"));
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
