//! Validation, one rule at a time, and a property test over generated
//! specs: never a panic, and every problem names its field.
//!
//! Longer than most files: one test per rule of both kinds.

use super::*;
use nestor_crds::{ClusterReference, NodeTaint, TaintEffect};
use proptest::prelude::*;
use serde_json::json;

/// The operator's defaults: the registries of its default images.
fn registries() -> Platform {
    crate::model::settings::OperatorSettings::default().platform()
}

fn spec() -> VirtualClusterSpec {
    serde_json::from_value(json!({})).unwrap()
}

fn problems(mutate: impl FnOnce(&mut VirtualClusterSpec)) -> String {
    let mut s = spec();
    mutate(&mut s);
    validate_cluster("demo", &s, &registries())
        .unwrap_err()
        .to_string()
}

fn spec_from(value: serde_json::Value) -> VirtualClusterSpec {
    serde_json::from_value(value).unwrap()
}

fn refused(value: serde_json::Value) -> String {
    validate_cluster("demo", &spec_from(value), &registries())
        .unwrap_err()
        .to_string()
}

#[test]
fn empty_spec_is_valid_with_defaults() {
    let valid = validate_cluster("demo", &spec(), &registries()).unwrap();
    assert_eq!(
        valid.version,
        KubeVersion {
            minor: 35,
            patch: 4
        }
    );
    assert_eq!(valid.kubernetes_service_ip.to_string(), "10.96.0.1");
    assert_eq!(valid.dns_service_ip.to_string(), "10.96.0.10");
}

#[test]
fn every_managed_flag_is_refused_by_name() {
    type Args = fn(&mut VirtualClusterSpec) -> &mut std::collections::BTreeMap<String, String>;
    let components: [(&str, &[&str], Args); 3] = [
        ("spec.apiServer.extraArgs", flags::APISERVER, |s| {
            &mut s.api_server.extra_args
        }),
        (
            "spec.controllerManager.extraArgs",
            flags::CONTROLLER_MANAGER,
            |s| &mut s.controller_manager.extra_args,
        ),
        ("spec.scheduler.extraArgs", flags::SCHEDULER, |s| {
            &mut s.scheduler.extra_args
        }),
    ];
    for (field, managed, args) in components {
        for flag in managed {
            let message = problems(|s| {
                args(s).insert(flag.to_string(), "x".into());
            });
            assert!(
                message.contains(&format!("{field}: '{flag}' is set by Nestor")),
                "{flag}: {message}"
            );
        }
    }
}

#[test]
fn extra_args_take_only_allowed_flags_of_bounded_size() {
    for flag in [
        "token-auth-file",
        "etcd-servers-overrides",
        "disable-admission-plugins",
        "admission-control",
        "audit-webhook-config-file",
        // Could switch off the admission API that confines pods, or a gate.
        "runtime-config",
        "feature-gates",
    ] {
        let message = refused(json!({"apiServer": {"extraArgs": {flag: "x"}}}));
        assert!(
            message.contains(&format!(
                "spec.apiServer.extraArgs: '{flag}' is not a flag a tenant may set"
            )),
            "{message}"
        );
    }
    assert!(
        validate_cluster(
            "demo",
            &spec_from(
                json!({"apiServer": {"extraArgs": {"v": "2", "max-requests-inflight": "800"}},
                "controllerManager": {"extraArgs": {"concurrent-deployment-syncs": "10"}}})
            ),
            &registries()
        )
        .is_ok()
    );
    let newline = refused(json!({"scheduler": {"extraArgs": {"v": "2\n--kubeconfig=/x"}}}));
    assert!(
        newline.contains(
            "spec.scheduler.extraArgs.v: '2\\n--kubeconfig=/x' holds a control character"
        ),
        "{newline}"
    );
    let big = refused(json!({"apiServer": {"extraArgs": {"v": "9".repeat(1_000_000)}}}));
    assert!(
        big.contains("at most 1024") && big.len() < 400,
        "{}",
        big.len()
    );
    let many: serde_json::Map<String, serde_json::Value> = (0..1000)
        .map(|i| (format!("concurrent-{i}-syncs"), json!("1")))
        .collect();
    let many = refused(json!({"controllerManager": {"extraArgs": many}}));
    assert!(many.contains("1000 flags; at most 32"), "{many}");
}

