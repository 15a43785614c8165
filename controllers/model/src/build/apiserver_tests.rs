//! The API server's flags, serving certificate, Deployment and Service.

use super::*;
use crate::model::inputs::fixtures;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceStatus,
};
use serde_json::json;

#[test]
fn every_flag_it_sets_is_refused_in_extra_args() {
    let vc = fixtures::vc(json!({}));
    let d = desired_apiserver_deployment(&fixtures::inputs(&vc));
    crate::build::podspec::assert_flags_managed(&d, crate::model::flags::APISERVER);
}

#[test]
fn the_guard_runs_beside_the_api_server_and_config_changes_restart_it() {
    let vc = fixtures::vc(json!({}));
    let mut inputs = fixtures::inputs(&vc);
    let confined = desired_apiserver_deployment(&inputs);
    let template = confined.spec.unwrap().template;
    let pod = template.spec.unwrap();
    let guard = pod.containers.iter().find(|c| c.name == "guard").unwrap();
    assert_eq!(guard.image.as_deref(), Some(inputs.guard_image.as_str()));
    assert_eq!(
        guard.args.as_deref().unwrap(),
        ["guard", "--listen", "127.0.0.1:10260"]
    );
    assert!(
        guard.ports.is_none(),
        "the guard is reached on loopback only"
    );
    let hash = |d: Deployment| {
        d.spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH]
            .clone()
    };
    let before = template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH].clone();
    inputs.workloads = WorkloadPolicy::Privileged;
    let privileged = desired_apiserver_deployment(&inputs);
    let cmd = privileged
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .command
        .clone()
        .unwrap();
    assert!(cmd.contains(&"--allow-privileged=true".to_string()));
    assert_ne!(before, hash(privileged));
}

#[test]
fn deployment_is_wired_to_etcd_and_keys() {
    let vc = fixtures::vc(json!({"apiServer": {"replicas": 2, "extraArgs": {"v": "2"}}}));
    let d = desired_apiserver_deployment(&fixtures::inputs(&vc));
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    let cmd = c.command.clone().unwrap();
    for flag in [
        "--etcd-servers=https://demo-etcd.tenants.svc:2379",
        "--etcd-cafile=/etc/kubernetes/pki/etcd-ca.crt",
        "--service-account-key-file=/etc/kubernetes/pki/sa.pub",
        "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key",
        "--service-cluster-ip-range=10.96.0.0/12",
        "--enable-admission-plugins=NodeRestriction",
        "--authorization-config=/etc/kubernetes/config/authorization.yaml",
        "--authentication-config=/etc/kubernetes/config/authentication.yaml",
        "--admission-control-config-file=/etc/kubernetes/config/admission.yaml",
        "--allow-privileged=false",
        "--v=2",
    ] {
        assert!(cmd.contains(&flag.to_string()), "missing {flag} in {cmd:?}");
    }
    assert!(!cmd.iter().any(|f| f.starts_with("--authorization-mode")));
    assert_eq!(
        c.image.as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.35.4")
    );
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/livez"));
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(ready.scheme.as_deref(), Some("HTTPS"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .capabilities
            .as_ref()
            .unwrap()
            .drop,
        Some(vec!["ALL".into()])
    );
}

#[test]
fn serving_cert_covers_every_way_in() {
    let vc = fixtures::vc(json!({"apiServer": {"certSANs": ["api.example.com", "192.0.2.7"]}}));
    let inputs = fixtures::inputs(&vc);
    let req = serving_cert_request(&inputs, &["10.0.0.42".into()]);
    for name in [
        "kubernetes.default.svc.cluster.local",
        "demo-apiserver.tenants.svc",
        "api.example.com",
        "localhost",
    ] {
        assert!(req.dns_names.contains(&name.to_string()), "{name}");
    }
    for ip in ["10.96.0.1", "127.0.0.1", "192.0.2.7", "10.0.0.42"] {
        assert!(req.ips.contains(&ip.parse().unwrap()), "{ip}");
    }
}

/// The Service as its watch caches it.
fn cached(svc: &Service) -> CachedService {
    serde_json::from_value(serde_json::to_value(svc).unwrap()).unwrap()
}

#[test]
fn service_type_follows_exposure_and_endpoint_follows_service() {
    let vc = fixtures::vc(json!({"apiServer": {"exposure": "NodePort"}}));
    let inputs = fixtures::inputs(&vc);
    let mut svc = desired_apiserver_service(&inputs);
    assert_eq!(
        svc.spec.as_ref().unwrap().type_.as_deref(),
        Some("NodePort")
    );
    assert_eq!(
        published_endpoint(&inputs.names, &cached(&svc), Some("192.0.2.1")),
        None,
        "no node port yet"
    );
    svc.spec.as_mut().unwrap().ports = Some(vec![ServicePort {
        port: 6443,
        node_port: Some(31443),
        ..Default::default()
    }]);
    assert_eq!(
        published_endpoint(&inputs.names, &cached(&svc), Some("192.0.2.1")).as_deref(),
        Some("https://192.0.2.1:31443")
    );

    svc.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    assert_eq!(
        published_endpoint(&inputs.names, &cached(&svc), None),
        None,
        "pending load balancer"
    );
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("203.0.113.9".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    assert_eq!(
        published_endpoint(&inputs.names, &cached(&svc), None).as_deref(),
        Some("https://203.0.113.9:6443")
    );

    svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    svc.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.5".into());
    assert_eq!(
        published_endpoint(&inputs.names, &cached(&svc), None).as_deref(),
        Some("https://10.0.0.5:6443")
    );
}

#[test]
fn a_node_port_endpoint_stays_while_its_node_does() {
    let nodes = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(n, ip)| (n.to_string(), ip.to_string()))
            .collect::<Vec<_>>()
    };
    let two = nodes(&[("b", "10.0.0.2"), ("a", "10.0.0.1")]);
    assert_eq!(node_address(None, &two).as_deref(), Some("10.0.0.1"));
    assert_eq!(
        node_address(Some("10.0.0.2"), &two).as_deref(),
        Some("10.0.0.2"),
        "a node added before it in the list changes nothing"
    );
    let gone = nodes(&[("c", "10.0.0.3")]);
    assert_eq!(
        node_address(Some("10.0.0.2"), &gone).as_deref(),
        Some("10.0.0.3")
    );
    assert_eq!(node_address(Some("10.0.0.2"), &[]), None);
    assert_eq!(
        host_of("https://[fd00::1]:6443").as_deref(),
        Some("fd00::1")
    );
    assert_eq!(
        host_of("https://10.0.0.1:30443").as_deref(),
        Some("10.0.0.1")
    );
}
