//! One pass of a change of version or images, step by step: which form
//! each component is built in (the target's, or the one it runs) and which
//! steps are done. Pure: the reconciler tells it, in the order of the
//! steps, what each apply returned, and asks it which form the next
//! component takes. A step takes the target only once the steps before it
//! are done; a rollback returns every component to the form it ran.

use super::{Change, Progress};
use crate::model::status::Rollout;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nestor_crds::{UpgradeStatus, UpgradeStep, VirtualClusterSpec, VirtualClusterStatus};
use std::time::Duration;

/// How this pass's etcd snapshot stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// No snapshot is needed: no change is under way, it was rolled back,
    /// or its snapshot step has passed.
    NotNeeded,
    /// Taken: where it is kept (`<claim>/<file>`).
    Taken(String),
    /// Being taken.
    Running,
    /// The Job failed (and is taken again): why.
    Failed(String),
}

/// Where a change stands in this pass.
#[derive(Clone, Debug)]
pub struct Steps<'a> {
    change: Option<&'a Change>,
    snapshot_ready: bool,
    rollback: Option<String>,
    progress: Progress,
}

impl<'a> Steps<'a> {
    /// The steps of `change` (none: every component takes what is asked).
    pub fn new(change: Option<&'a Change>) -> Self {
        Self {
            change,
            snapshot_ready: true,
            rollback: None,
            progress: Progress::default(),
        }
    }

    /// Whether this pass takes a snapshot before anything else.
    pub fn needs_snapshot(&self) -> bool {
        self.change
            .is_some_and(|c| !c.rolled_back() && !c.passed(UpgradeStep::Snapshot))
    }

