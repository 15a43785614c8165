//! Status computed from observed children: table tests.

use super::*;

fn t(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn ready(n: i32) -> Option<Rollout> {
    Some(Rollout {
        desired: n,
        ready: n,
        updated: n,
        observed: true,
        version: Some("1.35.4".into()),
        outdated: 0,
    })
}

fn all_ready() -> Observed {
    Observed {
        etcd: ready(1),
        apiserver: ready(1),
        controller_manager: ready(1),
        scheduler: ready(1),
        coredns: ready(1),
        endpoint: Some("https://10.0.0.1:6443".into()),
        admin_kubeconfig_secret: Some("demo-admin-kubeconfig".into()),
        apiserver_images: Some(ImagesSpec::default()),
        ..Observed::default()
    }
}

#[test]
fn a_rollout_is_replaced_only_when_no_earlier_pod_is_left() {
    // Mid rollout with a surge: the new pod counts as updated while the
    // old one still serves (and is the one available).
    let mut rollout = Rollout {
        desired: 1,
        ready: 1,
        updated: 1,
        observed: true,
        version: None,
        outdated: 1,
    };
    assert!(rollout.complete());
    assert!(!rollout.replaced());
    rollout.outdated = 0;
    assert!(rollout.replaced());
}

#[test]
fn nothing_ready_says_why() {
    let observed = Observed {
        etcd: Some(Rollout {
            desired: 1,
            ready: 0,
            updated: 1,
            observed: true,
            version: None,
            outdated: 0,
        }),
        ..Observed::default()
    };
    let status = compute_status(&observed, None, Some(1), &t("2026-01-01T00:00:00Z"));
    assert_eq!(status.phase, Some(VirtualClusterPhase::Provisioning));
    let etcd = status
        .conditions
        .iter()
        .find(|c| c.type_ == ETCD_READY)
        .unwrap();
    assert_eq!(
        (
            etcd.status.as_str(),
            etcd.reason.as_str(),
            etcd.message.as_str()
        ),
        ("False", "NotReady", "0/1 members ready")
    );
    let api = status
        .conditions
        .iter()
        .find(|c| c.type_ == APISERVER_READY)
        .unwrap();
    assert_eq!(api.reason, "NotCreated");
    let r = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert_eq!(r.status, "False");
    assert!(r.message.contains("EtcdReady") && r.message.contains("DNSReady"));
    assert_eq!(status.version, None);
}

#[test]
fn all_ready_is_ready_and_reports_version() {
    let status = compute_status(&all_ready(), None, Some(3), &t("2026-01-01T00:00:00Z"));
    assert_eq!(status.phase, Some(VirtualClusterPhase::Ready));
    assert_eq!(status.version.as_deref(), Some("1.35.4"));
    assert_eq!(status.observed_generation, Some(3));
    assert!(status.conditions.iter().all(|c| c.status == "True"));
    assert_eq!(status.conditions.len(), 7);
    assert_eq!(status.images, Some(ImagesSpec::default()));
}

#[test]
fn unchanged_world_gives_identical_status() {
    let first = compute_status(&all_ready(), None, Some(1), &t("2026-01-01T00:00:00Z"));
    let second = compute_status(
        &all_ready(),
        Some(&first),
        Some(1),
        &t("2026-06-01T00:00:00Z"),
    );
    assert_eq!(first, second, "no timestamp churn");
}

#[test]
fn a_transition_moves_only_its_condition_and_degrades() {
    let first = compute_status(&all_ready(), None, Some(1), &t("2026-01-01T00:00:00Z"));
    let mut observed = all_ready();
    observed.etcd = Some(Rollout {
        desired: 3,
        ready: 2,
        updated: 3,
        observed: true,
        version: None,
        outdated: 0,
    });
    let second = compute_status(&observed, Some(&first), Some(1), &t("2026-02-01T00:00:00Z"));
    assert_eq!(second.phase, Some(VirtualClusterPhase::Degraded));
    let etcd = second
        .conditions
        .iter()
        .find(|c| c.type_ == ETCD_READY)
        .unwrap();
    assert_eq!(etcd.last_transition_time, t("2026-02-01T00:00:00Z"));
    let api = second
        .conditions
        .iter()
        .find(|c| c.type_ == APISERVER_READY)
        .unwrap();
    assert_eq!(api.last_transition_time, t("2026-01-01T00:00:00Z"));
    assert_eq!(
        second.version.as_deref(),
        Some("1.35.4"),
        "version stays while the apiserver runs"
    );
}

#[test]
fn rolling_out_keeps_the_previous_version() {
    let first = compute_status(&all_ready(), None, Some(1), &t("2026-01-01T00:00:00Z"));
    let mut observed = all_ready();
    observed.apiserver = Some(Rollout {
        desired: 1,
        ready: 1,
        updated: 0,
        observed: true,
        version: Some("1.36.0".into()),
        outdated: 0,
    });
    let second = compute_status(&observed, Some(&first), Some(2), &t("2026-02-01T00:00:00Z"));
    assert_eq!(second.version.as_deref(), Some("1.35.4"));
    // Every replica runs the new version, but an old one still serves.
    observed.apiserver = Some(Rollout {
        desired: 1,
        ready: 1,
        updated: 1,
        observed: true,
        version: Some("1.36.0".into()),
        outdated: 1,
    });
    let third = compute_status(
        &observed,
        Some(&second),
        Some(2),
        &t("2026-02-01T00:00:00Z"),
    );
    assert_eq!(third.version.as_deref(), Some("1.35.4"));
    observed.apiserver.as_mut().unwrap().outdated = 0;
    let fourth = compute_status(&observed, Some(&third), Some(2), &t("2026-02-01T00:00:00Z"));
    assert_eq!(fourth.version.as_deref(), Some("1.36.0"));
    let api = second
        .conditions
        .iter()
        .find(|c| c.type_ == APISERVER_READY)
        .unwrap();
    assert_eq!(api.reason, "RollingOut");
}

#[test]
fn clients_of_the_apiserver_wait_for_it() {
    let mut observed = all_ready();
    observed.scheduler = Some(Rollout {
        desired: 0,
        ready: 0,
        updated: 0,
        observed: true,
        version: None,
        outdated: 0,
    });
    let status = compute_status(&observed, None, Some(1), &t("2026-01-01T00:00:00Z"));
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == SCHEDULER_READY)
        .unwrap();
    assert_eq!(
        (c.reason.as_str(), c.message.as_str()),
        (
            "WaitingForAPIServer",
            "kube-scheduler starts once the API server serves"
        )
    );
}

