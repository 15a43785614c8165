//! The command-line flags of each component: those Nestor sets itself,
//! and those a tenant may set through `extraArgs`. A tenant may set only
//! flags that change nothing Nestor relies on: no flag that changes
//! authentication, authorization, admission, the datastore, the network
//! Nestor wires, or a file path. Validation refuses every other flag with
//! a message that names it. Each builder's tests check that every flag it
//! renders is in its managed list, so a flag added to a builder and
//! forgotten here fails a test instead of being silently overridden.

/// kube-apiserver. `anonymous-auth` and `authorization-mode` are not
/// rendered: the configuration files behind `authentication-config` and
/// `authorization-config` decide them, and the API server refuses both
/// ways at once.
pub const APISERVER: &[&str] = &[
    "admission-control-config-file",
    "advertise-address",
    "allow-privileged",
    "anonymous-auth",
    "audit-log-format",
    "audit-log-path",
    "audit-policy-file",
    "authentication-config",
    "authorization-config",
    "authorization-mode",
    "bind-address",
    "client-ca-file",
    "egress-selector-config-file",
    "enable-admission-plugins",
    "enable-aggregator-routing",
    "enable-bootstrap-token-auth",
    "encryption-provider-config",
    "endpoint-reconciler-type",
    "etcd-cafile",
    "etcd-certfile",
    "etcd-keyfile",
    "etcd-servers",
    "kubelet-certificate-authority",
    "kubelet-client-certificate",
    "kubelet-client-key",
    "kubelet-preferred-address-types",
    "profiling",
    "proxy-client-cert-file",
    "proxy-client-key-file",
    "requestheader-allowed-names",
    "requestheader-client-ca-file",
    "requestheader-extra-headers-prefix",
    "requestheader-group-headers",
    "requestheader-username-headers",
    "secure-port",
    "service-account-issuer",
    "service-account-jwks-uri",
    "service-account-key-file",
    "service-account-signing-key-file",
    "service-cluster-ip-range",
    "tls-cert-file",
    "tls-private-key-file",
];

/// kube-controller-manager.
pub const CONTROLLER_MANAGER: &[&str] = &[
    "allocate-node-cidrs",
    "authentication-kubeconfig",
    "authentication-tolerate-lookup-failure",
    "authorization-kubeconfig",
    "bind-address",
    "cluster-cidr",
    "cluster-name",
    "cluster-signing-cert-file",
    "cluster-signing-key-file",
    "cluster-signing-kube-apiserver-client-cert-file",
    "cluster-signing-kube-apiserver-client-key-file",
    "cluster-signing-kubelet-client-cert-file",
    "cluster-signing-kubelet-client-key-file",
    "cluster-signing-kubelet-serving-cert-file",
    "cluster-signing-kubelet-serving-key-file",
    "cluster-signing-legacy-unknown-cert-file",
    "cluster-signing-legacy-unknown-key-file",
    "controllers",
    "kubeconfig",
    "leader-elect",
    "profiling",
    "root-ca-file",
    "secure-port",
    "service-account-private-key-file",
    "service-cluster-ip-range",
    "use-service-account-credentials",
];

/// kube-scheduler.
pub const SCHEDULER: &[&str] = &[
    "authentication-kubeconfig",
    "authentication-tolerate-lookup-failure",
    "authorization-kubeconfig",
    "bind-address",
    "kubeconfig",
    "leader-elect",
    "profiling",
    "secure-port",
];

/// Flags a tenant may set on kube-apiserver. An entry ending in `*` allows
/// every flag with that prefix.
pub const APISERVER_ALLOWED: &[&str] = &[
    "cors-allowed-origins",
    "default-not-ready-toleration-seconds",
    "default-unreachable-toleration-seconds",
    "default-watch-cache-size",
    "delete-collection-workers",
    "disabled-metrics",
    "enable-garbage-collector",
    "enable-priority-and-fairness",
    "etcd-compaction-interval",
    "event-ttl",
    "goaway-chance",
    "livez-grace-period",
    "logging-format",
    "max-mutating-requests-inflight",
    "max-requests-inflight",
    "min-request-timeout",
    "request-timeout",
    "service-node-port-range",
    "shutdown-delay-duration",
    "shutdown-send-retry-after",
    "storage-media-type",
    "v",
    "vmodule",
    "watch-cache",
    "watch-cache-sizes",
];

/// Flags a tenant may set on kube-controller-manager.
pub const CONTROLLER_MANAGER_ALLOWED: &[&str] = &[
    "attach-detach-reconcile-sync-period",
    "cluster-signing-duration",
    "concurrent-*",
    "disabled-metrics",
    "enable-garbage-collector",
    "feature-gates",
    "horizontal-pod-autoscaler-*",
    "kube-api-burst",
    "kube-api-qps",
    "large-cluster-size-threshold",
    "leader-elect-lease-duration",
    "leader-elect-renew-deadline",
    "leader-elect-retry-period",
    "logging-format",
    "min-resync-period",
    "node-eviction-rate",
    "node-monitor-grace-period",
    "node-monitor-period",
    "node-startup-grace-period",
    "secondary-node-eviction-rate",
    "terminated-pod-gc-threshold",
    "unhealthy-zone-threshold",
    "v",
    "vmodule",
];

/// Flags a tenant may set on kube-scheduler.
pub const SCHEDULER_ALLOWED: &[&str] = &[
    "disabled-metrics",
    "feature-gates",
    "kube-api-burst",
    "kube-api-qps",
    "leader-elect-lease-duration",
    "leader-elect-renew-deadline",
    "leader-elect-retry-period",
    "logging-format",
    "v",
    "vmodule",
];

/// Whether `allowed` lets a tenant set `flag`.
pub fn allows(allowed: &[&str], flag: &str) -> bool {
    allowed.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => flag.starts_with(prefix) && flag.len() > prefix.len(),
        None => *entry == flag,
    })
}

/// The names of the `--name=value` flags in `rendered`.
pub fn names(rendered: &[String]) -> impl Iterator<Item = &str> {
    rendered
        .iter()
        .filter_map(|f| f.strip_prefix("--"))
        .map(|f| f.split_once('=').map_or(f, |(name, _)| name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_are_sorted_and_without_repeats() {
        for list in [
            super::APISERVER,
            super::CONTROLLER_MANAGER,
            super::SCHEDULER,
        ] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
    }
}
