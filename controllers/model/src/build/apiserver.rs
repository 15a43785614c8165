//! The nested kube-apiserver: a Deployment wired to etcd over TLS, with
//! the guard and Konnectivity's proxy server beside it, and a Service of the
//! requested type.

use crate::build::apiserver_config as config;
use crate::build::encryption;
use crate::build::konnectivity;
use crate::build::pki::{LeafRequest, Usage};
use crate::build::podspec::*;
use crate::model::cached::CachedService;
use crate::model::guard;
use crate::model::inputs::{ClusterInputs, PKI_REVISION, WorkloadPolicy};
use crate::model::names::{
    ClusterNames, Component, cluster_child_meta, component_labels, selector_labels,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, ContainerPort, PodTemplateSpec, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nestor_crds::ExposureType;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The port the API server serves on, in the pod and on its Service.
pub use crate::model::names::APISERVER_PORT as PORT;
const PKI_DIR: &str = "/etc/kubernetes/pki";

/// Admission plugins on top of the API server's defaults.
pub const ADMISSION_PLUGINS: &str = "NodeRestriction";

/// DNS names and addresses the serving certificate must cover: the nested
/// `kubernetes` Service in all its spellings, the host Service, loopback,
/// the published address and the user's extra names.
pub fn serving_cert_request(inputs: &ClusterInputs, published: &[String]) -> LeafRequest {
    let names = &inputs.names;
    let domain = &inputs.vc.spec.networking.cluster_domain;
    let mut dns_names = vec![
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{domain}"),
        names.apiserver(),
        format!("{}.{}", names.apiserver(), names.namespace),
        names.apiserver_host(),
        "localhost".into(),
    ];
    let mut ips: Vec<IpAddr> = vec![
        inputs.valid.kubernetes_service_ip,
        "127.0.0.1".parse().expect("literal IP"),
    ];
    for extra in inputs.vc.spec.api_server.cert_sans.iter().chain(published) {
        match extra.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns_names.push(extra.clone()),
        }
    }
    dns_names.sort();
    dns_names.dedup();
    ips.sort();
    ips.dedup();
    LeafRequest {
        common_name: "kube-apiserver".into(),
        organizations: vec![],
        dns_names,
        ips,
        usage: Usage::Server,
    }
}

