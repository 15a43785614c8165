//! Status computed from what the children report. Pure and deterministic:
//! a condition keeps its `lastTransitionTime` while its status holds, so an
//! unchanged world gives a byte-identical status and no write.

use crate::model::backup::{BACKUP_SUCCEEDED, BackupObserved, FailureReason, Outcome};
use crate::model::cached::Workload;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use nestor_crds::{
    ImagesSpec, UpgradeStatus, UpgradeStep, VirtualClusterPhase, VirtualClusterStatus,
};

/// Annotation on control-plane pod templates naming the Kubernetes version.
pub const VERSION_ANNOTATION: &str = "nestor.dev/kubernetes-version";

pub const ETCD_READY: &str = "EtcdReady";
pub const APISERVER_READY: &str = "APIServerReady";
pub const CONTROLLER_MANAGER_READY: &str = "ControllerManagerReady";
pub const SCHEDULER_READY: &str = "SchedulerReady";
pub const DNS_READY: &str = "DNSReady";
pub const READY: &str = "Ready";
pub const UPGRADED: &str = "Upgraded";

/// How far a workload (StatefulSet or Deployment) has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    /// The workload controller has seen the latest spec.
    pub observed: bool,
    /// The Kubernetes version on the pod template, if any.
    pub version: Option<String>,
    /// Pods of an earlier template still running.
    pub outdated: i32,
}

impl Rollout {
    pub fn from_statefulset(sts: &Workload<StatefulSet>) -> Self {
        let desired = sts.replicas().unwrap_or(1);
        let status = sts.status.clone().unwrap_or_default();
        Self {
            desired,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed: status.observed_generation >= sts.metadata.generation
                && sts.metadata.generation.is_some(),
            version: None,
            outdated: (status.replicas.unwrap_or(0) - status.updated_replicas.unwrap_or(0)).max(0),
        }
    }

    pub fn from_deployment(d: &Workload<Deployment>) -> Self {
        let desired = d.replicas().unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        Self {
            desired,
            ready: status.available_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed: status.observed_generation >= d.metadata.generation
                && d.metadata.generation.is_some(),
            version: d.template_annotation(VERSION_ANNOTATION).cloned(),
            outdated: (status.replicas.unwrap_or(0) - status.updated_replicas.unwrap_or(0)).max(0),
        }
    }

    /// Every replica runs the latest spec and is ready, and no pod of an
    /// earlier spec is left.
    pub fn replaced(&self) -> bool {
        self.complete() && self.outdated == 0
    }

    /// Every replica runs the latest spec and is ready.
    pub fn complete(&self) -> bool {
        self.observed
            && self.desired > 0
            && self.ready >= self.desired
            && self.updated >= self.desired
    }
}

/// What the reconciler observed of a virtual cluster's children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Why the spec was refused, if it was.
    pub invalid: Option<String>,
    pub deleting: bool,
    pub etcd: Option<Rollout>,
    pub apiserver: Option<Rollout>,
    pub controller_manager: Option<Rollout>,
    pub scheduler: Option<Rollout>,
    pub coredns: Option<Rollout>,
    pub endpoint: Option<String>,
    pub admin_kubeconfig_secret: Option<String>,
    /// The `spec.images` this pass built the API servers from.
    pub apiserver_images: Option<ImagesSpec>,
    /// The record of the latest change of version or images after this
    /// pass (`None`: the pass did not look, and the last record stays).
    pub upgrade: Option<Option<UpgradeStatus>>,
    /// What the backup stage found (`NotLooked`: the last record stays).
    pub backup: BackupObserved,
}

/// A condition as computed now, before its transition time is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Computed {
    /// `Ready=False` because the spec was refused, and why.
    pub fn invalid_spec(why: &str) -> Self {
        Computed {
            type_: READY,
            ok: false,
            reason: "InvalidSpec",
            message: why.to_string(),
        }
    }
}

