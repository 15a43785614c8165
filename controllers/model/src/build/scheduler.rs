//! The nested kube-scheduler.

use crate::build::apiserver::control_plane_deployment;
use crate::build::podspec::*;
use crate::model::inputs::ClusterInputs;
use crate::model::names::Component;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, ContainerPort};
use std::collections::BTreeMap;

pub const PORT: i32 = 10259;
const DIR: &str = "/etc/kubernetes/scheduler";

/// The kube-scheduler Deployment; no replicas until `started` (the API
/// server serves).
pub fn desired_scheduler_deployment(inputs: &ClusterInputs, started: bool) -> Deployment {
    let spec = &inputs.vc.spec.scheduler;
    let kubeconfig = format!("{DIR}/kubeconfig");
    let managed = BTreeMap::from([
        ("kubeconfig", kubeconfig.clone()),
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig),
        ("bind-address", "0.0.0.0".to_string()),
        ("authentication-tolerate-lookup-failure", "true".into()),
        ("secure-port", PORT.to_string()),
        // On always: a rolling update briefly runs two replicas.
        ("leader-elect", "true".into()),
        ("profiling", "false".into()),
    ]);
    let mut command = vec!["kube-scheduler".to_string()];
    command.extend(render_flags(managed, &spec.extra_args));
    let container = Container {
        name: "kube-scheduler".into(),
        image: Some(inputs.images.scheduler.clone()),
        command: Some(command),
        ports: Some(vec![ContainerPort {
            name: Some("https".into()),
            container_port: PORT,
            ..Default::default()
        }]),
        volume_mounts: Some(vec![read_only_mount("config", DIR)]),
        liveness_probe: Some(http_probe("/livez", PORT, true, 10, 8)),
        readiness_probe: Some(http_probe("/readyz", PORT, true, 2, 3)),
        startup_probe: Some(http_probe("/livez", PORT, true, 1, 300)),
        resources: Some(resources_or(&spec.resources, "50m", "48Mi")),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    control_plane_deployment(
        inputs,
        inputs.names.scheduler(),
        Component::Scheduler,
        if started { spec.replicas } else { 0 },
        container,
        vec![secret_volume("config", &inputs.names.scheduler_secret())],
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
        let d = desired_scheduler_deployment(&fixtures::inputs(&vc), true);
        crate::build::podspec::assert_flags_managed(&d, crate::model::flags::SCHEDULER);
    }

    #[test]
    fn scheduler_uses_its_kubeconfig() {
        let vc = fixtures::vc(json!({"scheduler": {"extraArgs": {"v": "3"}}}));
        let d = desired_scheduler_deployment(&fixtures::inputs(&vc), true);
        let spec = d.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        let cmd = pod.containers[0].command.clone().unwrap();
        assert!(cmd.contains(&"--kubeconfig=/etc/kubernetes/scheduler/kubeconfig".to_string()));
        assert!(cmd.contains(&"--v=3".to_string()));
        assert_eq!(
            pod.volumes.unwrap()[0]
                .secret
                .as_ref()
                .unwrap()
                .secret_name
                .as_deref(),
            Some("demo-scheduler-kubeconfig")
        );
    }
}
