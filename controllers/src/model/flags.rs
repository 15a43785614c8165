//! The command-line flags Nestor sets itself, per component. `extraArgs`
//! may set none of them: validation refuses each with a message that names
//! it. Each builder's tests check that every flag it renders is listed
//! here, so a flag added to a builder and forgotten here fails a test
//! instead of being silently overridden or dropped.

/// kube-apiserver.
pub const APISERVER: &[&str] = &[
    "advertise-address",
    "allow-privileged",
    "authorization-mode",
    "bind-address",
    "client-ca-file",
    "enable-admission-plugins",
    "enable-bootstrap-token-auth",
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
