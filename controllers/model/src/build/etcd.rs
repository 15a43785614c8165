//! The nested cluster's etcd: a StatefulSet of 1, 3 or 5 members with
//! persistent volumes, a headless peer Service and a client Service. Its
//! NetworkPolicy is with the cluster's others ([`crate::build::network`]).

use crate::build::pki::{LeafRequest, Usage};
use crate::build::podspec::*;
use crate::model::inputs::{ClusterInputs, PKI_REVISION};
use crate::model::names::{ClusterNames, Component, cluster_child_meta, selector_labels};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec,
    Service, ServicePort, ServiceSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
pub const METRICS_PORT: i32 = 2381;
const PKI_DIR: &str = "/etc/etcd/pki";
const DATA_DIR: &str = "/var/lib/etcd";

/// The etcd server and peer certificate request: one certificate valid for
/// every member name (up to five), the client Service and loopback.
pub fn server_cert_request(names: &ClusterNames) -> LeafRequest {
    let mut dns_names = vec![
        format!("*.{}.{}.svc", names.etcd_peer_service(), names.namespace),
        format!("*.{}.{}", names.etcd_peer_service(), names.namespace),
        names.etcd(),
        format!("{}.{}", names.etcd(), names.namespace),
        names.etcd_client_host(),
        "localhost".into(),
    ];
    dns_names.extend((0..5).map(|i| format!("{}-{i}", names.etcd())));
    // etcd checks a peer's client certificate by resolving its DNS names and
    // comparing them with the connection's address: wildcards never match,
    // so every member's name is listed.
    dns_names.extend((0..5).map(|i| names.etcd_member_host(i)));
    LeafRequest {
        common_name: names.etcd(),
        organizations: vec![],
        dns_names,
        ips: vec![
            "127.0.0.1".parse().expect("literal IP"),
            "::1".parse().expect("literal IP"),
        ],
        usage: Usage::ServerAndClient,
    }
}