    /// Where the snapshot stands; etcd takes the target once it is taken.
    pub fn snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot_ready = match snapshot {
            Snapshot::NotNeeded => true,
            Snapshot::Taken(location) => {
                self.progress.snapshot = Some(location);
                true
            }
            Snapshot::Running => false,
            Snapshot::Failed(why) => {
                self.progress.snapshot_failed = Some(why);
                false
            }
        };
    }

    fn passed(&self, step: UpgradeStep) -> bool {
        self.change.is_none_or(|c| c.passed(step))
    }

    fn rolled_back(&self) -> bool {
        self.rollback.is_some() || self.change.is_some_and(Change::rolled_back)
    }

    /// Whether a step that follows `done` takes the target.
    fn follows(&self, done: bool) -> bool {
        self.change.is_none() || (!self.rolled_back() && done)
    }

    /// Whether etcd takes the target.
    pub fn etcd_at_to(&self) -> bool {
        self.snapshot_ready
    }

    /// etcd as applied.
    pub fn etcd_applied(&mut self, etcd: &Rollout) {
        self.progress.etcd =
            self.passed(UpgradeStep::Etcd) || (self.snapshot_ready && etcd.replaced());
    }

    /// Rolls the change back when its API servers have had longer than
    /// `timeout` (`timeout_text` in the spec's words) and do not all serve
    /// (`serving`, as cached before this pass writes them).
    pub fn roll_back_if_overdue(
        &mut self,
        timeout: Duration,
        timeout_text: &str,
        now: &Time,
        serving: bool,
    ) {
        self.rollback = self.change.and_then(|c| {
            (c.record.step == UpgradeStep::APIServer && c.overdue(timeout, now) && !serving)
                .then(|| c.rollback_message(timeout_text))
        });
    }

    /// Whether the API servers take the target.
    pub fn apiserver_at_to(&self) -> bool {
        self.follows(self.progress.etcd)
    }

    /// The API servers as applied.
    pub fn apiserver_applied(&mut self, apiserver: &Rollout) {
        self.progress.apiserver = self.passed(UpgradeStep::APIServer)
            || (self.apiserver_at_to() && !self.rolled_back() && apiserver.replaced());
    }

    /// Whether the controller-manager and the scheduler take the target.
    pub fn managers_at_to(&self) -> bool {
        self.follows(self.progress.apiserver)
    }

    /// The version whose replicas must lead (hold the leader Leases) for
    /// the managers' step to be done, once both have rolled; `None` when
    /// there is nothing to ask.
    pub fn leaders_to_check(
        &self,
        controller_manager: &Rollout,
        scheduler: &Rollout,
    ) -> Option<&'a str> {
        let rolled = self.managers_at_to() && controller_manager.replaced() && scheduler.replaced();
        self.change
            .filter(|_| rolled && !self.passed(UpgradeStep::ControllerManagerAndScheduler))
            .map(|c| c.to.version.as_str())
    }

    /// Whether replicas of the target version lead (see
    /// [`Steps::leaders_to_check`]).
    pub fn managers_led(&mut self, led: bool) {
        self.progress.managers = self.passed(UpgradeStep::ControllerManagerAndScheduler) || led;
    }

    /// Whether CoreDNS takes the target.
    pub fn addons_at_to(&self) -> bool {
        self.follows(self.progress.managers)
    }

    /// CoreDNS as applied.
    pub fn addons_applied(&mut self, coredns: &Rollout) {
        self.progress.addons =
            self.passed(UpgradeStep::Addons) || (self.addons_at_to() && coredns.replaced());
    }

    /// Whether every pool that follows the cluster runs the target.
    pub fn pools_run(&mut self, run: bool) {
        self.progress.pools = self.change.is_some() && run;
    }

    /// The record of the change after this pass (or the one kept from
    /// `previous` when none is under way).
    pub fn record(
        self,
        spec: &VirtualClusterSpec,
        previous: Option<&VirtualClusterStatus>,
        now: &Time,
    ) -> Option<UpgradeStatus> {
        match self.change {
            Some(c) => Some(c.advance(&self.progress, self.rollback, now)),
            None => super::kept(spec, previous),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::upgrade::Target;
    use nestor_crds::ImagesSpec;

    fn change(step: UpgradeStep) -> Change {
        let target = |version: &str| Target {
            version: version.into(),
            images: ImagesSpec::default(),
        };
        Change {
            from: target("1.34.5"),
            to: target("1.35.4"),
            record: UpgradeStatus {
                from: "1.34.5".into(),
                from_images: ImagesSpec::default(),
                to: "1.35.4".into(),
                target: "target".into(),
                step,
                started_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                api_server_started_at: None,
                snapshot: None,
                message: None,
            },
        }
    }

    fn rollout(replaced: bool) -> Rollout {
        Rollout {
            desired: 1,
            ready: 1,
            updated: i32::from(replaced),
            observed: true,
            version: None,
            outdated: i32::from(!replaced),
        }
    }

    /// The forms of etcd, the API servers, the managers and CoreDNS in one
    /// pass, each step fed `done` rollouts for the steps marked so.
    fn forms(change: Option<&Change>, snapshot: Snapshot, done: [bool; 4]) -> [bool; 4] {
        let mut steps = Steps::new(change);
        steps.snapshot(snapshot);
        let etcd = steps.etcd_at_to();
        steps.etcd_applied(&rollout(done[0]));
        let apiserver = steps.apiserver_at_to();
        steps.apiserver_applied(&rollout(done[1]));
        let managers = steps.managers_at_to();
        let ask = steps.leaders_to_check(&rollout(done[2]), &rollout(done[2]));
        steps.managers_led(ask.is_some());
        let addons = steps.addons_at_to();
        [etcd, apiserver, managers, addons]
    }

    /// The step recorded, the snapshot, which steps' rollouts are done,
    /// and the forms wanted.
    type Case = (Option<UpgradeStep>, Snapshot, [bool; 4], [bool; 4]);

    #[test]
    fn each_step_takes_the_target_once_the_steps_before_it_are_done() {
        use Snapshot::{Failed, NotNeeded, Running, Taken};
        use UpgradeStep::{Addons, Complete, ControllerManagerAndScheduler, Etcd, RolledBack};
        let taken = || Taken("snapshots/1".into());
        let none = [false; 4];
        #[rustfmt::skip]
        let cases: [Case; 10] = [
            // No change: everything as asked.
            (None, NotNeeded, none, [true; 4]),
            // The snapshot runs: nothing moves yet.
            (Some(UpgradeStep::Snapshot), Running, none, none),
            (Some(UpgradeStep::Snapshot), Failed("full".into()), none, none),
            // Taken: etcd moves; the API servers wait for it.
            (Some(UpgradeStep::Snapshot), taken(), none, [true, false, false, false]),
            (Some(UpgradeStep::Snapshot), taken(), [true, false, false, false], [true, true, false, false]),
            // Every step rolled in this pass: each follows the last.
            (Some(Etcd), NotNeeded, [true, true, true, false], [true; 4]),
            // Past the API servers (recorded), the managers move at once.
            (Some(ControllerManagerAndScheduler), NotNeeded, none, [true, true, true, false]),
            (Some(Addons), NotNeeded, none, [true; 4]),
            (Some(Complete), NotNeeded, none, [true; 4]),
            // Rolled back: etcd keeps what it runs; the rest run the old form.
            (Some(RolledBack), NotNeeded, [true; 4], [true, false, false, false]),
        ];
        for (step, snapshot, done, want) in cases {
            let change = step.map(change);
            let what = format!("{step:?} {snapshot:?} {done:?}");
            assert_eq!(forms(change.as_ref(), snapshot, done), want, "{what}");
        }
    }

    #[test]
    fn an_overdue_api_server_that_does_not_serve_rolls_everything_back() {
        let mut c = change(UpgradeStep::APIServer);
        let started = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        c.record.api_server_started_at = Some(started);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let timeout = Duration::from_secs(60);
        for (serving, rolled_back) in [(false, true), (true, false)] {
            let mut steps = Steps::new(Some(&c));
            steps.etcd_applied(&rollout(true));
            steps.roll_back_if_overdue(timeout, "1m", &now, serving);
            assert_eq!(!steps.apiserver_at_to(), rolled_back, "serving: {serving}");
            let record = steps.record(&Default::default(), None, &now).unwrap();
            assert_eq!(record.step == UpgradeStep::RolledBack, rolled_back);
        }
    }

    #[test]
    fn the_managers_step_asks_who_leads_only_once_both_rolled() {
        // The steps before it are recorded as passed.
        let at_managers = |c| {
            let mut steps = Steps::new(c);
            steps.etcd_applied(&rollout(false));
            steps.apiserver_applied(&rollout(false));
            steps
        };
        let (rolled, rolling) = (rollout(true), rollout(false));
        let c = change(UpgradeStep::ControllerManagerAndScheduler);
        let steps = at_managers(Some(&c));
        assert_eq!(steps.leaders_to_check(&rolled, &rolling), None);
        assert_eq!(steps.leaders_to_check(&rolled, &rolled), Some("1.35.4"));
        let passed = change(UpgradeStep::Addons);
        let steps = at_managers(Some(&passed));
        assert_eq!(steps.leaders_to_check(&rolled, &rolled), None);
        let steps = at_managers(None);
        assert_eq!(steps.leaders_to_check(&rolled, &rolled), None);
    }
}
