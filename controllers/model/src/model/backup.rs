//! Backups of a cluster's etcd, decided from what the backup Jobs report:
//! when the next one starts, which finished Jobs go, what the status lists
//! and how the `BackupSucceeded` condition reads. Pure: the clock comes in
//! as `now`.
//!
//! Each backup is one Job named after the time it stands for (its
//! schedule slot, or the time an on-demand backup was asked for), so a
//! Job's name says which slots it covers. The newest finished Job stays
//! until a newer one finishes: the condition is read from it every pass.

use crate::model::validate::{latest_slot, parse_schedule};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use nestor_crds::{BackupRecord, BackupSpec};

/// The condition every cluster with `spec.backup` has.
pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";

/// The annotation the operator writes on a finished backup Job: its
/// [`Report`], read once from the Job's pod.
pub const REPORT_ANNOTATION: &str = "nestor.dev/backup-report";

/// The containers of a backup Job's pod (see `build::backup`).
pub const SNAPSHOT_CONTAINER: &str = "snapshot";
pub const UPLOAD_CONTAINER: &str = "upload";

/// The longest part of a container's own message a report keeps.
const MESSAGE_LIMIT: usize = 400;

/// Why a backup failed, as the uploader reports it (its termination
/// message), or as the operator finds it before a Job starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// etcdctl could not take the snapshot (etcd unreachable or failing).
    SnapshotFailed,
    /// The snapshot did not verify (its integrity hash, or a read-back
    /// that differs from what was written).
    VerificationFailed,
    /// The endpoint refused the credentials.
    AccessDenied,
    /// The bucket does not exist.
    BucketNotFound,
    /// The endpoint did not answer, or its certificate did not verify.
    EndpointUnreachable,
    /// The volume is full.
    VolumeFull,
    /// A Secret or claim the backup names is missing or not labelled
    /// `nestor.dev/backup: "true"`.
    DestinationNotAllowed,
    /// The credentials Secret lacks `access-key-id` or
    /// `secret-access-key`, or the CA Secret lacks `ca.crt`.
    CredentialsMissing,
    /// The Job ended without a report (deadline, eviction, another error).
    BackupFailed,
}

impl FailureReason {
    pub const ALL: [FailureReason; 9] = [
        Self::SnapshotFailed,
        Self::VerificationFailed,
        Self::AccessDenied,
        Self::BucketNotFound,
        Self::EndpointUnreachable,
        Self::VolumeFull,
        Self::DestinationNotAllowed,
        Self::CredentialsMissing,
        Self::BackupFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SnapshotFailed => "SnapshotFailed",
            Self::VerificationFailed => "VerificationFailed",
            Self::AccessDenied => "AccessDenied",
            Self::BucketNotFound => "BucketNotFound",
            Self::EndpointUnreachable => "EndpointUnreachable",
            Self::VolumeFull => "VolumeFull",
            Self::DestinationNotAllowed => "DestinationNotAllowed",
            Self::CredentialsMissing => "CredentialsMissing",
            Self::BackupFailed => "BackupFailed",
        }
    }

    /// The reason named `text`; an unknown one is [`Self::BackupFailed`].
    pub fn parse(text: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .unwrap_or(Self::BackupFailed)
    }
}

/// What the uploader reports when it ends (its container's termination
/// message, JSON): a verified backup and the names left at the
/// destination after retention, or why it failed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum Report {
    Succeeded {
        record: BackupRecord,
        /// The cluster's backups at the destination, newest first.
        kept: Vec<String>,
    },
    Failed {
        reason: String,
        message: String,
    },
}

/// How a finished backup Job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        record: BackupRecord,
        kept: Vec<String>,
    },
    Failed {
        reason: FailureReason,
        message: String,
    },
}

impl From<Outcome> for Report {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded { record, kept } => Report::Succeeded { record, kept },
            Outcome::Failed { reason, message } => Report::Failed {
                reason: reason.as_str().to_string(),
                message,
            },
        }
    }
}