/// The headless Service through which members find each other. It publishes
/// members before they are ready, so that a new cluster can form.
pub fn desired_etcd_peer_service(inputs: &ClusterInputs) -> Service {
    let names = &inputs.names;
    Service {
        metadata: cluster_child_meta(inputs.vc, names.etcd_peer_service(), Component::Etcd),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&names.cluster, Component::Etcd)),
            ports: Some(vec![
                tcp_port("peer", PEER_PORT),
                tcp_port("client", CLIENT_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service the API servers reach etcd through.
pub fn desired_etcd_client_service(inputs: &ClusterInputs) -> Service {
    let names = &inputs.names;
    Service {
        metadata: cluster_child_meta(inputs.vc, names.etcd(), Component::Etcd),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&names.cluster, Component::Etcd)),
            ports: Some(vec![tcp_port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(crate) fn tcp_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The flags of one etcd member; `$(POD_NAME)` is expanded by the kubelet.
fn etcd_flags(inputs: &ClusterInputs) -> Vec<String> {
    let names = &inputs.names;
    let replicas = inputs.vc.spec.etcd.replicas;
    let member_host = format!(
        "$(POD_NAME).{}.{}.svc",
        names.etcd_peer_service(),
        names.namespace
    );
    let initial_cluster = (0..replicas)
        .map(|i| {
            format!(
                "{}-{i}=https://{}:{PEER_PORT}",
                names.etcd(),
                names.etcd_member_host(i)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let token = format!(
        "{}-{}",
        names.cluster,
        inputs.vc.metadata.uid.as_deref().unwrap_or("uid")
    );
    let flags = BTreeMap::from([
        ("name", "$(POD_NAME)".to_string()),
        ("data-dir", format!("{DATA_DIR}/data")),
        ("listen-peer-urls", format!("https://0.0.0.0:{PEER_PORT}")),
        (
            "listen-client-urls",
            format!("https://0.0.0.0:{CLIENT_PORT}"),
        ),
        (
            "listen-metrics-urls",
            format!("http://0.0.0.0:{METRICS_PORT}"),
        ),
        (
            "advertise-client-urls",
            format!("https://{member_host}:{CLIENT_PORT}"),
        ),
        (
            "initial-advertise-peer-urls",
            format!("https://{member_host}:{PEER_PORT}"),
        ),
        ("initial-cluster", initial_cluster),
        ("initial-cluster-state", "new".into()),
        ("initial-cluster-token", token),
        ("client-cert-auth", "true".into()),
        ("trusted-ca-file", format!("{PKI_DIR}/ca.crt")),
        ("cert-file", format!("{PKI_DIR}/server.crt")),
        ("key-file", format!("{PKI_DIR}/server.key")),
        ("peer-client-cert-auth", "true".into()),
        ("peer-trusted-ca-file", format!("{PKI_DIR}/ca.crt")),
        ("peer-cert-file", format!("{PKI_DIR}/peer.crt")),
        ("peer-key-file", format!("{PKI_DIR}/peer.key")),
        ("auto-compaction-mode", "periodic".into()),
        ("auto-compaction-retention", "5m".into()),
        ("snapshot-count", "10000".into()),
        ("quota-backend-bytes", "2147483648".into()),
    ]);
    render_flags(flags, &BTreeMap::new())
}

/// The etcd StatefulSet: members start in parallel so that a new cluster
/// can reach quorum, and their volumes go with the cluster.
pub fn desired_etcd_statefulset(inputs: &ClusterInputs) -> StatefulSet {
    let names = &inputs.names;
    let spec = &inputs.vc.spec.etcd;
    let labels = selector_labels(&names.cluster, Component::Etcd);
    let mut template_meta_labels =
        crate::model::names::component_labels(&names.cluster, Component::Etcd);
    template_meta_labels.extend(labels.clone());
    let mut command = vec!["etcd".to_string()];
    command.extend(etcd_flags(inputs));
    let container = Container {
        name: "etcd".into(),
        image: Some(inputs.images.etcd.clone()),
        command: Some(command),
        env: Some(vec![field_env("POD_NAME", "metadata.name")]),
        ports: Some(vec![
            ContainerPort {
                name: Some("client".into()),
                container_port: CLIENT_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("peer".into()),
                container_port: PEER_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                ..Default::default()
            },
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            read_only_mount("pki", PKI_DIR),
        ]),
        liveness_probe: Some(http_probe("/livez", METRICS_PORT, false, 10, 8)),
        readiness_probe: Some(http_probe("/readyz", METRICS_PORT, false, 2, 3)),
        startup_probe: Some(http_probe("/livez", METRICS_PORT, false, 1, 300)),
        resources: Some(resources_or(&spec.resources, "50m", "64Mi")),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    StatefulSet {
        metadata: cluster_child_meta(inputs.vc, names.etcd(), Component::Etcd),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(names.etcd_peer_service()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_meta_labels),
                    annotations: Some(BTreeMap::from([(
                        PKI_REVISION.into(),
                        inputs.pki_revision.clone(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(control_plane_pod(
                    vec![container],
                    vec![secret_volume("pki", &names.etcd_certs_secret())],
                    &inputs.placement,
                )),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(crate::model::names::component_labels(
                        &names.cluster,
                        Component::Etcd,
                    )),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".into(),
                            Quantity(spec.storage.clone()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    #[test]
    fn single_member_defaults() {
        let vc = fixtures::vc(json!({}));
        let sts = desired_etcd_statefulset(&fixtures::inputs(&vc));
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("demo-etcd-peer"));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.k8s.io/etcd:3.6.5-0"));
        let cmd = c.command.as_ref().unwrap();
        assert!(cmd.contains(&"--initial-cluster=demo-etcd-0=https://demo-etcd-0.demo-etcd-peer.tenants.svc:2380".to_string()));
        assert!(cmd.contains(&"--client-cert-auth=true".to_string()));
        assert!(cmd.contains(&"--peer-client-cert-auth=true".to_string()));
        assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert!(c.resources.as_ref().unwrap().requests.is_some());
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let pvc = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            pvc.spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "1Gi"
        );
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].kind,
            "VirtualCluster"
        );
    }

    #[test]
    fn three_members_list_each_other() {
        let vc = fixtures::vc(
            json!({"etcd": {"replicas": 3, "storage": "5Gi", "storageClassName": "fast"}}),
        );
        let sts = desired_etcd_statefulset(&fixtures::inputs(&vc));
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let cmd = spec.template.spec.unwrap().containers[0]
            .command
            .clone()
            .unwrap();
        let initial = cmd
            .iter()
            .find(|f| f.starts_with("--initial-cluster="))
            .unwrap();
        assert_eq!(initial.matches("https://").count(), 3);
        assert!(
            initial.contains("demo-etcd-2=https://demo-etcd-2.demo-etcd-peer.tenants.svc:2380")
        );
        let pvc = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(
            pvc.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast")
        );
    }

    #[test]
    fn services_and_policy() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let peer = desired_etcd_peer_service(&inputs);
        assert_eq!(
            peer.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(
            peer.spec.as_ref().unwrap().publish_not_ready_addresses,
            Some(true)
        );
        let client = desired_etcd_client_service(&inputs);
        assert_eq!(client.metadata.name.as_deref(), Some("demo-etcd"));
    }

    #[test]
    fn server_cert_covers_every_member() {
        let vc = fixtures::vc(json!({}));
        let req = server_cert_request(&ClusterNames::new(&vc));
        assert!(
            req.dns_names
                .contains(&"*.demo-etcd-peer.tenants.svc".to_string())
        );
        assert!(req.dns_names.contains(&"demo-etcd.tenants.svc".to_string()));
        assert!(
            req.dns_names
                .contains(&"demo-etcd-4.demo-etcd-peer.tenants.svc".to_string())
        );
        assert_eq!(req.usage, Usage::ServerAndClient);
    }
}
