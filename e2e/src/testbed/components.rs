//! The control plane components' command lines.

use super::{SERVICE_CIDR, TestBedOptions, free_port};
use anyhow::Result;
use std::path::Path;

/// The control plane's ports on its host.
pub(super) struct Ports {
    /// etcd's client port.
    pub(super) etcd_client: u16,
    /// etcd's peer port.
    pub(super) etcd_peer: u16,
    /// The API server's secure port.
    pub(super) api: u16,
}

impl Ports {
    /// Free ports for etcd and the API server.
    pub(super) fn free() -> Result<Self> {
        Ok(Ports {
            etcd_client: free_port()?,
            etcd_peer: free_port()?,
            api: free_port()?,
        })
    }
}

/// A file of the test bed's `pki/`, as an argument.
fn pki_file(dir: &Path, file: &str) -> String {
    dir.join("pki").join(file).display().to_string()
}

/// etcd, keeping its data in `DIR/etcd`.
pub(super) fn etcd_args(dir: &Path, ports: &Ports) -> Vec<String> {
    let (client, peer) = (ports.etcd_client, ports.etcd_peer);
    vec![
        "--name=testbed".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster=testbed=http://127.0.0.1:{peer}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

/// The API server on `api_host`, with an audit log when `options` has a
/// policy (written to `DIR/audit-policy.yaml` beforehand).
pub(super) fn apiserver_args(
    dir: &Path,
    api_host: &str,
    ports: &Ports,
    options: &TestBedOptions,
) -> Vec<String> {
    let p = |f: &str| pki_file(dir, f);
    let mut args = vec![
        format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
        format!("--bind-address={api_host}"),
        format!("--advertise-address={api_host}"),
        format!("--secure-port={}", ports.api),
        // Never resolve node names through the machine's resolver.
        "--kubelet-preferred-address-types=InternalIP".into(),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--client-ca-file={}", p("ca.crt")),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--allow-privileged=true".into(),
        format!(
            "--kubelet-client-certificate={}",
            p("apiserver-kubelet-client.crt")
        ),
        format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        format!("--profiling={}", options.profiling),
        "--v=1".into(),
    ];
    if options.audit_policy.is_some() {
        args.extend([
            format!(
                "--audit-policy-file={}",
                dir.join("audit-policy.yaml").display()
            ),
            format!("--audit-log-path={}", dir.join("audit.log").display()),
            "--audit-log-format=json".into(),
            "--audit-log-mode=blocking".into(),
        ]);
    }
    args
}

/// The controller-manager, serving its own endpoints on `port`.
pub(super) fn controller_manager_args(
    dir: &Path,
    kubeconfig: &Path,
    port: u16,
    options: &TestBedOptions,
) -> Vec<String> {
    let p = |f: &str| pki_file(dir, f);
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--service-account-private-key-file={}", p("sa.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        format!("--cluster-signing-cert-file={}", p("ca.crt")),
        format!("--cluster-signing-key-file={}", p("ca.key")),
        "--use-service-account-credentials=true".into(),
        format!(
            "--controllers={}",
            options.controllers.as_deref().unwrap_or("*")
        ),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
    ]
}

/// The scheduler, serving its own endpoints on `port`.
pub(super) fn scheduler_args(kubeconfig: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
    ]
}
