//! Backups of a `VirtualCluster`'s etcd: where they go, when, how many are
//! kept, and what the status records of each (docs/backup.md).

use crate::common::DNS_SUBDOMAIN_PATTERN;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The annotation that asks for a backup now: each new value (any text of
/// up to 63 characters, such as a date) gives one backup.
pub const BACKUP_NOW_ANNOTATION: &str = "nestor.dev/backup-now";

/// The label every Secret and PersistentVolumeClaim a backup names must
/// carry, with the value `"true"`: whoever may label them (the platform)
/// decides which may hold or reach backups, not whoever may edit the
/// cluster.
pub const BACKUP_LABEL: &str = "nestor.dev/backup";

/// Scheduled and on-demand etcd snapshots of the nested cluster, each
/// verified after it is written and listed in `status.backups`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When backups run: a cron schedule of five fields (minute, hour,
    /// day of month, month, day of week) in UTC, such as `0 */6 * * *`.
    /// Unset: backups run only on demand (the annotation
    /// `nestor.dev/backup-now`). A slot missed while the operator was down
    /// is made up once, not once per slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 100))]
    pub schedule: Option<String>,
    /// How many backups are kept at the destination (1 to 100); the oldest
    /// are deleted once a newer one is verified.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 100))]
    pub retention: i32,
    /// Where backups are written: exactly one of `volume` and `s3`.
    pub destination: BackupDestination,
}

fn default_retention() -> i32 {
    7
}

/// Where backups are written. Backups of a cluster go under
/// `<namespace>/<cluster>/` (after the S3 prefix), one `.db` snapshot and
/// one `.json` record each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.volume) != has(self.s3)").message("backup destination must name exactly one of volume and s3"))]
pub struct BackupDestination {
    /// A PersistentVolumeClaim in the cluster's namespace, labelled
    /// `nestor.dev/backup: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
    /// An S3-compatible bucket at an endpoint the platform allows (the Helm
    /// value `backup.allowedEndpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// A PersistentVolumeClaim that holds backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    /// The claim's name, in the cluster's namespace. It must carry the
    /// label `nestor.dev/backup: "true"`.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub claim_name: String,
}

/// An S3-compatible bucket that holds backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// The endpoint's URL, such as `https://s3.example.com:9000`: one of
    /// the platform's (the Helm value `backup.allowedEndpoints`), written
    /// exactly as listed there. Requests use path-style addressing.
    #[schemars(length(min = 8, max = 256))]
    pub endpoint: String,
    /// The bucket, which must exist.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// A key prefix inside the bucket, such as `backups/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub prefix: String,
    /// The region the requests are signed for.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// A Secret in the cluster's namespace, labelled
    /// `nestor.dev/backup: "true"`, with the keys `access-key-id` and
    /// `secret-access-key`.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub credentials_secret: String,
    /// A Secret in the cluster's namespace, labelled
    /// `nestor.dev/backup: "true"`, whose key `ca.crt` holds the CA
    /// certificates an `https` endpoint is verified with, in place of the
    /// system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub ca_secret: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A backup at its destination, verified after it was written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The backup's name, unique in the cluster: the UTC time it was
    /// taken, as `YYYYMMDDTHHMMSSZ`.
    pub name: String,
    /// When the snapshot was taken.
    pub time: Time,
    /// The snapshot's size in bytes.
    pub size_bytes: i64,
    /// The SHA-256 of the snapshot, hex.
    pub sha256: String,
    /// The etcd revision the snapshot holds.
    pub revision: i64,
    /// Where it is: `s3://<bucket>/<key>` or `volume://<claim>/<path>`.
    pub location: String,
}
