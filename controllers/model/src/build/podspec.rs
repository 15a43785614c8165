//! Pieces every hardened pod spec shares.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The unprivileged user and group control-plane pods run as.
pub const NONROOT_UID: i64 = 65532;

/// Pod-level hardening: non-root, fixed user and group, seccomp RuntimeDefault.
pub fn hardened_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT_UID),
        run_as_group: Some(NONROOT_UID),
        fs_group: Some(NONROOT_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level hardening: read-only root, no privilege escalation, every
/// capability dropped.
pub fn hardened_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The resources a spec asks for, or the component's defaults.
pub fn resources_or(
    given: &Option<ResourceRequirements>,
    cpu: &str,
    memory: &str,
) -> ResourceRequirements {
    given.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        ..ResourceRequirements::default()
    })
}

/// A read-only volume from a Secret, with owner-only file modes.
pub fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A control-plane pod: hardened (non-root, seccomp, no service-account
/// token, no service links), with its containers and volumes, placed.
pub fn control_plane_pod(
    containers: Vec<Container>,
    volumes: Vec<Volume>,
    placement: &nestor_crds::Placement,
) -> PodSpec {
    placed(
        PodSpec {
            containers,
            volumes: Some(volumes),
            security_context: Some(hardened_pod_security_context()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(30),
            ..PodSpec::default()
        },
        placement,
    )
}

/// `pod` with `placement`'s fields set.
pub fn placed(mut pod: PodSpec, placement: &nestor_crds::Placement) -> PodSpec {
    crate::model::placement::apply(&mut pod, placement);
    pod
}

/// An environment variable from the pod's own fields (downward API), such
/// as `metadata.name` or `status.podIP`.
pub fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A volume from a ConfigMap.
pub fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A read-only mount.
pub fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// An HTTP(S) GET probe.
pub fn http_probe(
    path: &str,
    port: i32,
    https: bool,
    period: i32,
    failure_threshold: i32,
) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some(if https { "HTTPS" } else { "HTTP" }.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// Command-line flags from Nestor's own settings and the user's extra
/// arguments, as `--name=value`, sorted by name so the result is stable.
/// Callers validate first that `extra` overrides no managed flag.
pub fn render_flags(
    managed: BTreeMap<&str, String>,
    extra: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut all: BTreeMap<String, String> = managed
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (k, v) in extra {
        all.entry(k.clone()).or_insert_with(|| v.clone());
    }
    all.into_iter().map(|(k, v)| format!("--{k}={v}")).collect()
}

/// Asserts that every `--flag` of `deployment`'s first container is in
/// `managed`, the list validation refuses in `extraArgs`.
#[cfg(test)]
pub fn assert_flags_managed(deployment: &k8s_openapi::api::apps::v1::Deployment, managed: &[&str]) {
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let command = pod
        .and_then(|p| p.containers[0].command.clone())
        .unwrap_or_default();
    let names: Vec<&str> = crate::model::flags::names(&command).collect();
    assert!(names.len() > 3, "{command:?}");
    for name in names {
        assert!(
            managed.contains(&name),
            "--{name} is set by Nestor but not refused in extraArgs"
        );
    }
}

/// A Job of the cluster's `component` named `name` that runs `pod` once
/// (its pods are never restarted in place), with the limits set in
/// `limits` (backoff, deadline, time to live).
pub fn cluster_job(
    inputs: &crate::model::inputs::ClusterInputs,
    name: String,
    component: crate::model::names::Component,
    mut pod: PodSpec,
    limits: k8s_openapi::api::batch::v1::JobSpec,
) -> k8s_openapi::api::batch::v1::Job {
    use crate::model::names::{cluster_child_meta, component_labels};
    pod.restart_policy = Some("Never".into());
    k8s_openapi::api::batch::v1::Job {
        metadata: cluster_child_meta(inputs.vc, name, component),
        spec: Some(k8s_openapi::api::batch::v1::JobSpec {
            template: k8s_openapi::api::core::v1::PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(component_labels(&inputs.names.cluster, component)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..limits
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_sorted_and_managed_ones_win() {
        let managed = BTreeMap::from([("b", "1".to_string()), ("a", "2".to_string())]);
        let extra = BTreeMap::from([
            ("c".to_string(), "3".to_string()),
            ("a".to_string(), "9".to_string()),
        ]);
        assert_eq!(
            render_flags(managed, &extra),
            vec!["--a=2", "--b=1", "--c=3"]
        );
    }
}