fn component_condition(
    type_: &'static str,
    what: &str,
    unit: &str,
    rollout: &Option<Rollout>,
) -> Computed {
    match rollout {
        None => Computed {
            type_,
            ok: false,
            reason: "NotCreated",
            message: format!("{what} has not been created yet"),
        },
        Some(r) if r.desired == 0 => Computed {
            type_,
            ok: false,
            reason: "WaitingForAPIServer",
            message: format!("{what} starts once the API server serves"),
        },
        Some(r) if r.complete() => Computed {
            type_,
            ok: true,
            reason: "Ready",
            message: format!("{}/{} {unit} ready", r.ready, r.desired),
        },
        Some(r) if !r.observed => Computed {
            type_,
            ok: false,
            reason: "RollingOut",
            message: format!("{what} has a new spec that its controller has not picked up yet"),
        },
        Some(r) if r.updated < r.desired => Computed {
            type_,
            ok: false,
            reason: "RollingOut",
            message: format!(
                "{}/{} {unit} updated, {}/{} ready",
                r.updated, r.desired, r.ready, r.desired
            ),
        },
        Some(r) => Computed {
            type_,
            ok: false,
            reason: "NotReady",
            message: format!("{}/{} {unit} ready", r.ready, r.desired),
        },
    }
}

/// The conditions of a virtual cluster, in a fixed order. `upgrade` is
/// the record of the latest change of version or images.
pub fn compute_conditions(
    observed: &Observed,
    upgrade: Option<&UpgradeStatus>,
    backup: Option<Computed>,
) -> Vec<Computed> {
    // Without `..`: a component observed and given no condition does not
    // compile. The fields that are not components say so.
    let Observed {
        invalid,
        deleting,
        etcd,
        apiserver,
        controller_manager,
        scheduler,
        coredns,
        endpoint: _,
        admin_kubeconfig_secret: _,
        apiserver_images: _,
        upgrade: _,
        backup: _,
    } = observed;
    let mut conditions = vec![
        component_condition(ETCD_READY, "etcd", "members", etcd),
        component_condition(APISERVER_READY, "kube-apiserver", "replicas", apiserver),
        component_condition(
            CONTROLLER_MANAGER_READY,
            "kube-controller-manager",
            "replicas",
            controller_manager,
        ),
        component_condition(SCHEDULER_READY, "kube-scheduler", "replicas", scheduler),
        component_condition(DNS_READY, "CoreDNS", "replicas", coredns),
    ];
    let waiting: Vec<&str> = conditions
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.type_)
        .collect();
    let ready = if let Some(why) = invalid {
        Computed::invalid_spec(why)
    } else if *deleting {
        Computed {
            type_: READY,
            ok: false,
            reason: "Deleting",
            message: "the virtual cluster is being deleted".into(),
        }
    } else if waiting.is_empty() {
        Computed {
            type_: READY,
            ok: true,
            reason: "ControlPlaneReady",
            message: "every control-plane component is ready".into(),
        }
    } else {
        Computed {
            type_: READY,
            ok: false,
            reason: "ComponentsNotReady",
            message: format!("waiting for {}", waiting.join(", ")),
        }
    };
    // A change under way (or rolled back) does not make the cluster unready.
    conditions.push(upgrade_condition(upgrade));
    // Nor does a failed backup: the cluster keeps serving.
    conditions.extend(backup);
    conditions.push(ready);
    conditions
}