#[test]
fn quantities_are_checked_before_any_write() {
    let cases = [
        (
            json!({"etcd": {"resources": {"requests": {"cpu": "lots"}}}}),
            "spec.etcd.resources.requests.cpu: 'lots' is not a Kubernetes quantity",
        ),
        (
            json!({"apiServer": {"resources": {"requests": {"cpu": "-1"}}}}),
            "spec.apiServer.resources.requests.cpu: '-1' is negative",
        ),
        (
            json!({"scheduler": {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}}}),
            "spec.scheduler.resources.limits.memory: 512Mi is below its request (1Gi)",
        ),
        (
            json!({"controllerManager": {"resources": {"claims": [{"name": "gpu"}]}}}),
            "spec.controllerManager.resources.claims: resource claims are not supported",
        ),
        (
            json!({"etcd": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}),
            "spec.etcd.resources.limits: 'nvidia.com/gpu' is not a resource",
        ),
        (
            json!({"etcd": {"storage": "1"}}),
            "spec.etcd.storage: '1' is less than 64Mi",
        ),
        (
            json!({"etcd": {"storage": "1Gb"}}),
            "spec.etcd.storage: '1Gb' is not a Kubernetes quantity",
        ),
        (
            json!({"etcd": {"storageClassName": "Fast_SSD"}}),
            "spec.etcd.storageClassName: 'Fast_SSD' is not a storage class name",
        ),
        (
            json!({"etcd": {"storageClassName": "a".repeat(300)}}),
            "spec.etcd.storageClassName: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…' is not a storage class name",
        ),
    ];
    for (value, expected) in cases {
        let message = refused(value.clone());
        assert!(message.contains(expected), "{value}: {message}");
    }
}

#[test]
fn names_that_would_make_illegal_children_are_refused() {
    for name in ["demo.x", "1demo", "Demo", "demo-", &"x".repeat(41)] {
        let message = validate_cluster(name, &spec(), &registries())
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("metadata.name: "), "{name}: {message}");
    }
}

#[test]
fn network_ranges_must_be_usable() {
    let cases = [
        (
            json!({"podCIDR": "127.0.0.0/16"}),
            "spec.networking.podCIDR: 127.0.0.0/16 overlaps 127.0.0.0/8, loopback",
        ),
        (json!({"podCIDR": "169.254.0.0/16"}), "link-local"),
        (
            json!({"serviceCIDR": "224.0.0.0/12", "dnsServiceIP": "224.0.0.10"}),
            "multicast",
        ),
        (
            json!({"podCIDR": "10.244.0.0/25"}),
            "spec.networking.podCIDR: 10.244.0.0/25 is smaller than one node's /24",
        ),
        (
            json!({"serviceCIDR": "10.96.0.0/30", "dnsServiceIP": "10.96.0.2"}),
            "spec.networking.serviceCIDR: 10.96.0.0/30 has 4 addresses",
        ),
        (
            json!({"serviceCIDR": "10.96.0.0/31", "dnsServiceIP": "10.96.0.1"}),
            "has 2 addresses",
        ),
        (
            json!({"serviceCIDR": "fd00::/108", "dnsServiceIP": "fd00::a"}),
            "IPv4 single-stack",
        ),
        (
            json!({"podCIDR": "fd00:1::/64"}),
            "spec.networking.podCIDR: fd00:1::/64 is IPv6",
        ),
        (
            json!({"dnsServiceIP": "10.96.0.0"}),
            "spec.networking.dnsServiceIP: 10.96.0.0 is the network or broadcast address",
        ),
        (
            json!({"dnsServiceIP": "10.111.255.255"}),
            "network or broadcast",
        ),
        (
            json!({"dnsServiceIP": "10.96.0.1"}),
            "first service address",
        ),
        (
            json!({"dnsServiceIP": "10.200.0.10"}),
            "outside serviceCIDR",
        ),
        (json!({"podCIDR": "10.96.0.0/16"}), "overlap"),
        (json!({"podCIDR": "10.0.0.0/33"}), "not a CIDR"),
        (
            json!({"serviceCIDR": "10.0.0.0/8", "dnsServiceIP": "10.0.0.10", "podCIDR": "192.168.0.0/16"}),
            "too large",
        ),
        (
            json!({"clusterDomain": "Bad_Domain"}),
            "spec.networking.clusterDomain: 'Bad_Domain' is not a DNS domain",
        ),
    ];
    for (networking, expected) in cases {
        let message = refused(json!({ "networking": networking }));
        assert!(message.contains(expected), "{networking}: {message}");
    }
}