/// How a finished backup Job ended, from its pod (`None` once the pod is
/// gone) and the Job's own `Failed` condition (reason, message): the
/// uploader's report when it wrote one, else the snapshot container's
/// failure, else the Job's.
pub fn outcome_of_pod(
    pod: Option<&k8s_openapi::api::core::v1::PodStatus>,
    job_failure: Option<(&str, &str)>,
) -> Outcome {
    let terminated = |statuses: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                      name: &str| {
        statuses?
            .iter()
            .find(|c| c.name == name)?
            .state
            .as_ref()?
            .terminated
            .clone()
    };
    let upload = pod.and_then(|p| terminated(p.container_statuses.as_ref(), UPLOAD_CONTAINER));
    if let Some(report) = upload
        .as_ref()
        .and_then(|t| t.message.as_deref())
        .and_then(|m| serde_json::from_str::<Report>(m.trim()).ok())
    {
        return report.into();
    }
    let snapshot = pod
        .and_then(|p| terminated(p.init_container_statuses.as_ref(), SNAPSHOT_CONTAINER))
        .filter(|t| t.exit_code != 0);
    if let Some(t) = snapshot {
        let said = t.message.as_deref().unwrap_or_default().trim();
        return Outcome::Failed {
            reason: FailureReason::SnapshotFailed,
            message: format!(
                "etcdctl could not take a snapshot (exit code {}): {}",
                t.exit_code,
                clip(said)
            ),
        };
    }
    let message = match (job_failure, upload) {
        (_, Some(t)) => format!(
            "the uploader ended with exit code {} and no report",
            t.exit_code
        ),
        (Some((reason, message)), None) => format!("the Job failed ({reason}): {}", clip(message)),
        (None, None) => "the Job ended with no pod left to say how".to_string(),
    };
    Outcome::Failed {
        reason: FailureReason::BackupFailed,
        message,
    }
}

/// At most [`MESSAGE_LIMIT`] bytes of `text`, cut at a character.
fn clip(text: &str) -> &str {
    if text.len() <= MESSAGE_LIMIT {
        return text;
    }
    let mut end = MESSAGE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl From<Report> for Outcome {
    fn from(report: Report) -> Self {
        match report {
            Report::Succeeded { record, kept } => Outcome::Succeeded { record, kept },
            Report::Failed { reason, message } => Outcome::Failed {
                reason: FailureReason::parse(&reason),
                message,
            },
        }
    }
}

/// A backup Job of the cluster, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupJob {
    pub name: String,
    /// `None` while it runs.
    pub outcome: Option<Outcome>,
}

/// The Job of a backup that stands for `at`: `<cluster>-backup-<UTC time
/// to the second>` (at most 40 + 8 + 14 characters).
pub fn job_name(cluster: &str, at: Timestamp) -> String {
    format!(
        "{cluster}-backup-{}",
        at.to_zoned(TimeZone::UTC).strftime("%Y%m%d%H%M%S")
    )
}

/// The backup's name, from the time it stands for: `YYYYMMDDTHHMMSSZ`.
pub fn backup_name(at: Timestamp) -> String {
    at.to_zoned(TimeZone::UTC)
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// The time a backup Job of `cluster` stands for, from its name.
fn job_time(cluster: &str, job: &str) -> Option<Timestamp> {
    let stamp = job.strip_prefix(cluster)?.strip_prefix("-backup-")?;
    if stamp.len() != 14 || !stamp.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[8..10],
        &stamp[10..12],
        &stamp[12..]
    );
    text.parse().ok()
}

/// A backup to start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub job: String,
    /// The time it stands for, and the backup's name.
    pub at: Timestamp,
    pub name: String,
}

/// What the backup stage observed, for the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackupObserved {
    /// The pass did not look (a refused or deleted cluster): the status
    /// keeps what it says.
    #[default]
    NotLooked,
    /// The cluster has no `spec.backup`.
    Off,
    On {
        /// The backups at the destination, newest first.
        records: Vec<BackupRecord>,
        /// The annotation value served last.
        request: Option<String>,
        /// How the newest finished backup ended.
        last: Option<Outcome>,
        /// When the next scheduled backup is due.
        next: Option<Timestamp>,
    },
}