/// Whether `conditions` hold `Ready=True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// Turns computed conditions into API conditions, keeping each previous
/// `lastTransitionTime` whose status did not change.
pub fn settle_conditions(
    computed: &[Computed],
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    computed
        .iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" };
            let last = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.into(),
                status: status.into(),
                reason: c.reason.into(),
                message: c.message.clone(),
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

/// The whole status of a virtual cluster.
pub fn compute_status(
    observed: &Observed,
    previous: Option<&VirtualClusterStatus>,
    generation: Option<i64>,
    now: &Time,
) -> VirtualClusterStatus {
    let upgrade = match &observed.upgrade {
        Some(record) => record.clone(),
        None => previous.and_then(|p| p.upgrade.clone()),
    };
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let (backups, backup_request, backup) = match &observed.backup {
        BackupObserved::NotLooked => (
            previous.map(|p| p.backups.clone()).unwrap_or_default(),
            previous.and_then(|p| p.backup_request.clone()),
            previous_conditions
                .iter()
                .find(|c| c.type_ == BACKUP_SUCCEEDED)
                .map(kept_backup_condition),
        ),
        BackupObserved::Off => (Vec::new(), None, None),
        BackupObserved::On {
            records,
            request,
            last,
            next: _,
        } => (
            records.clone(),
            request.clone(),
            Some(backup_condition(last.as_ref())),
        ),
    };
    let computed = compute_conditions(observed, upgrade.as_ref(), backup);
    let conditions = settle_conditions(&computed, previous_conditions, generation, now);
    let ready = computed.iter().any(|c| c.type_ == READY && c.ok);
    let was_ready = previous.and_then(|p| p.phase).is_some_and(|p| {
        matches!(
            p,
            VirtualClusterPhase::Ready | VirtualClusterPhase::Degraded
        )
    });
    let phase = if observed.deleting {
        VirtualClusterPhase::Deleting
    } else if observed.invalid.is_some() {
        VirtualClusterPhase::Invalid
    } else if ready {
        VirtualClusterPhase::Ready
    } else if was_ready {
        VirtualClusterPhase::Degraded
    } else {
        VirtualClusterPhase::Provisioning
    };
    // The running version is the apiserver's once every replica runs it
    // and no replica of an earlier version is left (node pools follow it,
    // and a kubelet may not be newer than any API server).
    let (version, images) = match &observed.apiserver {
        Some(r) if r.replaced() && observed.apiserver_images.is_some() => {
            (r.version.clone(), observed.apiserver_images.clone())
        }
        _ => (
            previous.and_then(|p| p.version.clone()),
            previous.and_then(|p| p.images.clone()),
        ),
    };
    VirtualClusterStatus {
        phase: Some(phase),
        observed_generation: generation,
        endpoint: observed
            .endpoint
            .clone()
            .or_else(|| previous.and_then(|p| p.endpoint.clone())),
        admin_kubeconfig_secret: observed
            .admin_kubeconfig_secret
            .clone()
            .or_else(|| previous.and_then(|p| p.admin_kubeconfig_secret.clone())),
        version,
        images,
        upgrade,
        backups,
        backup_request,
        conditions,
    }
}

/// The `BackupSucceeded` condition, from how the newest finished backup
/// ended.
pub fn backup_condition(last: Option<&Outcome>) -> Computed {
    let (ok, reason, message) = match last {
        None => (
            false,
            "NoBackupYet",
            "no backup has finished yet".to_string(),
        ),
        Some(Outcome::Succeeded { record, .. }) => (
            true,
            "Succeeded",
            format!(
                "backup {} verified: {} bytes at revision {}, at {}",
                record.name, record.size_bytes, record.revision, record.location
            ),
        ),
        Some(Outcome::Failed { reason, message }) => (false, reason.as_str(), message.clone()),
    };
    Computed {
        type_: BACKUP_SUCCEEDED,
        ok,
        reason,
        message,
    }
}

/// The `BackupSucceeded` condition a pass that did not look keeps.
fn kept_backup_condition(previous: &Condition) -> Computed {
    let reason = match previous.reason.as_str() {
        "Succeeded" => "Succeeded",
        "NoBackupYet" => "NoBackupYet",
        other => FailureReason::parse(other).as_str(),
    };
    Computed {
        type_: BACKUP_SUCCEEDED,
        ok: previous.status == "True",
        reason,
        message: previous.message.clone(),
    }
}

/// The `Upgraded` condition.
pub fn upgrade_condition(record: Option<&UpgradeStatus>) -> Computed {
    let (ok, reason, message) = match record {
        None => (
            true,
            "UpToDate",
            "no change of version or images is under way".to_string(),
        ),
        Some(r) if r.step == UpgradeStep::Complete => (
            true,
            "Upgraded",
            format!("upgraded from {} to {}", r.from, r.to),
        ),
        Some(r) if r.step == UpgradeStep::RolledBack => {
            (false, "RolledBack", r.message.clone().unwrap_or_default())
        }
        Some(r) => (
            false,
            "Upgrading",
            format!(
                "{} to {}: {}{}",
                r.from,
                r.to,
                describe_step(r.step),
                r.message
                    .as_ref()
                    .map(|m| format!("; {m}"))
                    .unwrap_or_default()
            ),
        ),
    };
    Computed {
        type_: UPGRADED,
        ok,
        reason,
        message,
    }
}

/// A step of a change of version or images, in words.
pub fn describe_step(step: UpgradeStep) -> &'static str {
    match step {
        UpgradeStep::Snapshot => "taking an etcd snapshot",
        UpgradeStep::Etcd => "rolling etcd",
        UpgradeStep::APIServer => "rolling the API servers",
        UpgradeStep::ControllerManagerAndScheduler => {
            "rolling the controller-manager and the scheduler"
        }
        UpgradeStep::Addons => "rolling CoreDNS",
        UpgradeStep::NodePools => "replacing the nodes of the pools, one at a time",
        UpgradeStep::Complete => "complete",
        UpgradeStep::RolledBack => "rolled back",
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