#[test]
fn egress_allowances_are_ranges_outside_link_local() {
    for (allowances, expected) in [
        (
            json!([{"cidr": "10.0.0.5"}]),
            "spec.allowedEgress[0].cidr: \"10.0.0.5\" is not a CIDR",
        ),
        (
            json!([{"cidr": "10.0.9.0/24"}, {"cidr": "10.0.0.5/8"}]),
            "spec.allowedEgress[1].cidr: \"10.0.0.5/8\" has host bits set; did you mean 10.0.0.0/8?",
        ),
        (
            json!([{"cidr": "169.254.169.254/32", "ports": [80]}]),
            "spec.allowedEgress[0].cidr: 169.254.169.254/32 overlaps the link-local range 169.254.0.0/16",
        ),
        (
            json!([{"cidr": "::/0"}]),
            "spec.allowedEgress[0].cidr: \"::/0\" covers every address",
        ),
        (
            json!([{"cidr": "10.0.9.0/24", "ports": [443, 70000]}]),
            "spec.allowedEgress[0].ports: 70000 is not a port (1 to 65535)",
        ),
    ] {
        let message = refused(json!({ "allowedEgress": allowances }));
        assert!(message.contains(expected), "{allowances}: {message}");
    }
    let valid = validate_cluster(
        "demo",
        &spec_from(json!({"allowedEgress": [{"cidr": "10.0.9.0/24", "ports": [443]}]})),
        &registries(),
    )
    .unwrap();
    assert_eq!(valid.allowed_egress[0].cidr.to_string(), "10.0.9.0/24");
    assert_eq!(valid.allowed_egress[0].ports, [443]);
}

#[test]
fn images_and_registries_are_references() {
    for (images, expected) in [
        (
            json!({"registry": "https://mirror.example"}),
            "spec.images.registry: 'https://mirror.example' is not a registry",
        ),
        (json!({"registry": "Mirror.Example"}), "is not a registry"),
        (json!({"registry": "mirror example"}), "is not a registry"),
        (
            json!({"apiServer": "registry.k8s.io/kube-apiserver:v1.35.4 --x"}),
            "spec.images.apiServer",
        ),
        (json!({"node": "HTTP://x/y"}), "spec.images.node"),
        (
            json!({"node": "ghcr.io/nestor-dev/nestor-node:latest"}),
            "spec.images.node: 'ghcr.io/nestor-dev/nestor-node:latest' is not tagged v1.35.4 (the cluster's version)",
        ),
        (
            json!({"node": "ghcr.io/nestor-dev/nestor-node:v1.34.5"}),
            "is not tagged v1.35.4",
        ),
    ] {
        let message = refused(json!({ "images": images }));
        assert!(message.contains(expected), "{images}: {message}");
    }
}

#[test]
fn image_overrides_come_only_from_allowed_registries() {
    for (images, field) in [
        (json!({"registry": "evil.example"}), "spec.images.registry"),
        (
            json!({"etcd": "evil.example/etcd:3.6.5-0"}),
            "spec.images.etcd",
        ),
        // A registry name that only starts like an allowed one.
        (
            json!({"apiServer": "registry.k8s.io.evil.example/kube-apiserver:v1.35.4"}),
            "spec.images.apiServer",
        ),
        (
            json!({"node": "ghcr.io/someone-else/nestor-node:v1.35.4"}),
            "spec.images.node",
        ),
    ] {
        let message = refused(json!({ "images": images }));
        assert!(
            message.contains(&format!("{field}: '"))
                && message.contains(
                    "is not from a registry this platform allows (allowed: registry.k8s.io, ghcr.io/nestor-dev)"
                ),
            "{images}: {message}"
        );
    }
    for images in [
        json!({"registry": "registry.k8s.io"}),
        json!({"registry": "registry.k8s.io/mirror"}),
        json!({"coreDNS": "registry.k8s.io/coredns/coredns:v1.12.1"}),
        json!({"node": "ghcr.io/nestor-dev/nestor-node:v1.35.4"}),
    ] {
        let spec = spec_from(json!({ "images": images }));
        assert!(
            validate_cluster("demo", &spec, &registries()).is_ok(),
            "{images}"
        );
    }
    let mirror = Platform {
        registries: vec!["mirror.example:5000".to_string()],
        ..Platform::default()
    };
    let spec = spec_from(json!({"images": {"registry": "mirror.example:5000"}}));
    assert!(validate_cluster("demo", &spec, &mirror).is_ok());
}

