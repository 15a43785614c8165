//! Hostile and invalid input, as a platform team and a hostile tenant
//! would send it: a table of cases over every field of both kinds. Each
//! case says what must happen: refused by the API server (schema and CEL
//! rules), or admitted and reported `InvalidSpec` with a message that
//! names the field. No case may leave a child behind.
//!
//! Longer than most files: the table is the test.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use nestor_crds::{NodePool, VirtualCluster};
use nestor_e2e::harness::integration::{Env, Scenario, condition, converged};
use nestor_e2e::support::{vc_yaml, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// What must happen to a case.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The API server refuses the create; its message holds this.
    Refused(&'static str),
    /// Admitted, then reported `Ready=False/InvalidSpec` with a message
    /// that holds this.
    Invalid(&'static str),
}
use Expect::{Invalid, Refused};

struct Case {
    name: String,
    spec: Value,
    expect: Expect,
}

fn x(n: usize) -> String {
    "x".repeat(n)
}

/// Cases of `VirtualCluster`s: (name, spec, expected).
fn cluster_cases() -> Vec<(String, Value, Expect)> {
    let mut cases: Vec<(String, Value, Expect)> = Vec::new();
    let mut add = |spec: Value, expect: Expect| {
        let name = format!("h-{:03}", cases.len());
        cases.push((name, spec, expect));
    };
    let mut named = Vec::new();
    // Names that are legal for the kind but not for its children.
    for (name, expect) in [
        ("h.dot", Refused("the name must be a DNS label")),
        ("9lead", Refused("the name must be a DNS label")),
        (
            "h-toolong-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Refused("at most 40 characters"),
        ),
    ] {
        named.push((name.to_string(), json!({}), expect));
    }
    // Version.
    for (v, expect) in [
        (json!("v1.35.4"), Refused("spec.version")),
        (json!("1.35"), Refused("spec.version")),
        (json!("banana"), Refused("spec.version")),
        (json!("1.035.0"), Refused("no leading zeros")),
        (json!("1.35.04"), Refused("no leading zeros")),
        (json!(""), Refused("spec.version")),
        (json!(135), Refused("spec.version")),
        (
            json!("1.20.0"),
            Invalid("spec.version: 1.20.0 is not supported"),
        ),
        (
            json!("1.99.0"),
            Invalid("spec.version: 1.99.0 is not supported"),
        ),
    ] {
        add(json!({"version": v}), expect);
    }
    // The API servers' deadline in a version change.
    for t in ["10s", "2h", "10", "1d", "-5m", "1m30"] {
        add(
            json!({"upgrade": {"apiServerTimeout": t}}),
            Refused("upgrade apiServerTimeout must be a duration from 30s to 1h"),
        );
    }
    // etcd.
    for (etcd, expect) in [
        (json!({"replicas": 0}), Refused("spec.etcd.replicas")),
        (
            json!({"replicas": 2}),
            Refused("etcd replicas must be 1, 3 or 5"),
        ),
        (
            json!({"replicas": 4}),
            Refused("etcd replicas must be 1, 3 or 5"),
        ),
        (json!({"replicas": -1}), Refused("spec.etcd.replicas")),
        (json!({"replicas": "three"}), Refused("spec.etcd.replicas")),
        (json!({"storage": "1"}), Refused("at least 64Mi")),
        (json!({"storage": "1Gb"}), Refused("spec.etcd.storage")),
        (json!({"storage": "-1Gi"}), Refused("spec.etcd.storage")),
        (json!({"storage": "0"}), Refused("spec.etcd.storage")),
        (json!({"storage": ""}), Refused("spec.etcd.storage")),
        (json!({"storage": x(40)}), Refused("spec.etcd.storage")),
        (
            json!({"storageClassName": "Fast_SSD"}),
            Refused("spec.etcd.storageClassName"),
        ),
        (
            json!({"storageClassName": x(300)}),
            Refused("spec.etcd.storageClassName"),
        ),
        (
            json!({"storageClassName": "with space"}),
            Refused("spec.etcd.storageClassName"),
        ),
        (
            json!({"storageClassName": ""}),
            Refused("spec.etcd.storageClassName"),
        ),
        (
            json!({"resources": {"requests": {"cpu": "lots"}}}),
            Invalid("spec.etcd.resources.requests.cpu: 'lots' is not a Kubernetes quantity"),
        ),
        (
            json!({"resources": {"requests": {"cpu": "-1"}}}),
            Invalid("spec.etcd.resources.requests.cpu: '-1' is negative"),
        ),
        (
            json!({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}),
            Invalid("spec.etcd.resources.limits.memory: 1Gi is below its request (2Gi)"),
        ),
        (
            json!({"resources": {"claims": [{"name": "gpu"}]}}),
            Invalid("spec.etcd.resources.claims"),
        ),
        (
            json!({"resources": {"limits": {"nvidia.com/gpu": "1"}}}),
            Invalid("spec.etcd.resources.limits: 'nvidia.com/gpu' is not a resource"),
        ),
    ] {
        add(json!({"etcd": etcd}), expect);
    }
    // The API server and its flags.
    for (api, expect) in [
        (json!({"replicas": 0}), Refused("spec.apiServer.replicas")),
        (json!({"replicas": 6}), Refused("spec.apiServer.replicas")),
        (
            json!({"exposure": "Ingress"}),
            Refused("spec.apiServer.exposure"),
        ),
        (
            json!({"certSANs": vec!["a.example"; 33]}),
            Refused("spec.apiServer.certSANs"),
        ),
        (
            json!({"certSANs": [x(300)]}),
            Refused("spec.apiServer.certSANs"),
        ),
        (
            json!({"certSANs": ["not a name!"]}),
            Invalid(
                "spec.apiServer.certSANs: 'not a name!' is neither an IP address nor a DNS name",
            ),
        ),
        (
            json!({"extraArgs": {"v": x(2000)}}),
            Refused("spec.apiServer.extraArgs"),
        ),
        (
            json!({"extraArgs": (0..33).map(|i| (format!("v{i}"), json!("1"))).collect::<serde_json::Map<_, _>>()}),
            Refused("spec.apiServer.extraArgs"),
        ),
        (
            json!({"extraArgs": {"v": "2\n--token-auth-file=/x"}}),
            Invalid(
                "spec.apiServer.extraArgs.v: '2\\n--token-auth-file=/x' holds a control character",
            ),
        ),
        (
            json!({"extraArgs": {"--v": "2"}}),
            Invalid("spec.apiServer.extraArgs: write 'v' without leading dashes"),
        ),
        (
            json!({"extraArgs": {"V": "2"}}),
            Invalid("spec.apiServer.extraArgs: 'V' is not a flag name"),
        ),
        (
            json!({"extraArgs": {"max_requests": "2"}}),
            Invalid("spec.apiServer.extraArgs: 'max_requests' is not a flag name"),
        ),
        (
            json!({"resources": {"requests": {"cpu": "1", "memory": "many"}}}),
            Invalid("spec.apiServer.resources.requests.memory"),
        ),
        (
            json!({"resources": {"limits": {"cpu": "100m"}, "requests": {"cpu": "1"}}}),
            Invalid("spec.apiServer.resources.limits.cpu: 100m is below its request (1)"),
        ),
    ] {
        add(json!({"apiServer": api}), expect);
    }
    for flag in [
        "token-auth-file",
        "etcd-servers-overrides",
        "disable-admission-plugins",
        "admission-control",
        "feature-gates",
        "runtime-config",
        "authentication-token-webhook-config-file",
        "authorization-webhook-config-file",
        "audit-webhook-config-file",
        "audit-log-maxage",
        "oidc-issuer-url",
        "external-hostname",
        "service-account-max-token-expiration",
        "service-account-issuer-discovery-url",
        "kubelet-port",
        "storage-backend",
        "etcd-prefix",
        "secure-port-x",
    ] {
        add(
            json!({"apiServer": {"extraArgs": {flag: "x"}}}),
            Invalid("is not a flag a tenant may set"),
        );
    }
    for flag in [
        "admission-control-config-file",
        "authentication-config",
        "authorization-config",
        "audit-policy-file",
        "audit-log-path",
        "anonymous-auth",
        "encryption-provider-config",
        "egress-selector-config-file",
        "enable-aggregator-routing",
        "authorization-mode",
        "enable-admission-plugins",
        "allow-privileged",
        "requestheader-allowed-names",
        "requestheader-username-headers",
        "etcd-servers",
        "client-ca-file",
        "tls-private-key-file",
        "service-account-key-file",
        "enable-bootstrap-token-auth",
    ] {
        add(
            json!({"apiServer": {"extraArgs": {flag: "x"}}}),
            Invalid("is set by Nestor and cannot be overridden"),
        );
    }
    // The controller-manager and the scheduler.
    for flag in [
        "controllers",
        "leader-elect",
        "kubeconfig",
        "cluster-signing-key-file",
        "root-ca-file",
        "use-service-account-credentials",
    ] {
        add(
            json!({"controllerManager": {"extraArgs": {flag: "x"}}}),
            Invalid("spec.controllerManager.extraArgs"),
        );
    }
    for flag in [
        "node-cidr-mask-size",
        "pv-recycler-pod-template-filepath-nfs",
        "service-account-private-key-file-x",
        "external-cloud-volume-plugin",
    ] {
        add(
            json!({"controllerManager": {"extraArgs": {flag: "x"}}}),
            Invalid("is not a flag a tenant may set"),
        );
    }
    for flag in [
        "config",
        "kubeconfig",
        "leader-elect",
        "authentication-kubeconfig",
        "bind-address",
        "write-config-to",
    ] {
        add(
            json!({"scheduler": {"extraArgs": {flag: "x"}}}),
            Invalid("spec.scheduler.extraArgs"),
        );
    }
    for (spec, expect) in [
        (
            json!({"controllerManager": {"replicas": 0}}),
            Refused("spec.controllerManager.replicas"),
        ),
        (
            json!({"controllerManager": {"replicas": 6}}),
            Refused("spec.controllerManager.replicas"),
        ),
        (
            json!({"controllerManager": {"resources": {"requests": {"cpu": "1.5.5"}}}}),
            Invalid("spec.controllerManager.resources.requests.cpu"),
        ),
        (
            json!({"scheduler": {"replicas": 0}}),
            Refused("spec.scheduler.replicas"),
        ),
        (
            json!({"scheduler": {"resources": {"limits": {"memory": "-5Mi"}}}}),
            Invalid("spec.scheduler.resources.limits.memory: '-5Mi' is negative"),
        ),
        (
            json!({"addons": {"coreDNS": {"replicas": 0}}}),
            Refused("spec.addons.coreDNS.replicas"),
        ),
        (
            json!({"addons": {"coreDNS": {"replicas": 11}}}),
            Refused("spec.addons.coreDNS.replicas"),
        ),
        (
            json!({"addons": {"kubeProxy": {"mode": "ipvs"}}}),
            Refused("spec.addons.kubeProxy.mode"),
        ),
        // Egress allowances (set here by an egress admin: the suite's).
        (
            json!({"allowedEgress": [{"cidr": "10.0.0.5"}]}),
            Refused("allowedEgress cidr must be a CIDR"),
        ),
        (
            json!({"allowedEgress": [{"cidr": "10.0.9.0/24", "ports": [0]}]}),
            Refused("spec.allowedEgress[0].ports[0]"),
        ),
        (
            json!({"allowedEgress": [{"cidr": "169.254.169.254/32", "ports": [80]}]}),
            Invalid(
                "spec.allowedEgress[0].cidr: 169.254.169.254/32 overlaps the link-local range 169.254.0.0/16",
            ),
        ),
        (
            json!({"allowedEgress": [{"cidr": "10.0.0.5/8"}]}),
            Invalid("spec.allowedEgress[0].cidr: \"10.0.0.5/8\" has host bits set"),
        ),
    ] {
        add(spec, expect);
    }
    // Networking.
    for (net, expect) in [
        (
            json!({"podCIDR": "10.0.0.0/33"}),
            Refused("podCIDR must be a CIDR"),
        ),
        (
            json!({"podCIDR": "not-a-cidr"}),
            Refused("spec.networking.podCIDR"),
        ),
        (
            json!({"podCIDR": "10.96.0.0/16"}),
            Refused("must not overlap"),
        ),
        (
            json!({"dnsServiceIP": "10.200.0.10"}),
            Refused("dnsServiceIP must lie inside serviceCIDR"),
        ),
        (
            json!({"dnsServiceIP": "not-an-ip"}),
            Refused("dnsServiceIP must be an IP address"),
        ),
        (
            json!({"clusterDomain": "Bad_Domain"}),
            Refused("spec.networking.clusterDomain"),
        ),
        (
            json!({"clusterDomain": ""}),
            Refused("spec.networking.clusterDomain"),
        ),
        (
            json!({"clusterDomain": x(260)}),
            Refused("spec.networking.clusterDomain"),
        ),
        (
            json!({"podCIDR": "127.0.0.0/16"}),
            Invalid("spec.networking.podCIDR: 127.0.0.0/16 overlaps 127.0.0.0/8, loopback"),
        ),
        (json!({"podCIDR": "169.254.0.0/16"}), Invalid("link-local")),
        (json!({"podCIDR": "224.1.0.0/16"}), Invalid("multicast")),
        (
            json!({"podCIDR": "0.0.0.0/16"}),
            Invalid("the unspecified range"),
        ),
        (
            json!({"serviceCIDR": "127.0.0.0/16", "dnsServiceIP": "127.0.0.10"}),
            Invalid("spec.networking.serviceCIDR: 127.0.0.0/16 overlaps 127.0.0.0/8"),
        ),
        (
            json!({"podCIDR": "10.244.0.0/25"}),
            Invalid("spec.networking.podCIDR: 10.244.0.0/25 is smaller than one node's /24"),
        ),
        (
            json!({"podCIDR": "10.244.0.0/28"}),
            Invalid("is smaller than one node's /24"),
        ),
        (
            json!({"serviceCIDR": "10.96.0.0/30", "dnsServiceIP": "10.96.0.2"}),
            Invalid("spec.networking.serviceCIDR: 10.96.0.0/30 has 4 addresses"),
        ),
        (
            json!({"serviceCIDR": "10.96.0.0/31", "dnsServiceIP": "10.96.0.1"}),
            Invalid("spec.networking.serviceCIDR: 10.96.0.0/31 has 2 addresses"),
        ),
        (
            json!({"serviceCIDR": "fd00::/108", "dnsServiceIP": "fd00::a"}),
            Invalid("IPv4 single-stack"),
        ),
        (
            json!({"podCIDR": "fd00:1::/64"}),
            Invalid("spec.networking.podCIDR: fd00:1::/64 is IPv6"),
        ),
        (
            json!({"dnsServiceIP": "10.96.0.0"}),
            Invalid("spec.networking.dnsServiceIP: 10.96.0.0 is the network or broadcast address"),
        ),
        (
            json!({"dnsServiceIP": "10.111.255.255"}),
            Invalid("is the network or broadcast address"),
        ),
        (
            json!({"dnsServiceIP": "10.96.0.1"}),
            Invalid("spec.networking.dnsServiceIP: 10.96.0.1 is the first service address"),
        ),
        (
            json!({"serviceCIDR": "10.0.0.0/8", "dnsServiceIP": "10.0.0.10", "podCIDR": "192.168.0.0/16"}),
            Invalid("spec.networking.serviceCIDR: 10.0.0.0/8 is too large"),
        ),
    ] {
        add(json!({"networking": net}), expect);
    }
    // Images.
    for (images, expect) in [
        (
            json!({"registry": "https://mirror.example"}),
            Refused("spec.images.registry"),
        ),
        (
            json!({"registry": "Mirror.Example"}),
            Refused("spec.images.registry"),
        ),
        (
            json!({"registry": "mirror example"}),
            Refused("spec.images.registry"),
        ),
        (json!({"registry": ""}), Refused("spec.images.registry")),
        (json!({"registry": x(300)}), Refused("spec.images.registry")),
        (json!({"etcd": "Busybox"}), Refused("spec.images.etcd")),
        (
            json!({"apiServer": "a b"}),
            Refused("spec.images.apiServer"),
        ),
        (
            json!({"controllerManager": x(600)}),
            Refused("spec.images.controllerManager"),
        ),
        (
            json!({"scheduler": "http://r.example/a"}),
            Refused("spec.images.scheduler"),
        ),
        (
            json!({"coreDNS": "r.example/a@sha256:xyz"}),
            Refused("spec.images.coreDNS"),
        ),
        (json!({"node": ""}), Refused("spec.images.node")),
        (
            json!({"registry": "evil.example"}),
            Invalid(
                "spec.images.registry: 'evil.example' is not from a registry this platform allows",
            ),
        ),
        (
            json!({"node": "evil.example/nestor-node:v1.35.4"}),
            Invalid("spec.images.node: 'evil.example/nestor-node:v1.35.4' is not from a registry"),
        ),
        (
            json!({"node": "ghcr.io/nestor-dev/nestor-node:v1.34.5"}),
            Invalid(
                "spec.images.node: 'ghcr.io/nestor-dev/nestor-node:v1.34.5' is not tagged v1.35.4",
            ),
        ),
    ] {
        add(json!({"images": images}), expect);
    }
    for (placement, expect) in [
        (
            json!({"runtimeClassName": "Kata_VM"}),
            Invalid("spec.placement.runtimeClassName: 'Kata_VM' is not a DNS subdomain"),
        ),
        (
            json!({"runtimeClassName": x(300)}),
            Refused("spec.placement.runtimeClassName"),
        ),
        (
            json!({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}),
            Invalid("spec.placement.tolerations[0].value: must be empty with operator Exists"),
        ),
        (
            json!({"tolerations": [{"key": "a", "operator": "Maybe"}]}),
            Refused("spec.placement.tolerations[0].operator"),
        ),
        (
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]}}}}),
            Invalid("'Near' is not an operator here"),
        ),
        (
            json!({"nodeSelector": {"ok": "-bad-"}}),
            Refused("spec.placement.nodeSelector.ok"),
        ),
        // What this platform (no placement.allowed) lets no tenant name:
        // each field at its most dangerous.
        (
            json!({"runtimeClassName": "runc"}),
            Invalid(
                "spec.placement.runtimeClassName: 'runc' is not one this platform allows (allowed: none",
            ),
        ),
        (
            json!({"priorityClassName": "system-node-critical"}),
            Invalid(
                "spec.placement.priorityClassName: 'system-node-critical' is not one this platform allows",
            ),
        ),
        (
            json!({"tolerations": [{"operator": "Exists"}]}),
            Invalid(
                "spec.placement.tolerations[0]: a toleration of every taint is not one this platform allows",
            ),
        ),
        (
            json!({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}),
            Invalid(
                "spec.placement.nodeSelector: the node label 'node-role.kubernetes.io/control-plane' is not one this platform allows",
            ),
        ),
        (
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "etcd"}}}]}}}),
            Invalid("spec.placement.affinity: this platform does not let a spec set affinity"),
        ),
    ] {
        add(json!({"placement": placement}), expect);
    }
    cases.extend(named);
    cases
}

