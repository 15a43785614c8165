//! Status computed from what the children report. Pure and deterministic:
//! a condition keeps its `lastTransitionTime` while its status holds, so an
//! unchanged world gives a byte-identical status and no write.

use crate::model::cached::Workload;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use nestor_crds::{ImagesSpec, UpgradeStatus, VirtualClusterPhase, VirtualClusterStatus};

/// Annotation on control-plane pod templates naming the Kubernetes version.
pub const VERSION_ANNOTATION: &str = "nestor.dev/kubernetes-version";

pub const ETCD_READY: &str = "EtcdReady";
pub const APISERVER_READY: &str = "APIServerReady";
pub const CONTROLLER_MANAGER_READY: &str = "ControllerManagerReady";
pub const SCHEDULER_READY: &str = "SchedulerReady";
pub const DNS_READY: &str = "DNSReady";
pub const READY: &str = "Ready";

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
pub fn compute_conditions(observed: &Observed, upgrade: Option<&UpgradeStatus>) -> Vec<Computed> {
    let mut conditions = vec![
        component_condition(ETCD_READY, "etcd", "members", &observed.etcd),
        component_condition(
            APISERVER_READY,
            "kube-apiserver",
            "replicas",
            &observed.apiserver,
        ),
        component_condition(
            CONTROLLER_MANAGER_READY,
            "kube-controller-manager",
            "replicas",
            &observed.controller_manager,
        ),
        component_condition(
            SCHEDULER_READY,
            "kube-scheduler",
            "replicas",
            &observed.scheduler,
        ),
        component_condition(DNS_READY, "CoreDNS", "replicas", &observed.coredns),
    ];
    let waiting: Vec<&str> = conditions
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.type_)
        .collect();
    let ready = if let Some(why) = &observed.invalid {
        Computed::invalid_spec(why)
    } else if observed.deleting {
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
    conditions.push(crate::model::upgrade::condition(upgrade));
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
    let computed = compute_conditions(observed, upgrade.as_ref());
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
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
        conditions,
    }
}

#[cfg(test)]
mod tests {
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
}
