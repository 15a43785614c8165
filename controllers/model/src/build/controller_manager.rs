//! The nested kube-controller-manager. It signs kubelet certificates with
//! the cluster CA (TLS bootstrapping), other client certificates with the
//! client signer, and runs the bootstrap-token controllers.

use crate::build::apiserver::control_plane_deployment;
use crate::build::podspec::*;
use crate::model::inputs::ClusterInputs;
use crate::model::names::Component;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, ContainerPort};
use std::collections::BTreeMap;

pub const PORT: i32 = 10257;
const DIR: &str = "/etc/kubernetes/controller-manager";

fn flags(inputs: &ClusterInputs) -> Vec<String> {
    let file = |f: &str| format!("{DIR}/{f}");
    let managed = BTreeMap::from([
        ("kubeconfig", file("kubeconfig")),
        ("authentication-kubeconfig", file("kubeconfig")),
        ("authorization-kubeconfig", file("kubeconfig")),
        ("bind-address", "0.0.0.0".to_string()),
        ("secure-port", PORT.to_string()),
        ("cluster-name", inputs.names.cluster.clone()),
        // Kubelets' client and serving certificates chain to the cluster
        // CA (the signers restrict their subjects to nodes); every other
        // client certificate the CSR API signs chains to the client signer,
        // replaced with each admin generation.
        ("cluster-signing-kubelet-client-cert-file", file("ca.crt")),
        ("cluster-signing-kubelet-client-key-file", file("ca.key")),
        ("cluster-signing-kubelet-serving-cert-file", file("ca.crt")),
        ("cluster-signing-kubelet-serving-key-file", file("ca.key")),
        (
            "cluster-signing-kube-apiserver-client-cert-file",
            file("client-signer.crt"),
        ),
        (
            "cluster-signing-kube-apiserver-client-key-file",
            file("client-signer.key"),
        ),
        (
            "cluster-signing-legacy-unknown-cert-file",
            file("client-signer.crt"),
        ),
        (
            "cluster-signing-legacy-unknown-key-file",
            file("client-signer.key"),
        ),
        ("root-ca-file", file("ca.crt")),
        ("service-account-private-key-file", file("sa.key")),
        ("use-service-account-credentials", "true".into()),
        // Start even while the API server is not up yet, instead of
        // crash-looping (and backing off) until it is.
        ("authentication-tolerate-lookup-failure", "true".into()),
        ("controllers", "*,bootstrapsigner,tokencleaner".into()),
        ("allocate-node-cidrs", "true".into()),
        ("cluster-cidr", inputs.valid.pod_cidr.to_string()),
        (
            "service-cluster-ip-range",
            inputs.valid.service_cidr.to_string(),
        ),
        // On always: a rolling update briefly runs two replicas.
        ("leader-elect", "true".into()),
        ("profiling", "false".into()),
    ]);
    render_flags(managed, &inputs.vc.spec.controller_manager.extra_args)
}

/// The kube-controller-manager Deployment; no replicas until `started`
/// (the API server serves).
pub fn desired_controller_manager_deployment(inputs: &ClusterInputs, started: bool) -> Deployment {
    let spec = &inputs.vc.spec.controller_manager;
    let mut command = vec!["kube-controller-manager".to_string()];
    command.extend(flags(inputs));
    let container = Container {
        name: "kube-controller-manager".into(),
        image: Some(inputs.images.controller_manager.clone()),
        command: Some(command),
        ports: Some(vec![ContainerPort {
            name: Some("https".into()),
            container_port: PORT,
            ..Default::default()
        }]),
        volume_mounts: Some(vec![read_only_mount("config", DIR)]),
        liveness_probe: Some(http_probe("/healthz", PORT, true, 10, 8)),
        readiness_probe: Some(http_probe("/healthz", PORT, true, 2, 3)),
        startup_probe: Some(http_probe("/healthz", PORT, true, 1, 300)),
        resources: Some(resources_or(&spec.resources, "50m", "64Mi")),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    control_plane_deployment(
        inputs,
        inputs.names.controller_manager(),
        Component::ControllerManager,
        if started { spec.replicas } else { 0 },
        container,
        vec![secret_volume(
            "config",
            &inputs.names.controller_manager_secret(),
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    #[test]
    fn every_flag_it_sets_is_refused_in_extra_args() {
        let vc = fixtures::vc(json!({}));
        let d = desired_controller_manager_deployment(&fixtures::inputs(&vc), true);
        crate::build::podspec::assert_flags_managed(&d, crate::model::flags::CONTROLLER_MANAGER);
    }

    #[test]
    fn signs_kubelets_with_the_cluster_ca_others_with_the_client_signer_and_elects_a_leader() {
        let vc = fixtures::vc(
            json!({"controllerManager": {"replicas": 2, "extraArgs": {"node-monitor-grace-period": "20s"}}}),
        );
        assert_eq!(
            desired_controller_manager_deployment(&fixtures::inputs(&vc), false)
                .spec
                .unwrap()
                .replicas,
            Some(0)
        );
        let d = desired_controller_manager_deployment(&fixtures::inputs(&vc), true);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let c = &spec.template.spec.unwrap().containers[0];
        let cmd = c.command.clone().unwrap();
        for flag in [
            "--cluster-signing-kubelet-client-cert-file=/etc/kubernetes/controller-manager/ca.crt",
            "--cluster-signing-kube-apiserver-client-key-file=/etc/kubernetes/controller-manager/client-signer.key",
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--leader-elect=true",
            "--cluster-cidr=10.244.0.0/16",
            "--node-monitor-grace-period=20s",
        ] {
            assert!(cmd.contains(&flag.to_string()), "missing {flag}");
        }
        // The legacy flag would sign every client certificate with the
        // cluster CA, and the controller-manager refuses it beside the
        // per-signer ones.
        assert!(
            !cmd.iter()
                .any(|f| f.starts_with("--cluster-signing-cert-file"))
        );
        assert_eq!(
            c.image.as_deref(),
            Some("registry.k8s.io/kube-controller-manager:v1.35.4")
        );
        assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
    }
}