#[test]
fn invalid_spec_is_one_clear_condition() {
    let observed = Observed {
        invalid: Some("etcd.replicas is 2; it must be 1, 3 or 5".into()),
        ..all_ready()
    };
    let status = compute_status(&observed, None, Some(2), &t("2026-01-01T00:00:00Z"));
    assert_eq!(status.phase, Some(VirtualClusterPhase::Invalid));
    let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(ready.message.contains("1, 3 or 5"));
    // What runs is still reported.
    assert_eq!(
        status
            .conditions
            .iter()
            .filter(|c| c.status == "True")
            .count(),
        6,
        "five components and Upgraded"
    );
}

#[test]
fn backups_are_listed_and_a_pass_that_did_not_look_keeps_the_condition() {
    use crate::model::backup::{BackupObserved, FailureReason, Outcome};
    let now = t("2026-12-05T06:00:00Z");
    let failed = Observed {
        backup: BackupObserved::On {
            records: vec![],
            request: Some("again".into()),
            last: Some(Outcome::Failed {
                reason: FailureReason::AccessDenied,
                message: "the endpoint refused the credentials".into(),
            }),
            next: None,
        },
        ..all_ready()
    };
    let status = compute_status(&failed, None, Some(1), &now);
    let backup = status
        .conditions
        .iter()
        .find(|c| c.type_ == "BackupSucceeded")
        .unwrap();
    assert_eq!(
        (backup.status.as_str(), backup.reason.as_str()),
        ("False", "AccessDenied")
    );
    assert!(
        is_ready(&status.conditions),
        "a failed backup is not unready"
    );
    assert_eq!(status.backup_request.as_deref(), Some("again"));
    // Refused or deleting: the pass did not look, and nothing changes.
    let later = t("2026-12-05T07:00:00Z");
    let kept = compute_status(&all_ready(), Some(&status), Some(1), &later);
    assert_eq!(kept.conditions, status.conditions);
    assert_eq!(kept.backup_request, status.backup_request);
    // Turned off: no condition and no list.
    let off = Observed {
        backup: BackupObserved::Off,
        ..all_ready()
    };
    let off = compute_status(&off, Some(&status), Some(1), &later);
    assert!(off.conditions.iter().all(|c| c.type_ != "BackupSucceeded"));
    assert_eq!(off.backup_request, None);
}
