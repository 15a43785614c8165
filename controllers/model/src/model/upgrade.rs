//! A change of a cluster's version or images, rolled out in the order the
//! version skew policy asks for. Pure: the reconciler tells what it saw,
//! this module says which version each component is built at and where the
//! change stands.
//!
//! The steps, each waiting for the one before:
//! 1. an etcd snapshot (through etcd's snapshot API, onto a volume of the
//!    cluster);
//! 2. etcd, when its image changes;
//! 3. every API server replica, with a deadline (`spec.upgrade.
//!    apiServerTimeout`): past it, the control plane returns to the version
//!    and images it ran, and stays there while the spec asks for the same;
//! 4. the controller-manager and the scheduler, done once a replica of
//!    the new version holds each one's leader Lease: a Deployment rolls
//!    before its new replica leads (the old leader's Lease runs out first),
//!    and with no controller-manager leading, a drained node's pods would
//!    be neither replaced nor taken out of their Services' endpoints;
//! 5. the add-ons (CoreDNS);
//! 6. the node pools that follow the cluster's version (they never run a
//!    kubelet newer than `status.version`, which moves with step 3), one
//!    node at a time.

mod steps;
pub use steps::{Snapshot, Steps};

use crate::model::hash::inputs_hash;
use crate::model::status::VERSION_ANNOTATION;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nestor_crds::{
    ImagesSpec, UpgradeStatus, UpgradeStep, VirtualClusterSpec, VirtualClusterStatus,
};
use std::time::Duration;

/// What a control plane is built from: a version and the spec's images.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub version: String,
    pub images: ImagesSpec,
}

impl Target {
    /// What the spec asks for.
    pub fn wanted(spec: &VirtualClusterSpec) -> Self {
        Self {
            version: spec.version.clone(),
            images: spec.images.clone(),
        }
    }

    /// A stable hash of the version and images.
    pub fn hash(&self) -> String {
        let images = serde_json::to_string(&self.images).expect("images serialize");
        inputs_hash(["target", &self.version, &images])
    }
}

/// A change under way: what the control plane ran when it began, what the
/// spec asks for, and where it stood at the last reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub from: Target,
    pub to: Target,
    pub record: UpgradeStatus,
}

/// The change the spec and status describe, or `None` when every component
/// is built from the spec: a new cluster (nothing runs yet), a cluster that
/// runs what its spec asks for, or a change that is complete.
pub fn change(
    spec: &VirtualClusterSpec,
    status: Option<&VirtualClusterStatus>,
    now: &Time,
) -> Option<Change> {
    let to = Target::wanted(spec);
    let target = to.hash();
    let status = status?;
    if let Some(record) = status.upgrade.as_ref().filter(|u| u.target == target) {
        if record.step == UpgradeStep::Complete {
            return None;
        }
        return Some(Change {
            from: Target {
                version: record.from.clone(),
                images: record.from_images.clone(),
            },
            to,
            record: record.clone(),
        });
    }
    let running = Target {
        version: status.version.clone()?,
        // A status written before images were recorded ran the spec's.
        images: status.images.clone().unwrap_or_else(|| spec.images.clone()),
    };
    if running.hash() == target {
        return None;
    }
    Some(Change {
        record: UpgradeStatus {
            from: running.version.clone(),
            from_images: running.images.clone(),
            to: to.version.clone(),
            target,
            step: UpgradeStep::Snapshot,
            started_at: now.clone(),
            api_server_started_at: None,
            snapshot: None,
            message: None,
        },
        from: running,
        to,
    })
}

/// The record a cluster with no change under way keeps: that of the change
/// that made it what its spec asks for. A record of another target (a
/// change taken back before it went anywhere, or a rollback whose images
/// were put back) no longer says anything true, and goes.
pub fn kept(
    spec: &VirtualClusterSpec,
    status: Option<&VirtualClusterStatus>,
) -> Option<UpgradeStatus> {
    let target = Target::wanted(spec).hash();
    status?
        .upgrade
        .clone()
        .filter(|u| u.target == target && u.step == UpgradeStep::Complete)
}

/// What the nodes may run now: the version and images the control plane
/// ran before a change, until the change reaches its node step (the
/// version skew policy's last), else what every API server runs. `None`
/// for a cluster that runs nothing yet.
pub fn node_target(
    spec: &VirtualClusterSpec,
    status: Option<&VirtualClusterStatus>,
) -> Option<Target> {
    let status = status?;
    let target = Target::wanted(spec).hash();
    let before_nodes = status.upgrade.as_ref().filter(|u| {
        u.target == target && u.step < UpgradeStep::NodePools || u.step == UpgradeStep::RolledBack
    });
    match before_nodes {
        Some(u) => Some(Target {
            version: u.from.clone(),
            images: u.from_images.clone(),
        }),
        None => Some(Target {
            version: status.version.clone()?,
            images: status.images.clone().unwrap_or_else(|| spec.images.clone()),
        }),
    }
}

