//! The etcd snapshot taken before a version change: a Job that runs
//! etcdctl (upstream's etcd image carries it) against the cluster's etcd
//! through etcd's snapshot API, and writes the snapshot onto a volume of
//! the cluster, which goes with the cluster.

use crate::build::etcd::CLIENT_PORT;
use crate::build::podspec::{
    cluster_job, control_plane_pod, hardened_container_security_context, read_only_mount,
    secret_volume,
};
use crate::model::hash::inputs_hash;
use crate::model::inputs::ClusterInputs;
use crate::model::names::{Component, cluster_child_meta};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use nestor_crds::UpgradeStatus;
use std::collections::BTreeMap;

const PKI_DIR: &str = "/etc/etcd/pki";
const SNAPSHOT_DIR: &str = "/snapshots";
/// Attempts of a snapshot Job before it counts as failed.
pub const BACKOFF_LIMIT: i32 = 2;

/// The volume the snapshots are kept on: as large as an etcd member's, of
/// the same class.
pub fn desired_snapshot_claim(inputs: &ClusterInputs) -> PersistentVolumeClaim {
    let etcd = &inputs.vc.spec.etcd;
    PersistentVolumeClaim {
        metadata: cluster_child_meta(
            inputs.vc,
            inputs.names.etcd_snapshots(),
            Component::EtcdSnapshot,
        ),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: etcd.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(etcd.storage.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The snapshot's file: one per cluster, each change's replacing the last
/// (etcdctl writes a new file and renames it over the old one only once
/// it is complete), so the volume never fills up with them.
pub const SNAPSHOT_FILE: &str = "etcd-snapshot.db";

/// The Job's name: one per change (at most 40 + 23 characters).
pub fn snapshot_job_name(inputs: &ClusterInputs, record: &UpgradeStatus) -> String {
    let started = record.started_at.0.as_second().to_string();
    let id = inputs_hash([record.target.as_str(), &started]);
    format!("{}-etcd-snapshot-{}", inputs.names.cluster, &id[..8])
}

/// Where the snapshot is reported: `<claim>/<file>`.
pub fn snapshot_location(inputs: &ClusterInputs) -> String {
    format!("{}/{SNAPSHOT_FILE}", inputs.names.etcd_snapshots())
}

/// The Job that takes the snapshot, with the image of the etcd that runs
/// (`inputs` are those of the version the cluster runs). It authenticates
/// with the members' own certificate, whose usage includes client auth.
pub fn desired_snapshot_job(inputs: &ClusterInputs, record: &UpgradeStatus) -> Job {
    let names = &inputs.names;
    let endpoint = format!("https://{}:{CLIENT_PORT}", names.etcd_client_host());
    let container = Container {
        name: "etcdctl".into(),
        image: Some(inputs.images.etcd.clone()),
        command: Some(vec![
            "etcdctl".into(),
            format!("--endpoints={endpoint}"),
            format!("--cacert={PKI_DIR}/ca.crt"),
            format!("--cert={PKI_DIR}/server.crt"),
            format!("--key={PKI_DIR}/server.key"),
            "snapshot".into(),
            "save".into(),
            format!("{SNAPSHOT_DIR}/{SNAPSHOT_FILE}"),
        ]),
        volume_mounts: Some(vec![
            read_only_mount("pki", PKI_DIR),
            VolumeMount {
                name: "snapshots".into(),
                mount_path: SNAPSHOT_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    let pod = control_plane_pod(
        vec![container],
        vec![
            secret_volume("pki", &names.etcd_certs_secret()),
            Volume {
                name: "snapshots".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: names.etcd_snapshots(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            },
        ],
        &inputs.placement,
    );
    let limits = JobSpec {
        backoff_limit: Some(BACKOFF_LIMIT),
        active_deadline_seconds: Some(300),
        // The status keeps where the snapshot is; the Job itself may go.
        ttl_seconds_after_finished: Some(86_400),
        ..JobSpec::default()
    };
    let name = snapshot_job_name(inputs, record);
    cluster_job(inputs, name, Component::EtcdSnapshot, pod, limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use nestor_crds::UpgradeStep;
    use serde_json::json;

    fn record() -> UpgradeStatus {
        UpgradeStatus {
            from: "1.34.5".into(),
            from_images: Default::default(),
            to: "1.35.4".into(),
            target: "abc".into(),
            step: UpgradeStep::Snapshot,
            started_at: Time("2026-01-01T00:00:00Z".parse().unwrap()),
            api_server_started_at: None,
            snapshot: None,
            message: None,
        }
    }

    #[test]
    fn the_snapshot_job_saves_through_etcds_api_onto_the_clusters_volume() {
        let vc = fixtures::vc(json!({"etcd": {"storage": "2Gi"}}));
        let inputs = fixtures::inputs(&vc);
        let job = desired_snapshot_job(&inputs, &record());
        let name = job.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("demo-etcd-snapshot-") && name.len() <= 63,
            "{name}"
        );
        let pod = job.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let command = pod.containers[0].command.clone().unwrap().join(" ");
        assert!(
            command.starts_with("etcdctl --endpoints=https://demo-etcd.tenants.svc:2379"),
            "{command}"
        );
        assert!(
            command.ends_with("snapshot save /snapshots/etcd-snapshot.db"),
            "{command}"
        );
        assert_eq!(pod.containers[0].image, Some(inputs.images.etcd.clone()));
        let mut later = record();
        later.started_at = Time("2026-02-01T00:00:00Z".parse().unwrap());
        assert_ne!(
            snapshot_job_name(&inputs, &later),
            name,
            "each change has a Job of its own"
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "etcd-snapshot");
        let claim = desired_snapshot_claim(&inputs);
        assert_eq!(claim.metadata.name.as_deref(), Some("demo-etcd-snapshots"));
        assert_eq!(
            claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"],
            Quantity("2Gi".into())
        );
        assert_eq!(
            snapshot_location(&inputs),
            "demo-etcd-snapshots/etcd-snapshot.db"
        );
    }
}