/// What the backup stage does in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPlan {
    pub start: Option<Start>,
    /// Finished Jobs older than the newest finished one.
    pub delete: Vec<String>,
    pub observed: BackupObserved,
}

/// The facts a plan is made from.
#[derive(Clone, Debug)]
pub struct BackupFacts<'a> {
    pub cluster: &'a str,
    pub spec: &'a BackupSpec,
    /// When the cluster was created: no slot before it is made up.
    pub created: Timestamp,
    /// The value of `nestor.dev/backup-now`, if set.
    pub asked: Option<&'a str>,
    /// `status.backups` and `status.backupRequest` before this pass.
    pub records: &'a [BackupRecord],
    pub served: Option<&'a str>,
    pub jobs: &'a [BackupJob],
    /// etcd serves: a snapshot can be taken.
    pub etcd_ready: bool,
    pub now: Timestamp,
}

/// Decides the pass: at most one backup Job runs at a time; a new value
/// of the annotation starts one at once, and a schedule slot not yet
/// covered by a Job standing for it or later starts one.
pub fn plan(facts: &BackupFacts) -> BackupPlan {
    let mut jobs: Vec<(&BackupJob, Timestamp)> = facts
        .jobs
        .iter()
        .filter_map(|j| job_time(facts.cluster, &j.name).map(|at| (j, at)))
        .collect();
    jobs.sort_by_key(|(j, at)| (*at, j.name.clone()));
    let newest_finished = jobs.iter().rev().find(|(j, _)| j.outcome.is_some());
    let last = newest_finished.and_then(|(j, _)| j.outcome.clone());
    let delete = jobs
        .iter()
        .filter(|(j, _)| j.outcome.is_some())
        .filter(|(j, _)| Some(&j.name) != newest_finished.map(|(n, _)| &n.name))
        .map(|(j, _)| j.name.clone())
        .collect();
    let records = match &last {
        Some(Outcome::Succeeded { record, kept }) => {
            let mut all: Vec<BackupRecord> = facts.records.to_vec();
            if !all.iter().any(|r| r.name == record.name) {
                all.push(record.clone());
            }
            all.retain(|r| kept.contains(&r.name));
            all.sort_by(|a, b| b.name.cmp(&a.name));
            all
        }
        _ => facts.records.to_vec(),
    };
    let schedule = facts
        .spec
        .schedule
        .as_deref()
        .and_then(|s| parse_schedule(s).ok());
    let running = jobs.iter().any(|(j, _)| j.outcome.is_none());
    let newest = jobs.last().map(|(_, at)| *at);
    let new_request = facts.asked.filter(|asked| Some(*asked) != facts.served);
    let due_slot = schedule
        .as_ref()
        .and_then(|s| latest_slot(s, facts.now))
        .filter(|slot| *slot >= facts.created && newest.is_none_or(|n| n < *slot));
    let mut request = facts.served.map(str::to_string);
    let at = match (new_request, due_slot) {
        _ if running || !facts.etcd_ready => None,
        (Some(asked), _) => {
            request = Some(asked.to_string());
            // To the second, never before the newest Job.
            Some(facts.now.max(newest.map_or(facts.now, |n| {
                n + k8s_openapi::jiff::SignedDuration::from_secs(1)
            })))
        }
        (None, Some(slot)) => Some(slot),
        (None, None) => None,
    };
    let start = at.map(|at| Start {
        job: job_name(facts.cluster, at),
        at,
        name: backup_name(at),
    });
    let next = schedule
        .as_ref()
        .and_then(|s| crate::model::validate::next_slot(s, facts.now));
    BackupPlan {
        start,
        delete,
        observed: BackupObserved::On {
            records,
            request,
            last,
            next,
        },
    }
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