#[test]
fn versions_are_strict_semver() {
    assert!(
        refused(json!({"version": "1.035.0"}))
            .contains("spec.version: '1.035.0' is not MAJOR.MINOR.PATCH")
    );
    assert!(refused(json!({"version": "v1.35.0"})).contains("not MAJOR.MINOR.PATCH"));
    assert!(refused(json!({"version": "1.20.0"})).contains("not supported"));
}

#[test]
fn each_bad_input_gets_a_clear_message() {
    assert!(
        problems(|s| s.etcd.replicas = 2).contains("spec.etcd.replicas: 2; it must be 1, 3 or 5")
    );
    assert!(problems(|s| s.api_server.replicas = 0).contains("spec.apiServer.replicas: 0"));
    assert!(
        problems(|s| {
            s.api_server.extra_args.insert("--v".into(), "2".into());
        })
        .contains("without leading dashes")
    );
    assert!(
        problems(|s| s.api_server.cert_sans.push("not a name!".into()))
            .contains("spec.apiServer.certSANs: 'not a name!' is neither an IP")
    );
}

#[test]
fn a_message_stays_short_whatever_the_spec_holds() {
    let huge = "x".repeat(1 << 20);
    let err = problems(|s| {
        for i in 0..20 {
            s.api_server.cert_sans.push(format!("{huge}{i} !"));
        }
    });
    assert!(err.len() < 2_000, "{}", err.len());
    assert!(err.ends_with("; and 12 more"), "{err}");
}

#[test]
fn several_problems_are_all_reported() {
    let err = problems(|s| {
        s.etcd.replicas = 4;
        s.version = "banana".into();
    });
    assert!(err.contains("1, 3 or 5") && err.contains("banana"), "{err}");
}

fn pool(version: Option<&str>) -> NodePoolSpec {
    NodePoolSpec {
        cluster_ref: ClusterReference {
            name: "demo".into(),
        },
        replicas: 1,
        version: version.map(Into::into),
        ..NodePoolSpec::default()
    }
}

fn taint(key: &str, value: Option<&str>, effect: TaintEffect) -> NodeTaint {
    NodeTaint {
        key: key.into(),
        value: value.map(Into::into),
        effect,
    }
}

#[test]
fn pool_versions_respect_the_skew_policy() {
    assert_eq!(
        validate_pool("p", &pool(None), "1.35.4", &registries()).unwrap(),
        "1.35.4"
    );
    assert_eq!(
        validate_pool("p", &pool(Some("1.34.5")), "1.35.4", &registries()).unwrap(),
        "1.34.5"
    );
    let newer = validate_pool("p", &pool(Some("1.35.4")), "1.34.5", &registries()).unwrap_err();
    assert!(
        newer
            .to_string()
            .contains("spec.version: kubelet version 1.35.4 is newer")
    );
    // Only versions a test here has run (and a node image exists for).
    let untested = validate_pool("p", &pool(Some("1.33.9")), "1.35.4", &registries()).unwrap_err();
    assert!(
        untested.to_string().contains(
            "spec.version: 1.33.9 is not supported; this operator runs 1.34.5 and 1.35.4"
        ),
        "{untested}"
    );
}