/// Cases of `NodePool`s of the valid cluster `hbase`.
fn pool_cases() -> Vec<(String, Value, Expect)> {
    let base = |extra: Value| {
        let mut spec = json!({"clusterRef": {"name": "hbase"}, "replicas": 0});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        spec
    };
    let mut cases: Vec<(String, Value, Expect)> = Vec::new();
    let mut add = |spec: Value, expect: Expect| {
        let name = format!("p-{:03}", cases.len());
        cases.push((name, spec, expect));
    };
    for (extra, expect) in [
        (
            json!({"clusterRef": {"name": "Hbase"}}),
            Refused("spec.clusterRef.name"),
        ),
        (
            json!({"clusterRef": {"name": "a/b"}}),
            Refused("spec.clusterRef.name"),
        ),
        (
            json!({"clusterRef": {"name": x(50)}}),
            Refused("spec.clusterRef.name"),
        ),
        (json!({"clusterRef": {}}), Refused("spec.clusterRef.name")),
        (json!({"replicas": -1}), Refused("spec.replicas")),
        (json!({"replicas": 1001}), Refused("spec.replicas")),
        (json!({"replicas": "two"}), Refused("spec.replicas")),
        (
            json!({"placement": {"runtimeClassName": "runc", "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}),
            Invalid(
                "spec.placement.tolerations[0]: the taint 'node-role.kubernetes.io/control-plane' is not one this platform allows",
            ),
        ),
        (json!({"version": "1.035.0"}), Refused("no leading zeros")),
        (json!({"version": "v1.35.4"}), Refused("spec.version")),
        (
            json!({"version": "1.36.0"}),
            Invalid("spec.version: 1.36.0 is not supported; this operator runs 1.34.5 and 1.35.4"),
        ),
        (
            json!({"version": "1.33.9"}),
            Invalid("spec.version: 1.33.9 is not supported"),
        ),
        (
            json!({"labels": {"team": "a,evil=1"}}),
            Refused("spec.labels"),
        ),
        (json!({"labels": {"team": x(70)}}), Refused("spec.labels")),
        (
            json!({"labels": (0..33).map(|i| (format!("l{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            Refused("spec.labels"),
        ),
        (
            json!({"labels": {"team": "a b"}}),
            Refused("spec.labels.team"),
        ),
        (
            json!({"labels": {"team": "-a"}}),
            Refused("spec.labels.team"),
        ),
        (
            json!({"labels": {"nestor.dev/node-pool": "other"}}),
            Invalid("spec.labels: 'nestor.dev/node-pool' is under nestor.dev"),
        ),
        (
            json!({"labels": {"x.nestor.dev/a": "b"}}),
            Invalid("is under nestor.dev"),
        ),
        (
            json!({"labels": {"node-role.kubernetes.io/worker": ""}}),
            Invalid("spec.labels: a kubelet may not set 'node-role.kubernetes.io/worker'"),
        ),
        (
            json!({"labels": {"kubernetes.io/hostname": "x"}}),
            Invalid("NodeRestriction"),
        ),
        (
            json!({"labels": {"k8s.io/x": "y"}}),
            Invalid("NodeRestriction"),
        ),
        (
            json!({"labels": {"bad key!": "v"}}),
            Invalid("spec.labels: 'bad key!' is not a label key"),
        ),
        (
            json!({"labels": {"Bad.Prefix/a": "v"}}),
            Invalid("is not a label key"),
        ),
        (
            json!({"labels": {"a/b/c": "v"}}),
            Invalid("is not a label key"),
        ),
        (
            json!({"taints": [{"key": "k", "effect": "Sometimes"}]}),
            Refused("spec.taints[0].effect"),
        ),
        (
            json!({"taints": [{"key": "k"}]}),
            Refused("spec.taints[0].effect"),
        ),
        (
            json!({"taints": [{"effect": "NoSchedule"}]}),
            Refused("spec.taints[0].key"),
        ),
        (
            json!({"taints": [{"key": "k", "value": x(70), "effect": "NoSchedule"}]}),
            Refused("spec.taints[0].value"),
        ),
        (
            json!({"taints": (0..33).map(|i| json!({"key": format!("k{i}"), "effect": "NoSchedule"})).collect::<Vec<_>>()}),
            Refused("spec.taints"),
        ),
        (
            json!({"taints": [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "value": "b", "effect": "NoSchedule"}]}),
            Invalid("spec.taints: 'k' with effect NoSchedule is listed twice"),
        ),
        (
            json!({"taints": [{"key": "bad key!", "effect": "NoExecute"}]}),
            Invalid("spec.taints: 'bad key!' is not a taint key"),
        ),
        (
            json!({"taints": [{"key": "k", "value": "a b", "effect": "NoExecute"}]}),
            Refused("spec.taints[0].value"),
        ),
        (
            json!({"taints": [{"key": "k", "value": "a,b", "effect": "NoSchedule"}]}),
            Refused("spec.taints[0].value"),
        ),
        (
            json!({"resources": {"requests": {"cpu": "lots"}}}),
            Invalid("spec.resources.requests.cpu: 'lots' is not a Kubernetes quantity"),
        ),
        (
            json!({"resources": {"requests": {"cpu": "-100m"}}}),
            Invalid("spec.resources.requests.cpu: '-100m' is negative"),
        ),
        (
            json!({"resources": {"limits": {"memory": "128Mi"}, "requests": {"memory": "256Mi"}}}),
            Invalid("spec.resources.limits.memory: 128Mi is below its request (256Mi)"),
        ),
        (
            json!({"resources": {"limits": {"memory": "1Ti"}}}),
            Invalid(
                "spec.resources.limits.memory: 1Ti is above what this platform lets a node pod use (8Gi",
            ),
        ),
        (
            json!({"resources": {"requests": {"ephemeral-storage": "500Gi"}}}),
            Invalid(
                "spec.resources.requests.ephemeral-storage: 500Gi is above what this platform lets a node pod use (20Gi",
            ),
        ),
        (
            json!({"resources": {"claims": [{"name": "gpu"}]}}),
            Invalid("spec.resources.claims"),
        ),
        (
            json!({"resources": {"limits": {"example.com/dongle": "1"}}}),
            Invalid("spec.resources.limits: 'example.com/dongle' is not a resource"),
        ),
    ] {
        add(base(extra), expect);
    }
    for (name, expect) in [
        ("p.dot", Refused("the name must be a DNS label")),
        ("9pool", Refused("the name must be a DNS label")),
        (
            "p-toolong-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Refused("at most 40 characters"),
        ),
    ] {
        cases.push((name.to_string(), base(json!({})), expect));
    }
    cases
}

fn object(kind: &str, name: &str, spec: &Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "nestor.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

/// Creates every case; returns those the API server admitted.
async fn create_all(
    api: &Api<DynamicObject>,
    kind: &str,
    cases: Vec<(String, Value, Expect)>,
) -> Result<Vec<Case>> {
    let mut admitted = Vec::new();
    for (name, spec, expect) in cases {
        let created = api
            .create(&PostParams::default(), &object(kind, &name, &spec)?)
            .await;
        match (created, expect) {
            (Err(kube::Error::Api(status)), Refused(wanted)) => ensure!(
                status.code == 422 && status.message.contains(wanted),
                "{kind} {name} {spec}: refused, but not as expected ({wanted}): {}",
                status.message
            ),
            (Ok(_), Refused(wanted)) => {
                bail!("{kind} {name} {spec}: admitted; expected a refusal ({wanted})")
            }
            (Err(e), Invalid(_)) => {
                bail!("{kind} {name} {spec}: refused; expected it admitted and reported: {e}")
            }
            (Err(e), Refused(_)) => bail!("{kind} {name}: {e}"),
            (Ok(_), Invalid(_)) => admitted.push(Case { name, spec, expect }),
        }
    }
    Ok(admitted)
}

/// Waits until every admitted case reports `InvalidSpec` with its message.
async fn reported(s: &Scenario<'_>, kind: &'static str, cases: &[Case]) -> Result<()> {
    let api = dynamic(s, kind);
    let expected: Vec<(String, &'static str, String)> = cases
        .iter()
        .filter_map(|case| match case.expect {
            Invalid(wanted) => Some((case.name.clone(), wanted, case.spec.to_string())),
            Refused(_) => None,
        })
        .collect();
    wait_for(&format!("every {kind} case reported"), Duration::from_secs(90), || {
        let (api, expected) = (api.clone(), expected.clone());
        Box::pin(async move {
            for (name, wanted, spec) in &expected {
                let object = api.get(name).await?;
                let ready = object.data["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned());
                let Some(ready) = ready else { return Ok(false) };
                if ready["reason"] != "InvalidSpec" {
                    return Ok(false);
                }
                let message = ready["message"].as_str().unwrap_or_default();
                ensure!(
                    message.contains(wanted),
                    "{kind} {name} {spec}: reported, but the message lacks '{wanted}': {message}"
                );
            }
            Ok(true)
        })
    })
    .await
}

fn dynamic(s: &Scenario<'_>, kind: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "VirtualCluster" => ApiResource::erase::<VirtualCluster>(&()),
        _ => ApiResource::erase::<NodePool>(&()),
    };
    Api::namespaced_with(s.env.client.clone(), &s.namespace, &resource)
}

/// The children in the namespace that carry `label` with one of `values`.
async fn children_of(
    s: &Scenario<'_>,
    label: &str,
    values: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let lp = ListParams::default().labels(label);
    let mut found = Vec::new();
    macro_rules! collect {
        ($kind:ty) => {
            for o in s.api::<$kind>().list_metadata(&lp).await?.items {
                let labels = o.metadata.labels.unwrap_or_default();
                if labels.get(label).is_some_and(|v| values.contains(v)) {
                    found.push(format!(
                        "{} {}",
                        stringify!($kind),
                        o.metadata.name.unwrap_or_default()
                    ));
                }
            }
        };
    }
    collect!(Secret);
    collect!(Service);
    collect!(ConfigMap);
    collect!(NetworkPolicy);
    collect!(StatefulSet);
    collect!(Deployment);
    Ok(found)
}

/// Every case of both kinds; no case leaves a child.
pub(crate) async fn hostile_inputs_are_refused_before_any_write(env: &Env) -> Result<()> {
    let s = env.scenario("hostile").await?;
    s.apply(&vc_yaml("hbase", "{}"))?;
    let clusters = cluster_cases();
    let pools = pool_cases();
    let total = clusters.len() + pools.len();
    ensure!(total >= 150, "only {total} cases");
    let cluster_names: BTreeSet<String> = clusters.iter().map(|c| c.0.clone()).collect();
    let pool_names: BTreeSet<String> = pools.iter().map(|c| c.0.clone()).collect();
    let refused = clusters
        .iter()
        .chain(&pools)
        .filter(|c| matches!(c.2, Refused(_)))
        .count();
    let admitted_clusters =
        create_all(&dynamic(&s, "VirtualCluster"), "VirtualCluster", clusters).await?;
    let admitted_pools = create_all(&dynamic(&s, "NodePool"), "NodePool", pools).await?;
    reported(&s, "VirtualCluster", &admitted_clusters).await?;
    reported(&s, "NodePool", &admitted_pools).await?;
    // Give a late write every chance to show.
    s.settle(Duration::from_secs(2), Duration::from_secs(30))
        .await?;
    let left = children_of(&s, "nestor.dev/cluster", &cluster_names).await?;
    ensure!(left.is_empty(), "children of invalid clusters: {left:?}");
    let left = children_of(&s, "nestor.dev/node-pool", &pool_names).await?;
    ensure!(left.is_empty(), "children of invalid pools: {left:?}");
    // The valid cluster beside them was not held up.
    let base = s.api::<VirtualCluster>().get("hbase").await?;
    ensure!(
        condition(&base, "Ready").is_some_and(|c| c.reason != "InvalidSpec"),
        "the valid cluster was reported invalid"
    );
    eprintln!(
        "hostile inputs: {total} cases, {refused} refused by the API server, {} reported InvalidSpec, 0 children left",
        admitted_clusters.len() + admitted_pools.len()
    );
    Ok(())
}

/// A VirtualCluster stored under a looser schema (written straight into
/// etcd, as an older CRD would have admitted it) stops nothing: it is
/// reported with a Warning Event that names the field (the API server
/// refuses it a status, as it validates the stored spec again), and
/// clusters beside it are reconciled, before and after an operator
/// restart.
pub(crate) async fn unreadable_objects_stop_nothing(env: &Env) -> Result<()> {
    let mut s = env.scenario("unreadable").await?;
    let key = format!("/registry/nestor.dev/virtualclusters/{}/old", s.namespace);
    let stored = json!({
        "apiVersion": "nestor.dev/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {
            "name": "old",
            "namespace": s.namespace,
            "uid": "6a1d3c1e-0000-4000-8000-000000000001",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"etcd": {"replicas": "three"}},
    });
    etcd_put(env, &key, &stored.to_string())?;
    let reported_unreadable = |s: &Scenario<'_>| {
        let events = s.api::<k8s_openapi::api::core::v1::Event>();
        async move {
            wait_for(
                "the unreadable cluster reported",
                Duration::from_secs(60),
                || {
                    let events = events.clone();
                    Box::pin(async move {
                        let lp = ListParams::default().fields("involvedObject.name=old");
                        Ok(events.list(&lp).await?.items.iter().any(|e| {
                            e.reason.as_deref() == Some("InvalidSpec")
                                && e.message.as_deref().is_some_and(|m| {
                                    m.contains("spec.etcd.replicas: cannot be read")
                                })
                        }))
                    })
                },
            )
            .await
        }
    };
    reported_unreadable(&s).await?;
    s.apply(&vc_yaml("beside", "{}"))?;
    converged(&s, "beside", Duration::from_secs(60)).await?;
    s.restart_operator("unreadable-2").await?;
    reported_unreadable(&s).await?;
    s.apply(&vc_yaml("after", "{}"))?;
    converged(&s, "after", Duration::from_secs(60))
        .await
        .context("a cluster created after the restart")?;
    Ok(())
}

/// Writes `value` under `key` straight into the test bed's etcd (its JSON
/// gateway on loopback), bypassing the API server's validation.
fn etcd_put(env: &Env, key: &str, value: &str) -> Result<()> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let body = json!({"key": b64(key), "value": b64(value)}).to_string();
    let url = format!("http://127.0.0.1:{}/v3/kv/put", env.bed.etcd_port);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-X", "POST", &url, "-d", &body])
        .output()?;
    ensure!(
        out.status.success(),
        "etcd put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A tenant who edits a Secret Nestor issued (the admin kubeconfig, to
/// make the operator send its token elsewhere; a component's kubeconfig)
/// has it issued again; the operator's own client never reads them.
pub(crate) async fn edited_secrets_are_repaired(env: &Env) -> Result<()> {
    let s = env.scenario("edited").await?;
    s.apply(&vc_yaml("ed", "{}"))?;
    converged(&s, "ed", Duration::from_secs(60)).await?;
    let hostile = "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: x, user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\ncurrent-context: x\n";
    for (secret, key) in [
        ("ed-admin-kubeconfig", "kubeconfig"),
        ("ed-scheduler-kubeconfig", "kubeconfig"),
    ] {
        let patch = json!({"stringData": {key: hostile}}).to_string();
        let out = s.kubectl(&["patch", "secret", secret, "--type=merge", "-p", &patch])?;
        ensure!(out.ok, "patching {secret}: {}", out.stderr);
        let secrets = s.api::<Secret>();
        let repaired = wait_for(
            &format!("{secret} issued again"),
            Duration::from_secs(30),
            || {
                let secrets = secrets.clone();
                Box::pin(async move {
                    let live = secrets.get(secret).await?;
                    let text = live
                        .data
                        .and_then(|d| {
                            d.get(key)
                                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        })
                        .unwrap_or_default();
                    Ok(!text.contains("tokenFile") && text.contains("client-certificate-data"))
                })
            },
        )
        .await;
        if let Err(e) = repaired {
            let live = secrets.get_metadata(secret).await?;
            let managers: Vec<_> = live
                .metadata
                .managed_fields
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.manager, m.operation, m.time.map(|t| t.0.to_string())))
                .collect();
            bail!("{e}; its writers: {managers:?}");
        }
    }
    Ok(())
}
