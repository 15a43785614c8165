//! The versions the operator defaults to are the ones the test bed builds
//! and tests: `e2e/testbed/versions.env` must agree with the Rust
//! constants, or the test bed would prove a version the product never runs.

use nestor_controllers::model::images::{COREDNS_TAG, KONNECTIVITY_TAG, PAUSE_TAG, etcd_tag};
use nestor_controllers::model::validate::{SUPPORTED_VERSIONS, parse_version};
use nestor_crds::DEFAULT_VERSION;
use std::collections::BTreeMap;

fn versions_env() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/testbed/versions.env");
    let text = std::fs::read_to_string(path).expect("e2e/testbed/versions.env");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_test_bed_builds_what_the_operator_defaults_to() {
    let env = versions_env();
    assert_eq!(env["K8S_VERSION"], DEFAULT_VERSION, "Kubernetes");
    let minor = parse_version(DEFAULT_VERSION).expect("a version").minor;
    assert_eq!(
        etcd_tag(minor).split('-').next(),
        Some(env["ETCD_VERSION"].as_str()),
        "etcd"
    );
    assert_eq!(
        COREDNS_TAG,
        format!("v{}", env["COREDNS_VERSION"]),
        "CoreDNS"
    );
    assert_eq!(PAUSE_TAG, env["PAUSE_TAG"], "pause");
    assert_eq!(
        KONNECTIVITY_TAG,
        format!("v{}", env["KONNECTIVITY_VERSION"]),
        "Konnectivity"
    );
}

#[test]
fn the_operator_runs_exactly_the_versions_the_tests_run() {
    // The test bed builds both, and the upgrade tests run both; the
    // previous one's etcd is the current one's (no etcd change to test).
    let env = versions_env();
    let mut tested = vec![
        env["K8S_PREVIOUS_VERSION"].clone(),
        env["K8S_VERSION"].clone(),
    ];
    tested.sort();
    assert_eq!(tested, SUPPORTED_VERSIONS.map(String::from).to_vec());
    let minor = |v: &str| parse_version(v).expect("a version").minor;
    assert_eq!(
        etcd_tag(minor(&env["K8S_PREVIOUS_VERSION"])),
        etcd_tag(minor(&env["K8S_VERSION"]))
    );
}