/// What the reconciler found this pass, in the order of the steps. Each
/// `bool` is whether that step's components run the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The snapshot taken (`<claim>/<file>`).
    pub snapshot: Option<String>,
    /// Why the snapshot failed, if it did (it is taken again).
    pub snapshot_failed: Option<String>,
    pub etcd: bool,
    pub apiserver: bool,
    pub managers: bool,
    pub addons: bool,
    pub pools: bool,
}

impl Change {
    /// Whether the control plane was rolled back, and stays so.
    pub fn rolled_back(&self) -> bool {
        self.record.step == UpgradeStep::RolledBack
    }

    /// Whether the change has gone past `step` (and was not rolled back).
    pub fn passed(&self, step: UpgradeStep) -> bool {
        !self.rolled_back() && self.record.step > step
    }

    /// Whether the API servers have had more than `timeout` to serve the
    /// target.
    pub fn overdue(&self, timeout: Duration, now: &Time) -> bool {
        self.record.api_server_started_at.as_ref().is_some_and(|t| {
            now.0
                .duration_since(t.0)
                .try_into()
                .is_ok_and(|d: Duration| d > timeout)
        })
    }

    /// The message of a rollback after `timeout`.
    pub fn rollback_message(&self, timeout: &str) -> String {
        let snapshot = match &self.record.snapshot {
            Some(s) => format!(
                "the etcd snapshot {s} is kept and was not restored: etcd's data stays readable by the API servers of {} (Kubernetes keeps storage versions readable one minor version back)",
                self.from.version
            ),
            None => "no snapshot was needed".into(),
        };
        format!(
            "the API servers of {} did not all serve within {timeout}; the control plane runs {} again; {snapshot}. Change spec.version or spec.images to try again",
            self.to.version, self.from.version
        )
    }

    /// Where the change stands after this pass.
    pub fn advance(
        &self,
        progress: &Progress,
        rollback: Option<String>,
        now: &Time,
    ) -> UpgradeStatus {
        let mut record = self.record.clone();
        record.snapshot = progress.snapshot.clone().or(record.snapshot);
        if let Some(message) = rollback {
            record.step = UpgradeStep::RolledBack;
            record.message = Some(message);
            return record;
        }
        if self.rolled_back() {
            return record;
        }
        let steps = [
            (UpgradeStep::Snapshot, record.snapshot.is_some()),
            (UpgradeStep::Etcd, progress.etcd),
            (UpgradeStep::APIServer, progress.apiserver),
            (
                UpgradeStep::ControllerManagerAndScheduler,
                progress.managers,
            ),
            (UpgradeStep::Addons, progress.addons),
            (UpgradeStep::NodePools, progress.pools),
        ];
        record.step = steps
            .iter()
            .find(|(_, done)| !done)
            .map_or(UpgradeStep::Complete, |(step, _)| *step);
        if record.step >= UpgradeStep::APIServer && record.api_server_started_at.is_none() {
            record.api_server_started_at = Some(now.clone());
        }
        record.message = progress
            .snapshot_failed
            .as_ref()
            .filter(|_| record.step == UpgradeStep::Snapshot)
            .map(|why| format!("the etcd snapshot failed ({why}); it is taken again"));
        record
    }
}

/// `to` when a step may run what is asked, else `from` (as it runs),
/// when there is one.
pub fn either<T>(at_to: bool, to: T, from: Option<T>) -> T {
    match from {
        Some(from) if !at_to => from,
        _ => to,
    }
}

/// Whether a leader Lease held by `holder` (`<pod>_<id>`, as the
/// controller-manager and the scheduler name themselves) is held by one of
/// `pods` that is not being deleted and runs `version` (its template's
/// version annotation).
pub fn leads(holder: Option<&str>, pods: &[Pod], version: &str) -> bool {
    let Some((pod, _)) = holder.and_then(|h| h.split_once('_')) else {
        return false;
    };
    pods.iter().any(|p| {
        p.metadata.name.as_deref() == Some(pod)
            && p.metadata.deletion_timestamp.is_none()
            && p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(VERSION_ANNOTATION))
                .is_some_and(|v| v == version)
    })
}

/// `spec.upgrade.apiServerTimeout`, or its default should it not parse
/// (the schema admits only what parses).
pub fn timeout(spec: &nestor_crds::UpgradeSpec) -> Duration {
    parse_timeout(&spec.api_server_timeout)
        .or_else(|| parse_timeout(nestor_crds::DEFAULT_API_SERVER_TIMEOUT))
        .unwrap_or(Duration::from_secs(600))
}

