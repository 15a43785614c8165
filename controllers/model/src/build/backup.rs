//! The Job of one backup. Its pod takes a snapshot through etcd's snapshot
//! API with etcdctl (in the etcd image), then runs `nestor-backup backup`
//! in the operator's image, which also carries upstream `etcdutl`: it
//! checks the snapshot, writes it, the cluster's encryption keys (the
//! snapshot's Secrets are encrypted with them) and its record to the
//! destination,
//! reads it back, deletes what retention drops and reports in its
//! termination message ([`crate::model::backup::Report`]). The pod holds
//! no Kubernetes credential; only the snapshot container holds etcd's
//! client certificate.

use crate::build::etcd::CLIENT_PORT;
use crate::build::podspec::{
    cluster_job, control_plane_pod, hardened_container_security_context, read_only_mount,
    secret_volume,
};
use crate::model::backup::{SNAPSHOT_CONTAINER, Start, UPLOAD_CONTAINER};
use crate::model::inputs::ClusterInputs;
use crate::model::names::Component;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    SecretKeySelector, Volume, VolumeMount,
};
use nestor_crds::{BackupSpec, S3Destination};

/// Where the operator's image holds the backup tool and `etcdutl`.
pub const BACKUP_TOOL: &str = "/nestor-backup";
pub const ETCDUTL: &str = "/etcdutl";
const WORK_DIR: &str = "/work";
const PKI_DIR: &str = "/etc/etcd/pki";
const DESTINATION_DIR: &str = "/destination";
const CA_DIR: &str = "/etc/nestor/backup-ca";
const KEYS_DIR: &str = "/etc/nestor/encryption";
/// The keys of a backup's credentials Secret.
pub const ACCESS_KEY_ID: &str = "access-key-id";
pub const SECRET_ACCESS_KEY: &str = "secret-access-key";
/// The key of a backup's CA Secret.
pub const CA_KEY: &str = "ca.crt";
/// The variables the uploader reads the S3 credentials from.
pub const ACCESS_KEY_ID_ENV: &str = "NESTOR_S3_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY_ENV: &str = "NESTOR_S3_SECRET_ACCESS_KEY";
/// How long a backup may take before its Job fails.
pub const DEADLINE_SECONDS: i64 = 900;

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The uploader's flags for an S3 destination.
fn s3_args(s3: &S3Destination) -> Vec<String> {
    let mut args = vec![
        format!("--s3-endpoint={}", s3.endpoint),
        format!("--s3-bucket={}", s3.bucket),
        format!("--s3-prefix={}", s3.prefix),
        format!("--s3-region={}", s3.region),
    ];
    if s3.ca_secret.is_some() {
        args.push(format!("--s3-ca={CA_DIR}/{CA_KEY}"));
    }
    args
}