/// The API server's flags.
fn flags(inputs: &ClusterInputs) -> Vec<String> {
    let names = &inputs.names;
    let net = &inputs.vc.spec.networking;
    let pki = |f: &str| format!("{PKI_DIR}/{f}");
    let config = |f: &str| format!("{}/{f}", config::DIR);
    let managed = BTreeMap::from([
        ("advertise-address", "$(POD_IP)".to_string()),
        ("secure-port", PORT.to_string()),
        ("bind-address", "0.0.0.0".into()),
        (
            "etcd-servers",
            format!(
                "https://{}:{}",
                names.etcd_client_host(),
                crate::build::etcd::CLIENT_PORT
            ),
        ),
        ("etcd-cafile", pki("etcd-ca.crt")),
        ("etcd-certfile", pki("apiserver-etcd-client.crt")),
        ("etcd-keyfile", pki("apiserver-etcd-client.key")),
        // The cluster CA and the current client signer.
        ("client-ca-file", pki("client-ca.crt")),
        ("tls-cert-file", pki("apiserver.crt")),
        ("tls-private-key-file", pki("apiserver.key")),
        (
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{}", net.cluster_domain),
        ),
        // The key set is where pods find it, through the in-cluster name
        // the serving certificate covers (by default it would name the API
        // server's pod IP, which the certificate does not).
        (
            "service-account-jwks-uri",
            format!(
                "https://kubernetes.default.svc.{}/openid/v1/jwks",
                net.cluster_domain
            ),
        ),
        ("service-account-key-file", pki("sa.pub")),
        ("service-account-signing-key-file", pki("sa.key")),
        (
            "service-cluster-ip-range",
            inputs.valid.service_cidr.to_string(),
        ),
        ("authorization-config", config(config::AUTHORIZATION)),
        ("authentication-config", config(config::AUTHENTICATION)),
        ("admission-control-config-file", config(config::ADMISSION)),
        ("audit-policy-file", config(config::AUDIT_POLICY)),
        (
            "egress-selector-config-file",
            config(config::EGRESS_SELECTOR),
        ),
        // Standard output: the host's log pipeline collects it.
        ("audit-log-path", "-".into()),
        ("audit-log-format", "json".into()),
        (
            "encryption-provider-config",
            format!("{}/{}", encryption::DIR, encryption::CONFIG_FILE),
        ),
        ("enable-admission-plugins", ADMISSION_PLUGINS.into()),
        ("enable-bootstrap-token-auth", "true".into()),
        // Webhooks and aggregated APIs are called at a ready endpoint's pod
        // IP rather than the Service's cluster IP: an agent dials it from a
        // node pod whose kube-proxy may not have programmed a new Service
        // yet, and pod IPs route from every node pod at once.
        ("enable-aggregator-routing", "true".into()),
        (
            "allow-privileged",
            (inputs.workloads == WorkloadPolicy::Privileged).to_string(),
        ),
        (
            "kubelet-client-certificate",
            pki("apiserver-kubelet-client.crt"),
        ),
        ("kubelet-client-key", pki("apiserver-kubelet-client.key")),
        // Kubelet serving certificates are signed by the cluster CA.
        ("kubelet-certificate-authority", pki("ca.crt")),
        ("kubelet-preferred-address-types", "InternalIP".into()),
        ("proxy-client-cert-file", pki("front-proxy-client.crt")),
        ("proxy-client-key-file", pki("front-proxy-client.key")),
        ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
        ("requestheader-allowed-names", "front-proxy-client".into()),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".into(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".into()),
        ("requestheader-username-headers", "X-Remote-User".into()),
        ("profiling", "false".into()),
        ("endpoint-reconciler-type", "lease".into()),
    ]);
    render_flags(managed, &inputs.vc.spec.api_server.extra_args)
}