/// Parses `spec.upgrade.apiServerTimeout` (hours, minutes and seconds,
/// as the schema admits: `10m`, `1m30s`).
pub fn parse_timeout(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = digits.parse().ok()?;
                digits.clear();
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
            }
            _ => return None,
        }
    }
    (digits.is_empty() && !text.is_empty()).then_some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn running(version: &str) -> VirtualClusterStatus {
        VirtualClusterStatus {
            version: Some(version.into()),
            images: Some(ImagesSpec::default()),
            ..VirtualClusterStatus::default()
        }
    }

    #[test]
    fn nothing_changes_for_a_new_or_settled_cluster() {
        let vc = fixtures::vc(json!({"version": "1.35.4"}));
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(change(&vc.spec, None, &now), None, "a new cluster");
        assert_eq!(change(&vc.spec, Some(&running("1.35.4")), &now), None);
    }

    #[test]
    fn a_new_version_begins_with_a_snapshot_and_goes_in_order() {
        let vc = fixtures::vc(json!({"version": "1.35.4"}));
        let start = t("2026-01-01T00:00:00Z");
        let c = change(&vc.spec, Some(&running("1.34.5")), &start).unwrap();
        assert_eq!(
            (c.from.version.as_str(), c.to.version.as_str()),
            ("1.34.5", "1.35.4")
        );
        assert_eq!(c.record.step, UpgradeStep::Snapshot);
        let mut progress = Progress {
            etcd: true,
            apiserver: true,
            ..Progress::default()
        };
        // Nothing counts before the snapshot.
        assert_eq!(
            c.advance(&progress, None, &start).step,
            UpgradeStep::Snapshot
        );
        progress.snapshot = Some("demo-etcd-snapshots/a.db".into());
        progress.apiserver = false;
        let later = t("2026-01-01T00:01:00Z");
        let r = c.advance(&progress, None, &later);
        assert_eq!(r.step, UpgradeStep::APIServer);
        assert_eq!(r.api_server_started_at, Some(later.clone()));
        // The next pass finds the record in the status.
        let status = VirtualClusterStatus {
            upgrade: Some(r),
            ..running("1.34.5")
        };
        let c = change(&vc.spec, Some(&status), &t("2026-01-01T00:09:00Z")).unwrap();
        assert_eq!(c.record.started_at, start, "the start is kept");
        assert!(!c.overdue(Duration::from_secs(600), &t("2026-01-01T00:09:00Z")));
        assert!(c.overdue(Duration::from_secs(600), &t("2026-01-01T00:11:01Z")));
        progress.apiserver = true;
        progress.managers = true;
        let r = c.advance(&progress, None, &later);
        assert_eq!(r.step, UpgradeStep::Addons);
        progress.addons = true;
        progress.pools = true;
        let r = c.advance(&progress, None, &later);
        assert_eq!(r.step, UpgradeStep::Complete);
        assert_eq!(r.api_server_started_at, Some(later.clone()), "kept");
        let done = VirtualClusterStatus {
            upgrade: Some(r.clone()),
            ..running("1.35.4")
        };
        assert_eq!(change(&vc.spec, Some(&done), &later), None);
        let ok = crate::model::status::upgrade_condition(Some(&r));
        assert!(ok.ok);
        assert_eq!(ok.message, "upgraded from 1.34.5 to 1.35.4");
    }

    #[test]
    fn a_rollback_holds_until_the_spec_changes() {
        let mut vc = fixtures::vc(json!({
            "version": "1.35.4",
            "images": {"apiServer": "registry.k8s.io/broken:1"}
        }));
        let start = t("2026-01-01T00:00:00Z");
        let mut status = running("1.34.5");
        let c = change(&vc.spec, Some(&status), &start).unwrap();
        assert_eq!(c.from.images, ImagesSpec::default(), "what ran");
        let message = c.rollback_message("1m");
        assert!(message.contains("did not all serve within 1m"), "{message}");
        assert!(message.contains("runs 1.34.5 again"), "{message}");
        let r = c.advance(&Progress::default(), Some(message), &start);
        assert_eq!(r.step, UpgradeStep::RolledBack);
        status.upgrade = Some(r);
        let held = change(&vc.spec, Some(&status), &start).unwrap();
        assert!(held.rolled_back());
        let progress = Progress {
            snapshot: Some("s".into()),
            etcd: true,
            apiserver: true,
            managers: true,
            addons: true,
            pools: true,
            ..Progress::default()
        };
        assert_eq!(
            held.advance(&progress, None, &start).step,
            UpgradeStep::RolledBack
        );
        let c = crate::model::status::upgrade_condition(status.upgrade.as_ref());
        assert_eq!((c.ok, c.reason), (false, "RolledBack"));
        // A new spec is a new change, from what runs.
        vc.spec.images.api_server = None;
        let again = change(&vc.spec, Some(&status), &start).unwrap();
        assert_eq!(again.record.step, UpgradeStep::Snapshot);
        assert_eq!(again.from.version, "1.34.5");
    }

    #[test]
    fn nodes_wait_for_every_step_before_theirs() {
        let vc = fixtures::vc(
            json!({"version": "1.35.4", "images": {"node": "ghcr.io/nestor-dev/nestor-node:v1.35.4-b"}}),
        );
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(node_target(&vc.spec, None), None, "nothing runs yet");
        let c = change(&vc.spec, Some(&running("1.34.5")), &now).unwrap();
        let progress = Progress {
            snapshot: Some("s".into()),
            etcd: true,
            apiserver: true,
            ..Progress::default()
        };
        // The API servers run 1.35.4 now, but CoreDNS has not moved yet.
        let status = VirtualClusterStatus {
            upgrade: Some(c.advance(&progress, None, &now)),
            images: Some(vc.spec.images.clone()),
            ..running("1.35.4")
        };
        let nodes = node_target(&vc.spec, Some(&status)).unwrap();
        assert_eq!(
            (nodes.version.as_str(), nodes.images.node.clone()),
            ("1.34.5", None)
        );
        let all = Progress {
            managers: true,
            addons: true,
            ..progress
        };
        let status = VirtualClusterStatus {
            upgrade: Some(c.advance(&all, None, &now)),
            ..status
        };
        let nodes = node_target(&vc.spec, Some(&status)).unwrap();
        assert_eq!(nodes, Target::wanted(&vc.spec));
    }

    #[test]
    fn a_record_of_another_target_goes_once_nothing_changes() {
        let mut vc =
            fixtures::vc(json!({"images": {"coreDNS": "registry.k8s.io/coredns/coredns:v1.12.2"}}));
        let now = t("2026-01-01T00:00:00Z");
        let c = change(&vc.spec, Some(&running("1.35.4")), &now).unwrap();
        let status = VirtualClusterStatus {
            upgrade: Some(c.advance(&Progress::default(), None, &now)),
            ..running("1.35.4")
        };
        // Taken back before the snapshot: nothing changes, and the record goes.
        vc.spec.images.core_dns = None;
        assert_eq!(change(&vc.spec, Some(&status), &now), None);
        assert_eq!(kept(&vc.spec, Some(&status)), None);
    }

    #[test]
    fn an_image_change_is_a_change_too() {
        let vc =
            fixtures::vc(json!({"images": {"coreDNS": "registry.k8s.io/coredns/coredns:v1.12.2"}}));
        let status = running("1.35.4");
        let c = change(&vc.spec, Some(&status), &t("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(c.from.version, c.to.version);
        assert_ne!(c.from.images, c.to.images);
    }

    #[test]
    fn timeouts_parse_as_the_schema_admits() {
        assert_eq!(parse_timeout("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_timeout("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_timeout("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("10"), None);
        assert_eq!(parse_timeout(""), None);
        assert_eq!(parse_timeout("5d"), None);
        let default = nestor_crds::UpgradeSpec::default();
        assert_eq!(timeout(&default), Duration::from_secs(600));
        assert_eq!(
            parse_timeout(&default.api_server_timeout),
            Some(timeout(&default)),
            "the default parses"
        );
    }

    #[test]
    fn only_a_live_replica_of_the_version_leads() {
        let pod = |name: &str, version: &str, deleting: bool| -> Pod {
            serde_json::from_value(json!({"metadata": {
                "name": name,
                "annotations": {VERSION_ANNOTATION: version},
                "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z"),
            }}))
            .unwrap()
        };
        let pods = [
            pod("c-cm-new", "1.35.4", false),
            pod("c-cm-old", "1.34.5", false),
            pod("c-cm-going", "1.35.4", true),
        ];
        assert!(leads(Some("c-cm-new_4f1c"), &pods, "1.35.4"));
        for (holder, why) in [
            (Some("c-cm-old_4f1c"), "an old replica"),
            (Some("c-cm-going_4f1c"), "one being deleted"),
            (Some("c-cm-gone_4f1c"), "a pod that is gone"),
            (Some("c-cm-new"), "not a holder identity"),
            (None, "no holder"),
        ] {
            assert!(!leads(holder, &pods, "1.35.4"), "{why}");
        }
    }
}