#[test]
fn kubelets_never_run_ahead_of_the_api_servers() {
    // Mid-upgrade: the API servers still run 1.35.4, the spec asks 1.36.0.
    assert_eq!(kubelet_version("1.36.0".into(), Some("1.35.4")), "1.35.4");
    assert_eq!(kubelet_version("1.35.5".into(), Some("1.35.4")), "1.35.4");
    // Once they run it, the nodes follow; an older pool stays older.
    assert_eq!(kubelet_version("1.36.0".into(), Some("1.36.0")), "1.36.0");
    assert_eq!(kubelet_version("1.34.2".into(), Some("1.36.0")), "1.34.2");
    // A new cluster has no running version yet.
    assert_eq!(kubelet_version("1.35.4".into(), None), "1.35.4");
    // What cannot be compared is left to validation.
    assert_eq!(kubelet_version("1.35.4".into(), Some("garbage")), "1.35.4");
}

#[test]
fn pool_labels_and_taints_are_checked() {
    let mut p = pool(None);
    p.labels
        .insert("node-role.kubernetes.io/worker".into(), "".into());
    p.labels.insert("team".into(), "a,evil=1".into());
    p.labels
        .insert("nestor.dev/node-pool".into(), "other".into());
    p.labels
        .insert("node.kubernetes.io/pool".into(), "a".into());
    p.taints
        .push(taint("dedicated", Some("a"), TaintEffect::NoSchedule));
    p.taints
        .push(taint("dedicated", Some("b"), TaintEffect::NoSchedule));
    p.taints
        .push(taint("bad key!", None, TaintEffect::NoExecute));
    p.taints
        .push(taint("ok", Some("a b"), TaintEffect::NoExecute));
    let err = validate_pool("p", &p, "1.35.4", &registries())
        .unwrap_err()
        .to_string();
    for expected in [
        "spec.labels: a kubelet may not set 'node-role.kubernetes.io/worker'",
        "spec.labels.team: 'a,evil=1' is not a label value",
        "spec.labels: 'nestor.dev/node-pool' is under nestor.dev",
        "spec.taints: 'dedicated' with effect NoSchedule is listed twice",
        "spec.taints: 'bad key!' is not a taint key",
        "spec.taints: the value 'a b' of 'ok' is not a label value",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    assert!(!err.contains("node.kubernetes.io/pool"), "{err}");
}

#[test]
fn pool_names_and_references_are_dns_labels() {
    let mut p = pool(None);
    p.cluster_ref.name = "Demo/x".into();
    let err = validate_pool("1pool", &p, "1.35.4", &registries())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata.name: '1pool'") && err.contains("spec.clusterRef.name: 'Demo/x'"),
        "{err}"
    );
    p.cluster_ref.name = "demo".into();
    p.resources = Some(
        serde_json::from_value(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "2"}})).unwrap(),
    );
    let err = validate_pool("pool", &p, "1.35.4", &registries())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.resources.limits.cpu: 1 is below its request (2)"),
        "{err}"
    );
}

/// The field paths a problem may start with.
const FIELDS: &[&str] = &["metadata.name: ", "spec."];

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9.-]{0,12}",
        "[ -~]{0,40}",
        "\\PC{0,20}",
        Just("10.96.0.0/30".to_string()),
        Just("fd00::/64".to_string()),
        Just("-1".to_string()),
        Just("1e400".to_string()),
        Just("x".repeat(5000)),
    ]
}

fn hostile_map() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
    proptest::collection::btree_map(hostile_string(), hostile_string(), 0..4)
}

fn resources() -> impl Strategy<Value = serde_json::Value> {
    (hostile_map(), hostile_map())
        .prop_map(|(requests, limits)| json!({"requests": requests, "limits": limits}))
}

