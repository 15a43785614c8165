//! A pool's node pods: the StatefulSet and the headless Service that names
//! them.

use crate::build::podspec::{
    config_map_volume, field_env, http_probe, placed, resources_or, secret_volume,
};
use crate::model::hash::desired_hash;
use crate::model::names::{
    ClusterNames, POOL_LABEL, PoolNames, pool_child_meta, pool_labels, pool_selector_labels,
};
use crate::model::nodes::NODE_TEMPLATE;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, SecurityContext,
    Service, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube_core::ResourceExt;
use nestor_crds::node_contract as contract;
use nestor_crds::{NodePool, Placement, VirtualCluster};
use std::collections::BTreeMap;

/// The size of a node pod's `/run` (in memory: containerd's and runc's
/// state, sockets, network namespaces).
const RUN_SIZE: &str = "256Mi";

/// The headless Service that gives node pods stable names.
pub fn desired_node_service(pool: &NodePool) -> Service {
    Service {
        metadata: pool_child_meta(pool, PoolNames::new(pool).service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(pool_selector_labels(pool)),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn node_labels_flag(pool: &NodePool) -> String {
    let mut labels = pool.spec.labels.clone();
    labels.insert(POOL_LABEL.into(), pool.name_any());
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The node pods' template. Node pods are privileged (containerd and the
/// kubelet need it) and say so in an annotation; they use neither the host's
/// network, PID namespace nor paths.
pub fn desired_node_template(
    pool: &NodePool,
    vc: &VirtualCluster,
    image: &str,
    config_hash: &str,
    placement: &Placement,
    limits: &BTreeMap<String, Quantity>,
) -> PodTemplateSpec {
    let pn = PoolNames::new(pool);
    let names = ClusterNames::new(vc);
    // The node pod's volumes are bounded by its ephemeral-storage limit
    // (the kubelet counts them with its container), `/run` (in memory) by
    // its own size.
    let empty = |name: &str, memory: bool| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_string()),
            size_limit: memory.then(|| Quantity(RUN_SIZE.into())),
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let config_dir = |dir: &str| format!("{}/{dir}", contract::CONFIG_DIR);
    // The node's own daemons (kubelet, containerd, kube-proxy); a pool
    // whose workloads need more says so in `resources`.
    // The platform's limits hold where the pool sets none (validation
    // keeps what it sets below them).
    let mut resources = resources_or(&pool.spec.resources, "100m", "256Mi");
    let given = resources.limits.get_or_insert_with(BTreeMap::new);
    for (name, limit) in limits {
        given.entry(name.clone()).or_insert_with(|| limit.clone());
    }
    let container = Container {
        name: "node".into(),
        image: Some(image.into()),
        command: Some(vec!["/usr/local/bin/nestor-node".into()]),
        args: Some(vec![
            format!("--node-labels={}", node_labels_flag(pool)),
            format!("--cluster-cidr={}", vc.spec.networking.pod_cidr),
            format!("--service-cidr={}", vc.spec.networking.service_cidr),
            format!(
                "--konnectivity-server={}",
                crate::build::konnectivity::agent_endpoint(&names)
            ),
        ]),
        env: Some(vec![
            field_env(contract::NODE_NAME_ENV, "metadata.name"),
            field_env(contract::POD_IP_ENV, "status.podIP"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("kubelet".into()),
                container_port: contract::KUBELET_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("healthz".into()),
                container_port: contract::KUBELET_HEALTHZ_PORT,
                ..Default::default()
            },
        ]),
        volume_mounts: Some(vec![
            mount("bootstrap", &config_dir(contract::BOOTSTRAP_DIR), true),
            mount("node-config", &config_dir(contract::NODE_CONFIG_DIR), true),
            mount("kube-proxy", &config_dir(contract::KUBE_PROXY_DIR), true),
            mount("containerd", "/var/lib/containerd", false),
            mount("kubelet", "/var/lib/kubelet", false),
            mount("run", "/run", false),
            mount("log", "/var/log", false),
        ]),
        readiness_probe: Some(http_probe(
            "/healthz",
            contract::KUBELET_HEALTHZ_PORT,
            false,
            5,
            3,
        )),
        liveness_probe: Some(http_probe(
            "/healthz",
            contract::KUBELET_HEALTHZ_PORT,
            false,
            20,
            6,
        )),
        startup_probe: Some(http_probe(
            "/healthz",
            contract::KUBELET_HEALTHZ_PORT,
            false,
            5,
            120,
        )),
        resources: Some(resources),
        // The one privileged container in Nestor: see docs/security.md.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let selector = pool_selector_labels(pool);
    let mut template_labels = pool_labels(pool);
    template_labels.extend(selector.clone());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(template_labels),
            annotations: Some(BTreeMap::from([
                (
                    "nestor.dev/privileged".to_string(),
                    "node pods run containerd and the kubelet; see docs/security.md".to_string(),
                ),
                (
                    crate::build::node::config::CONFIG_HASH.to_string(),
                    config_hash.to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        }),
        spec: Some(placed(
            PodSpec {
                containers: vec![container],
                volumes: Some(vec![
                    secret_volume("bootstrap", &pn.bootstrap_secret()),
                    config_map_volume("node-config", &pn.config_map()),
                    config_map_volume("kube-proxy", &names.kube_proxy_config()),
                    empty("containerd", false),
                    empty("kubelet", false),
                    empty("run", true),
                    empty("log", false),
                ]),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                host_network: Some(false),
                host_pid: Some(false),
                termination_grace_period_seconds: Some(60),
                ..PodSpec::default()
            },
            placement,
        )),
    }
}

/// The hash of a node pod template, as its StatefulSet carries it.
pub fn node_template_hash(template: &PodTemplateSpec) -> String {
    desired_hash(template)
}

/// The node StatefulSet of `template`: its pods are replaced through the
/// partition (model::nodes::node_rollout).
pub fn desired_node_statefulset(
    pool: &NodePool,
    template: PodTemplateSpec,
    replicas: i32,
    partition: i32,
) -> StatefulSet {
    let pn = PoolNames::new(pool);
    // The template's hash, on the StatefulSet itself (on the template it
    // would be a change of the template): a new one is rolled out one node
    // at a time.
    let mut metadata = pool_child_meta(pool, pn.statefulset());
    metadata.annotations = Some(BTreeMap::from([(
        NODE_TEMPLATE.to_string(),
        node_template_hash(&template),
    )]));
    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(pn.service()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(pool_selector_labels(pool)),
                ..LabelSelector::default()
            },
            template,
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(partition),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures::{self, pool};
    use serde_json::json;

    #[test]
    fn statefulset_runs_privileged_nodes_without_host_namespaces() {
        let vc = fixtures::vc(json!({}));
        let template = desired_node_template(
            &pool(),
            &vc,
            "ghcr.io/nestor-dev/nestor-node:v1.35.4",
            "h",
            &serde_json::from_value(json!({"runtimeClassName": "kata"})).unwrap(),
            &crate::model::settings::default_node_pod_limits(),
        );
        let sts = desired_node_statefulset(&pool(), template, 2, 0);
        assert_eq!(sts.metadata.name.as_deref(), Some("workers-node"));
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].kind,
            "NodePool"
        );
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(pod.host_network, Some(false));
        assert_eq!(pod.host_pid, Some(false));
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.host_path.is_none())
        );
        let c = &pod.containers[0];
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
        assert_eq!(
            c.args.as_ref().unwrap()[0],
            "--node-labels=nestor.dev/node-pool=workers,team=a"
        );
        assert!(c.resources.as_ref().unwrap().requests.is_some());
        // Bounded: the platform's limits, and /run's size in memory.
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"].0, "8Gi");
        assert_eq!(limits["ephemeral-storage"].0, "20Gi");
        let run = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "run")
            .unwrap();
        assert_eq!(
            run.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity("256Mi".into()))
        );
        assert!(
            spec.template
                .metadata
                .unwrap()
                .annotations
                .unwrap()
                .contains_key("nestor.dev/privileged")
        );
    }
}
