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
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use nestor_crds::{BackupDestination, VolumeDestination};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(schedule: Option<&str>) -> BackupSpec {
        BackupSpec {
            schedule: schedule.map(str::to_string),
            retention: 2,
            destination: BackupDestination {
                volume: Some(VolumeDestination {
                    claim_name: "backups".into(),
                }),
                s3: None,
            },
        }
    }

    fn record(name: &str) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            time: Time(at("2026-12-05T06:00:00Z")),
            size_bytes: 20480,
            sha256: "ab".repeat(32),
            revision: 42,
            location: format!("volume://backups/tenants/demo/{name}.db"),
        }
    }

    fn job(time: &str, outcome: Option<Outcome>) -> BackupJob {
        BackupJob {
            name: job_name("demo", at(time)),
            outcome,
        }
    }

    fn facts<'a>(
        spec: &'a BackupSpec,
        jobs: &'a [BackupJob],
        records: &'a [BackupRecord],
        now: &str,
    ) -> BackupFacts<'a> {
        BackupFacts {
            cluster: "demo",
            spec,
            created: at("2026-12-05T05:00:00Z"),
            asked: None,
            records,
            served: None,
            jobs,
            etcd_ready: true,
            now: at(now),
        }
    }

    #[test]
    fn names_carry_the_time_they_stand_for() {
        let t = at("2026-12-05T06:00:07Z");
        let name = job_name("a-forty-character-cluster-name-xxxxxxxxx", t);
        assert_eq!(
            name,
            "a-forty-character-cluster-name-xxxxxxxxx-backup-20261205060007"
        );
        assert!(name.len() <= 63);
        assert_eq!(
            job_time("a-forty-character-cluster-name-xxxxxxxxx", &name),
            Some(t)
        );
        assert_eq!(backup_name(t), "20261205T060007Z");
        assert_eq!(job_time("demo", "demo-backup-2026"), None);
        assert_eq!(job_time("demo", "demo-etcd-snapshot-12345678"), None);
    }

    #[test]
    fn a_slot_not_covered_starts_one_job_and_only_when_etcd_serves() {
        let spec = spec(Some("0 */6 * * *"));
        let plan = plan(&facts(&spec, &[], &[], "2026-12-05T06:00:30Z"));
        let start = plan.start.expect("the 06:00 slot is due");
        assert_eq!(start.job, "demo-backup-20261205060000");
        assert_eq!(start.name, "20261205T060000Z");
        let BackupObserved::On { next, last, .. } = plan.observed else {
            panic!("on")
        };
        assert_eq!(next, Some(at("2026-12-05T12:00:00Z")));
        assert_eq!(last, None);
        // Covered by a Job for the slot, running or finished.
        for outcome in [
            None,
            Some(Outcome::Failed {
                reason: FailureReason::AccessDenied,
                message: "m".into(),
            }),
        ] {
            let jobs = [job("2026-12-05T06:00:00Z", outcome)];
            assert_eq!(plan_start(&spec, &jobs, "2026-12-05T07:00:00Z"), None);
        }
        // A slot before the cluster existed is not made up.
        let mut early = facts(&spec, &[], &[], "2026-12-05T05:30:00Z");
        assert_eq!(super::plan(&early).start, None);
        early.now = at("2026-12-05T06:01:00Z");
        early.etcd_ready = false;
        assert_eq!(super::plan(&early).start, None, "etcd does not serve");
    }

    fn plan_start(spec: &BackupSpec, jobs: &[BackupJob], now: &str) -> Option<String> {
        plan(&facts(spec, jobs, &[], now)).start.map(|s| s.job)
    }

    #[test]
    fn a_new_annotation_value_starts_one_backup_at_once_and_never_two_at_a_time() {
        let spec = spec(None);
        let mut f = facts(&spec, &[], &[], "2026-12-05T06:10:00.5Z");
        assert_eq!(super::plan(&f).start, None, "no schedule, no request");
        f.asked = Some("first");
        let p = super::plan(&f);
        assert_eq!(
            p.start.map(|s| s.job).as_deref(),
            Some("demo-backup-20261205061000")
        );
        let BackupObserved::On { request, .. } = p.observed else {
            panic!("on")
        };
        assert_eq!(request.as_deref(), Some("first"));
        f.served = Some("first");
        assert_eq!(super::plan(&f).start, None, "served already");
        let running = [job("2026-12-05T06:10:00Z", None)];
        f.jobs = &running;
        f.asked = Some("second");
        assert_eq!(super::plan(&f).start, None, "one at a time");
    }

    #[test]
    fn the_newest_finished_job_stays_and_says_what_is_kept() {
        let spec = spec(Some("0 */6 * * *"));
        let kept = vec![
            "20261205T120000Z".to_string(),
            "20261205T060000Z".to_string(),
        ];
        let jobs = [
            job(
                "2026-12-05T06:00:00Z",
                Some(Outcome::Succeeded {
                    record: record("20261205T060000Z"),
                    kept: vec![],
                }),
            ),
            job(
                "2026-12-05T12:00:00Z",
                Some(Outcome::Succeeded {
                    record: record("20261205T120000Z"),
                    kept,
                }),
            ),
        ];
        let before = [record("20261205T060000Z"), record("20261205T000000Z")];
        let p = plan(&facts(&spec, &jobs, &before, "2026-12-05T13:00:00Z"));
        assert_eq!(p.delete, ["demo-backup-20261205060000"]);
        assert_eq!(p.start, None);
        let BackupObserved::On { records, last, .. } = p.observed else {
            panic!("on")
        };
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["20261205T120000Z", "20261205T060000Z"],
            "retention dropped the oldest"
        );
        assert!(matches!(last, Some(Outcome::Succeeded { .. })));
        // A failure keeps the list as it was.
        let failed = [job(
            "2026-12-05T18:00:00Z",
            Some(Outcome::Failed {
                reason: FailureReason::BucketNotFound,
                message: "no bucket".into(),
            }),
        )];
        let p = plan(&facts(&spec, &failed, &before, "2026-12-05T18:05:00Z"));
        let BackupObserved::On { records, .. } = p.observed else {
            panic!("on")
        };
        assert_eq!(records, before);
    }

    #[test]
    fn a_pod_says_how_its_backup_ended() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
        };
        let status = |name: &str, code: i32, message: &str| ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    message: Some(message.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let report = serde_json::to_string(&Report::Failed {
            reason: "BucketNotFound".into(),
            message: "no bucket b".into(),
        })
        .unwrap();
        let pod = PodStatus {
            init_container_statuses: Some(vec![status(SNAPSHOT_CONTAINER, 0, "")]),
            container_statuses: Some(vec![status(UPLOAD_CONTAINER, 1, &report)]),
            ..Default::default()
        };
        assert_eq!(
            outcome_of_pod(Some(&pod), None),
            Outcome::Failed {
                reason: FailureReason::BucketNotFound,
                message: "no bucket b".into()
            }
        );
        let pod = PodStatus {
            init_container_statuses: Some(vec![status(
                SNAPSHOT_CONTAINER,
                1,
                "context deadline exceeded",
            )]),
            ..Default::default()
        };
        let Outcome::Failed { reason, message } = outcome_of_pod(Some(&pod), None) else {
            panic!("failed")
        };
        assert_eq!(reason, FailureReason::SnapshotFailed);
        assert!(message.ends_with("context deadline exceeded"), "{message}");
        let Outcome::Failed { reason, message } =
            outcome_of_pod(None, Some(("DeadlineExceeded", &"x".repeat(5000))))
        else {
            panic!("failed")
        };
        assert_eq!(reason, FailureReason::BackupFailed);
        assert!(message.len() < 500, "clipped");
    }

    #[test]
    fn reports_round_trip_and_unknown_reasons_are_a_plain_failure() {
        let text = r#"{"result":"failed","reason":"AccessDenied","message":"the endpoint refused the credentials"}"#;
        let report: Report = serde_json::from_str(text).unwrap();
        assert_eq!(
            Outcome::from(report),
            Outcome::Failed {
                reason: FailureReason::AccessDenied,
                message: "the endpoint refused the credentials".into()
            }
        );
        assert_eq!(
            FailureReason::parse("Whatever"),
            FailureReason::BackupFailed
        );
        let ok = Report::Succeeded {
            record: record("20261205T060000Z"),
            kept: vec!["20261205T060000Z".into()],
        };
        let back: Report = serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
    }
}