/// The Job of the backup `start` of the cluster, to `backup`'s
/// destination.
pub fn desired_backup_job(inputs: &ClusterInputs, backup: &BackupSpec, start: &Start) -> Job {
    let names = &inputs.names;
    let endpoint = format!("https://{}:{CLIENT_PORT}", names.etcd_client_host());
    let snapshot = format!("{WORK_DIR}/snapshot.db");
    let etcdctl = Container {
        name: SNAPSHOT_CONTAINER.into(),
        image: Some(inputs.images.etcd.clone()),
        command: Some(vec![
            "etcdctl".into(),
            format!("--endpoints={endpoint}"),
            format!("--cacert={PKI_DIR}/ca.crt"),
            format!("--cert={PKI_DIR}/server.crt"),
            format!("--key={PKI_DIR}/server.key"),
            "snapshot".into(),
            "save".into(),
            snapshot.clone(),
        ]),
        volume_mounts: Some(vec![
            read_only_mount("pki", PKI_DIR),
            mount("work", WORK_DIR),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    let mut args = vec![
        BACKUP_TOOL.into(),
        "backup".into(),
        format!("--etcdutl={ETCDUTL}"),
        format!("--snapshot={snapshot}"),
        format!("--name={}", start.name),
        format!("--path={}/{}", names.namespace, names.cluster),
        format!("--retention={}", backup.retention),
        format!("--keys={KEYS_DIR}"),
    ];
    let mut mounts = vec![mount("work", WORK_DIR), read_only_mount("keys", KEYS_DIR)];
    let mut volumes = vec![
        empty_dir("work"),
        secret_volume("keys", &names.encryption_secret()),
        secret_volume("pki", &names.etcd_certs_secret()),
    ];
    let mut env = Vec::new();
    if let Some(volume) = &backup.destination.volume {
        args.push(format!("--volume={DESTINATION_DIR}"));
        args.push(format!("--volume-claim={}", volume.claim_name));
        mounts.push(mount("destination", DESTINATION_DIR));
        volumes.push(Volume {
            name: "destination".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: volume.claim_name.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
    }
    if let Some(s3) = &backup.destination.s3 {
        args.extend(s3_args(s3));
        env.push(secret_env(
            ACCESS_KEY_ID_ENV,
            &s3.credentials_secret,
            ACCESS_KEY_ID,
        ));
        env.push(secret_env(
            SECRET_ACCESS_KEY_ENV,
            &s3.credentials_secret,
            SECRET_ACCESS_KEY,
        ));
        if let Some(ca) = &s3.ca_secret {
            mounts.push(read_only_mount("ca", CA_DIR));
            volumes.push(secret_volume("ca", ca));
        }
    }
    let upload = Container {
        name: UPLOAD_CONTAINER.into(),
        image: Some(inputs.guard_image.clone()),
        command: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    };
    let mut pod = control_plane_pod(vec![upload], volumes, &inputs.placement);
    pod.init_containers = Some(vec![etcdctl]);
    let limits = JobSpec {
        // A failure is reported and the next slot tries again.
        backoff_limit: Some(0),
        active_deadline_seconds: Some(DEADLINE_SECONDS),
        ..JobSpec::default()
    };
    cluster_job(
        inputs,
        start.job.clone(),
        Component::EtcdBackup,
        pod,
        limits,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    fn start() -> Start {
        let at = "2026-12-05T06:00:00Z".parse().unwrap();
        Start {
            job: crate::model::backup::job_name("demo", at),
            at,
            name: crate::model::backup::backup_name(at),
        }
    }

    #[test]
    fn a_backup_job_snapshots_with_etcdctl_and_uploads_with_no_kubernetes_credential() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let backup: BackupSpec = serde_json::from_value(json!({
            "schedule": "0 */6 * * *", "retention": 3,
            "destination": {"s3": {"endpoint": "https://s3.internal:9000", "bucket": "tenant-backups",
                "prefix": "p/", "credentialsSecret": "s3-creds", "caSecret": "s3-ca"}}
        }))
        .unwrap();
        let job = desired_backup_job(&inputs, &backup, &start());
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("demo-backup-20261205060000")
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let inits = pod.init_containers.unwrap();
        assert_eq!(inits.len(), 1);
        let snapshot = inits[0].command.clone().unwrap().join(" ");
        assert!(
            snapshot.starts_with("etcdctl --endpoints=https://demo-etcd.tenants.svc:2379"),
            "{snapshot}"
        );
        assert!(
            snapshot.ends_with("snapshot save /work/snapshot.db"),
            "{snapshot}"
        );
        let upload = &pod.containers[0];
        assert_eq!(upload.image, Some(inputs.guard_image.clone()));
        assert_eq!(
            upload.command.clone().unwrap(),
            [
                "/nestor-backup",
                "backup",
                "--etcdutl=/etcdutl",
                "--snapshot=/work/snapshot.db",
                "--name=20261205T060000Z",
                "--path=tenants/demo",
                "--retention=3",
                "--keys=/etc/nestor/encryption",
                "--s3-endpoint=https://s3.internal:9000",
                "--s3-bucket=tenant-backups",
                "--s3-prefix=p/",
                "--s3-region=us-east-1",
                "--s3-ca=/etc/nestor/backup-ca/ca.crt"
            ]
        );
        // Only the snapshot container holds etcd's certificate.
        let mounts = |c: &Container| -> Vec<String> {
            c.volume_mounts
                .iter()
                .flatten()
                .map(|m| m.name.clone())
                .collect()
        };
        assert!(mounts(&inits[0]).contains(&"pki".to_string()));
        assert!(!mounts(upload).contains(&"pki".to_string()));
        let env = upload.env.clone().unwrap();
        let secret = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.clone())
                .and_then(|v| v.secret_key_ref)
                .map(|r| (r.name, r.key))
        };
        assert_eq!(
            secret(ACCESS_KEY_ID_ENV),
            Some(("s3-creds".into(), ACCESS_KEY_ID.into()))
        );
        assert_eq!(
            secret(SECRET_ACCESS_KEY_ENV),
            Some(("s3-creds".into(), SECRET_ACCESS_KEY.into()))
        );
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "etcd-backup");
    }

    #[test]
    fn a_volume_destination_is_mounted_and_named() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let backup: BackupSpec = serde_json::from_value(
            json!({"destination": {"volume": {"claimName": "tenant-backups"}}}),
        )
        .unwrap();
        let job = desired_backup_job(&inputs, &backup, &start());
        let pod = job.spec.unwrap().template.spec.unwrap();
        let command = pod.containers[0].command.clone().unwrap().join(" ");
        assert!(
            command.ends_with(
                "--retention=7 --keys=/etc/nestor/encryption --volume=/destination --volume-claim=tenant-backups"
            ),
            "{command}"
        );
        let claim = pod
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .unwrap();
        assert_eq!(claim.claim_name, "tenant-backups");
        assert_eq!(pod.containers[0].env, Some(vec![]));
    }
}
