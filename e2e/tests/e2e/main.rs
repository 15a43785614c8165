//! End-to-end tests: Nestor installed with Helm on a test bed with a real
//! node (containerd, kubelet, kube-proxy, CoreDNS), virtual clusters whose
//! pods really run, and clients that use them. Needs root (the node) and
//! the images of `e2e/testbed/build-images.sh`.
//!
//! One test bed serves every test; each test has its own namespace. The
//! harness (`Env`, its test bed and the helpers the tests share) is
//! `nestor_e2e::harness`; this file lists the tests.

mod at_rest;
mod attacks;
mod backup;
mod conformance;
mod control_plane;
mod escapes;
mod network;
mod reach;
mod upgrade;
mod workloads;

use at_rest::secrets_are_encrypted_at_rest_and_requests_audited;
use attacks::*;
use backup::backups_run_on_schedule_and_failures_name_their_cause;
use conformance::upstream_conformance;
use control_plane::{
    delete_leaves_the_host_clean, empty_spec_becomes_ready, helm_install_runs_the_operator,
    nested_cluster_serves_clients, tenants_are_isolated, three_member_etcd_survives_member_loss,
};
use escapes::{
    attack_namespace_labels_through_subresources, attack_webhook_by_url, escape_attacks,
};
use nestor_e2e::harness::e2e::Env;
use network::network_attacks;
use reach::api_server_reaches_its_cluster;
use std::path::PathBuf;
use upgrade::{failed_upgrade_rolls_back, upgrade_follows_the_skew_policy};
use workloads::{node_pools_scale_drain_and_restart, workloads_run_on_nested_nodes};

fn main() -> std::process::ExitCode {
    let dir = std::env::temp_dir().join(format!("nestor-e2e-{}", std::process::id()));
    // The `nestor-testbed` binary runs the test bed's node.
    let node = PathBuf::from(env!("CARGO_BIN_EXE_nestor-testbed"));
    let code = nestor_e2e::suite::run_with(
        nestor_e2e::tests![
            helm_install_runs_the_operator,
            empty_spec_becomes_ready,
            nested_cluster_serves_clients,
            three_member_etcd_survives_member_loss,
            tenants_are_isolated,
            delete_leaves_the_host_clean,
            workloads_run_on_nested_nodes,
            node_pools_scale_drain_and_restart,
            upgrade_follows_the_skew_policy,
            failed_upgrade_rolls_back,
            api_server_reaches_its_cluster,
            secrets_are_encrypted_at_rest_and_requests_audited,
            backups_run_on_schedule_and_failures_name_their_cause,
            network_attacks,
            escape_attacks,
            attack_namespace_labels_through_subresources,
            attack_webhook_by_url,
            attack_privileged_pod,
            attack_capability_sys_admin,
            attack_capability_net_admin,
            attack_capability_sys_ptrace,
            attack_capability_sys_module,
            attack_host_path_root,
            attack_host_network,
            attack_host_pid,
            attack_host_ipc,
            attack_unmasked_proc_mount,
            attack_unsafe_sysctl,
            attack_host_path_persistent_volume,
            attack_namespace_labelled_privileged,
            attack_delete_enforcing_objects,
            attack_edit_enforcing_objects,
            attack_grant_through_cluster_role_binding,
            attack_grant_through_aggregated_cluster_role,
            attack_mutating_webhook,
            attack_impersonate_system_masters,
            attack_certificate_for_system_masters,
            attack_reach_tenant_b_and_the_host,
            attack_anonymous_requests,
            attack_expired_bootstrap_token,
            attack_token_file_in_the_admin_kubeconfig,
            attack_image_from_an_unlisted_registry,
            attack_revoked_admin_credential,
            tenant_admin_installs_a_chart,
            upstream_conformance,
        ],
        // Four ginkgo processes on two cores would starve other tests'
        // waits.
        &["upstream_conformance"],
        || Env::setup(&dir, node),
        Env::keep_logs,
    );
    if let Some(summary) = nestor_e2e::harness::attacks::summary() {
        println!("{summary}");
    }
    if let Some(summary) = nestor_e2e::harness::data::summary() {
        println!("{summary}");
    }
    code
}