/// The kube-apiserver Deployment. Probes on `/livez` and `/readyz` make its
/// availability mean "the nested API answers".
pub fn desired_apiserver_deployment(inputs: &ClusterInputs) -> Deployment {
    let names = &inputs.names;
    let spec = &inputs.vc.spec.api_server;
    let mut command = vec!["kube-apiserver".to_string()];
    command.extend(flags(inputs));
    let container = Container {
        name: "kube-apiserver".into(),
        image: Some(inputs.images.apiserver.clone()),
        command: Some(command),
        env: Some(vec![field_env("POD_IP", "status.podIP")]),
        ports: Some(vec![ContainerPort {
            name: Some("https".into()),
            container_port: PORT,
            ..Default::default()
        }]),
        volume_mounts: Some(vec![
            read_only_mount("pki", PKI_DIR),
            read_only_mount("config", config::DIR),
            read_only_mount("encryption", encryption::DIR),
            konnectivity::socket_mount(),
        ]),
        liveness_probe: Some(http_probe("/livez", PORT, true, 10, 8)),
        readiness_probe: Some(http_probe("/readyz", PORT, true, 1, 3)),
        startup_probe: Some(http_probe("/livez", PORT, true, 1, 300)),
        resources: Some(resources_or(&spec.resources, "100m", "192Mi")),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    let mut deployment = control_plane_deployment(
        inputs,
        names.apiserver(),
        Component::ApiServer,
        spec.replicas,
        container,
        vec![
            secret_volume("pki", &names.apiserver_certs_secret()),
            config_map_volume("config", &names.apiserver_config()),
            secret_volume("encryption", &names.encryption_secret()),
            konnectivity::socket_volume(),
        ],
    );
    if let Some(template) = deployment.spec.as_mut().map(|s| &mut s.template) {
        if let Some(annotations) = template
            .metadata
            .as_mut()
            .and_then(|m| m.annotations.as_mut())
        {
            annotations.insert(CONFIG_HASH.into(), config::config_hash(inputs));
        }
        if let Some(pod) = template.spec.as_mut() {
            pod.containers.push(guard_container(inputs));
            pod.containers
                .push(konnectivity::server_container(inputs, PKI_DIR, "pki"));
        }
    }
    deployment
}

/// Annotation on the API server's pod template: a hash of its
/// configuration files, which it reads only at start.
pub const CONFIG_HASH: &str = "nestor.dev/config-hash";

/// The authorization guard ([`crate::model::guard`]): the operator's own
/// binary, answering the API server's webhook authorizer on loopback.
fn guard_container(inputs: &ClusterInputs) -> Container {
    Container {
        name: "guard".into(),
        image: Some(inputs.guard_image.clone()),
        args: Some(vec![
            "guard".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", guard::PORT),
        ]),
        resources: Some(resources_or(&None, "5m", "16Mi")),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    }
}

/// A hardened Deployment of one control-plane component. Rolling updates
/// add a pod before removing one, so a single replica keeps serving.
pub(crate) fn control_plane_deployment(
    inputs: &ClusterInputs,
    name: String,
    component: Component,
    replicas: i32,
    container: Container,
    volumes: Vec<k8s_openapi::api::core::v1::Volume>,
) -> Deployment {
    let cluster = &inputs.names.cluster;
    Deployment {
        metadata: cluster_child_meta(inputs.vc, name, component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster, component)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(component_labels(cluster, component)),
                    annotations: Some(BTreeMap::from([
                        (PKI_REVISION.into(), inputs.pki_revision.clone()),
                        (
                            crate::model::status::VERSION_ANNOTATION.into(),
                            inputs.vc.spec.version.clone(),
                        ),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(control_plane_pod(
                    vec![container],
                    volumes,
                    &inputs.placement,
                )),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Service that exposes the API server, of the requested type.
pub fn desired_apiserver_service(inputs: &ClusterInputs) -> Service {
    let names = &inputs.names;
    let type_ = match inputs.vc.spec.api_server.exposure {
        ExposureType::ClusterIP => "ClusterIP",
        ExposureType::NodePort => "NodePort",
        ExposureType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: cluster_child_meta(inputs.vc, names.apiserver(), Component::ApiServer),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector_labels(&names.cluster, Component::ApiServer)),
            ports: Some(vec![
                crate::build::etcd::tcp_port("https", PORT),
                crate::build::etcd::tcp_port("konnectivity", konnectivity::AGENT_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where clients outside the nested cluster reach its API server, read from
/// the live Service (and, for NodePort, a host node's address). `None` while
/// the address is not assigned yet (for example a pending load balancer).
pub fn published_endpoint(
    names: &ClusterNames,
    service: &CachedService,
    node_address: Option<&str>,
) -> Option<String> {
    let spec = service.spec.as_ref()?;
    let url = |host: &str, port: i32| {
        if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        }
    };
    match spec.type_.as_deref() {
        Some("LoadBalancer") => {
            let ingress = service
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .first()?;
            let host = ingress.ip.as_deref().or(ingress.hostname.as_deref())?;
            Some(url(host, PORT))
        }
        Some("NodePort") => {
            let port = spec.ports.as_ref()?.first()?.node_port?;
            Some(url(node_address?, port))
        }
        _ => {
            let ip = service.cluster_ip();
            Some(
                ip.map(|ip| url(ip, PORT))
                    .unwrap_or_else(|| names.internal_endpoint()),
            )
        }
    }
}

/// The host of an `https://host:port` URL.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        rest.rsplit_once(':').map(|(h, _)| h).unwrap_or(rest)
    };
    Some(host.to_string())
}

/// The host node address a NodePort API server is published on, from the
/// host nodes' `(name, InternalIP)` pairs: the one already published while
/// a node still has it (so that the endpoint, and the certificates that
/// name it, do not change with the node list), otherwise the first node's
/// by name.
pub fn node_address(published_host: Option<&str>, nodes: &[(String, String)]) -> Option<String> {
    if let Some(host) = published_host
        && nodes.iter().any(|(_, ip)| ip == host)
    {
        return Some(host.to_string());
    }
    nodes
        .iter()
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, ip)| ip.clone())
}

#[cfg(test)]
#[path = "apiserver_tests.rs"]
mod tests;
