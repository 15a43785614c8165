//! Integration tests: the real operator binary against a real control plane
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) started
//! by this test binary, under the RBAC identity the Helm chart grants.
//!
//! One test bed serves every test; each test has its own namespace and its
//! own operator process watching only that namespace, so tests run in
//! parallel without seeing each other. Every process dies with this one.
//! The harness (`Env`, `Scenario` and the helpers the tests share) is
//! `nestor_e2e::harness::integration`; this file lists the tests.

mod backup_tool;
mod chart;
mod children;
mod deletion;
mod egress;
mod hostile;
mod invalid;
mod least_privilege;
mod placement;
mod resilience;

use backup_tool::backups_reach_a_real_s3_store_and_fail_with_a_reason;
use chart::{chart_renders_and_rbac_is_least_privilege, crds_install_and_explain};
use children::{
    deleted_child_is_repaired, empty_spec_creates_every_child, spec_edits_roll_out,
    unchanged_object_sends_no_write,
};
use deletion::delete_removes_everything;
use egress::egress_allowances_are_the_platform_admins;
use hostile::{
    edited_secrets_are_repaired, hostile_inputs_are_refused_before_any_write,
    unreadable_objects_stop_nothing,
};
use invalid::invalid_specs_are_refused;
use least_privilege::{
    namespaced_install_runs_clusters_in_its_namespaces_only,
    operator_writes_only_objects_labelled_as_its_own,
};
use nestor_e2e::harness::integration::Env;
use placement::{placement_reaches_every_pod, sandbox_runtime_class_is_the_default_where_present};
use resilience::{
    crash_mid_creation_converges, fifty_clusters_converge, leader_election_fails_over,
};

fn main() -> std::process::ExitCode {
    let dir = std::env::temp_dir().join(format!("nestor-it-{}", std::process::id()));
    nestor_e2e::suite::run(
        nestor_e2e::tests![
            crds_install_and_explain,
            chart_renders_and_rbac_is_least_privilege,
            operator_writes_only_objects_labelled_as_its_own,
            namespaced_install_runs_clusters_in_its_namespaces_only,
            empty_spec_creates_every_child,
            unchanged_object_sends_no_write,
            deleted_child_is_repaired,
            spec_edits_roll_out,
            invalid_specs_are_refused,
            hostile_inputs_are_refused_before_any_write,
            egress_allowances_are_the_platform_admins,
            unreadable_objects_stop_nothing,
            edited_secrets_are_repaired,
            placement_reaches_every_pod,
            sandbox_runtime_class_is_the_default_where_present,
            delete_removes_everything,
            crash_mid_creation_converges,
            leader_election_fails_over,
            fifty_clusters_converge,
            backups_reach_a_real_s3_store_and_fail_with_a_reason,
        ],
        || Env::setup(&dir),
        Env::keep_logs,
    )
}
