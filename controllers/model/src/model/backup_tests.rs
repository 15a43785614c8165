//! The backup plan and the reading of a backup pod: table tests.

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
