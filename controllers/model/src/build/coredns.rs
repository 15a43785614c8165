//! CoreDNS. It runs on the host, in the virtual cluster's namespace, as a
//! hardened Deployment that watches the *nested* API server with its own
//! client certificate (user `nestor:coredns`). Inside the nested cluster,
//! the usual `kube-system/kube-dns` Service (at `dnsServiceIP`) has no
//! selector; its EndpointSlice points at the host DNS Service
//! ([`crate::build::nested_addons`]), so nested pods resolve names the
//! usual way while the tenant cannot tamper with its DNS server.

use crate::build::apiserver::control_plane_deployment;
use crate::build::podspec::*;
use crate::model::inputs::ClusterInputs;
use crate::model::names::{Component, NESTED_ADDONS, cluster_child_meta, selector_labels};
use crate::model::network::HostNetwork;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The unprivileged port CoreDNS listens on in its pod.
pub const DNS_PORT: i32 = 1053;
/// The user CoreDNS authenticates as to the nested API server.
pub const COREDNS_USER: &str = "nestor:coredns";

/// CoreDNS's configuration: authoritative for the nested cluster domain,
/// forwarding the rest to the platform's upstream (by default its pod's
/// resolver, the host's DNS), and answering no name of the host cluster's
/// own domain, so that no tenant learns the host's Services through it.
pub fn corefile(cluster_domain: &str, network: &HostNetwork) -> String {
    let upstream = if network.dns_upstream.is_empty() {
        "/etc/resolv.conf".to_string()
    } else {
        network
            .dns_upstream
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = format!(
        ".:{DNS_PORT} {{\n    errors\n    health :8080\n    ready :8181\n    kubernetes {cluster_domain} in-addr.arpa ip6.arpa {{\n        kubeconfig /etc/coredns/kubeconfig/kubeconfig\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }}\n    forward . {upstream}\n    cache 30\n    loop\n    reload\n    loadbalance\n}}\n"
    );
    // The nested domain, when it is the host's, already answers every name
    // in it (NXDOMAIN for the host's). Otherwise the host's domain gets a
    // block of its own that answers nothing; a nested domain inside the
    // host's would fall in that block, so it is not written then.
    let host = network.host_cluster_domain.as_str();
    let inside = |inner: &str, outer: &str| inner == outer || inner.ends_with(&format!(".{outer}"));
    if !inside(cluster_domain, host) {
        text.push_str(&format!(
            "{host}:{DNS_PORT} {{\n    errors\n    template ANY ANY {{\n        rcode NXDOMAIN\n    }}\n}}\n"
        ));
    }
    text
}

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
            corefile(&inputs.vc.spec.networking.cluster_domain, &inputs.network),
        )])),
        ..ConfigMap::default()
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
    let config = config_map_volume("config", &names.coredns());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    #[test]
    fn corefile_serves_the_cluster_domain() {
        let text = corefile("tenant.local", &HostNetwork::default());
        assert!(text.contains("kubernetes tenant.local in-addr.arpa ip6.arpa"));
        assert!(text.contains(&format!(".:{DNS_PORT}")));
        assert!(text.contains("forward . /etc/resolv.conf"));
        // The host's domain answers nothing.
        assert!(text.contains(&format!(
            "cluster.local:{DNS_PORT} {{\n    errors\n    template ANY ANY {{\n        rcode NXDOMAIN"
        )));
    }

    #[test]
    fn corefile_forwards_to_the_platforms_upstream() {
        let network =
            HostNetwork::parse(r#"{"dnsUpstream": ["192.0.2.53", "2001:db8::53"]}"#).unwrap();
        let text = corefile("cluster.local", &network);
        assert!(text.contains("forward . 192.0.2.53 2001:db8::53\n"));
        // The same domain as the host's: the nested one answers it whole.
        assert!(!text.contains("template"));
        let inner = corefile("t1.cluster.local", &network);
        assert!(!inner.contains("template"));
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
}