prop_compose! {
    fn hostile_spec()(
        version in hostile_string(),
        replicas in -3i32..8,
        storage in hostile_string(),
        class in proptest::option::of(hostile_string()),
        args in hostile_map(),
        sans in proptest::collection::vec(hostile_string(), 0..3),
        pod_cidr in hostile_string(),
        service_cidr in hostile_string(),
        dns in hostile_string(),
        domain in hostile_string(),
        registry in proptest::option::of(hostile_string()),
        image in proptest::option::of(hostile_string()),
        resources in resources(),
    ) -> serde_json::Value {
        json!({
            "version": version,
            "etcd": {"replicas": replicas, "storage": storage, "storageClassName": class, "resources": resources},
            "apiServer": {"replicas": replicas, "extraArgs": args, "certSANs": sans},
            "controllerManager": {"extraArgs": args},
            "networking": {"podCIDR": pod_cidr, "serviceCIDR": service_cidr, "dnsServiceIP": dns, "clusterDomain": domain},
            "images": {"registry": registry, "node": image},
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn validation_never_panics_and_names_every_field(name in hostile_string(), value in hostile_spec()) {
        let spec: VirtualClusterSpec = serde_json::from_value(value).unwrap();
        if let Err(invalid) = validate_cluster(&name, &spec, &registries()) {
            prop_assert!(!invalid.0.is_empty());
            for problem in &invalid.0 {
                prop_assert!(FIELDS.iter().any(|f| problem.starts_with(f)), "{}", problem);
                prop_assert!(problem.len() < 1_000, "{}", problem.len());
            }
            prop_assert!(invalid.to_string().len() < 8_000);
        }
    }

    #[test]
    fn pool_validation_never_panics_and_names_every_field(
        name in hostile_string(),
        cluster in hostile_string(),
        version in proptest::option::of(hostile_string()),
        labels in hostile_map(),
        key in hostile_string(),
        value in proptest::option::of(hostile_string()),
        resources in resources(),
        replicas in -3i32..2000,
    ) {
        let spec = NodePoolSpec {
            cluster_ref: ClusterReference { name: cluster },
            replicas,
            version,
            labels: labels.clone(),
            taints: vec![taint(&key, value.as_deref(), TaintEffect::NoSchedule)],
            resources: serde_json::from_value(resources).ok(),
            placement: nestor_crds::Placement {
                runtime_class_name: Some(key.clone()),
                node_selector: labels,
                tolerations: vec![nestor_crds::PlacementToleration {
                    key: Some(key.clone()),
                    operator: Some(nestor_crds::TolerationOperator::Exists),
                    value: value.clone(),
                    effect: None,
                    toleration_seconds: Some(5),
                }],
                ..Default::default()
            },
        };
        if let Err(invalid) = validate_pool(&name, &spec, "1.35.4", &registries()) {
            for problem in &invalid.0 {
                prop_assert!(FIELDS.iter().any(|f| problem.starts_with(f)), "{}", problem);
                prop_assert!(problem.len() < 1_000, "{}", problem.len());
            }
        }
    }
}

#[test]
fn node_pods_stay_within_the_platforms_limits() {
    let with = |resources: serde_json::Value| {
        let mut spec = pool(None);
        spec.resources = Some(serde_json::from_value(resources).unwrap());
        validate_pool("p", &spec, "1.35.4", &registries())
    };
    assert!(with(json!({"requests": {"memory": "8Gi"}, "limits": {"cpu": "4"}})).is_ok());
    let over = with(json!({
        "requests": {"memory": "9Gi"},
        "limits": {"cpu": "64", "ephemeral-storage": "1Ti"}
    }))
    .unwrap_err()
    .to_string();
    for expected in [
        "spec.resources.requests.memory: 9Gi is above what this platform lets a node pod use (8Gi, Helm value security.nodePodLimits)",
        "spec.resources.limits.cpu: 64 is above",
        "spec.resources.limits.ephemeral-storage: 1Ti is above",
    ] {
        assert!(over.contains(expected), "{expected}: {over}");
    }
}

#[test]
fn the_platforms_node_pod_limits_are_checked_at_start() {
    use crate::model::settings::parse_node_pod_limits;
    let limits = parse_node_pod_limits(r#"{"cpu": "2", "memory": "4Gi"}"#).unwrap();
    assert_eq!(limits["memory"].0, "4Gi");
    for (text, expected) in [
        (r#"{"gpu": "1"}"#, "'gpu' is not one of"),
        (
            r#"{"memory": "lots"}"#,
            "security.nodePodLimits.memory: 'lots'",
        ),
        (r#"{"memory": "0"}"#, "not a quantity above zero"),
        ("[]", "not a map of quantities"),
    ] {
        let error = parse_node_pod_limits(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}
