//! The control plane's certificates and keys, and the kubeconfigs of its
//! components.

use super::write;
use crate::kubeconfig::write_client_kubeconfig;
use anyhow::Result;
use k8s_openapi::jiff::Timestamp;
use nestor_controllers::build::mint::Mint;
use nestor_controllers::build::pki::{self, KeyAndCert, LeafRequest, Usage};
use std::path::{Path, PathBuf};

fn write_pair(dir: &Path, stem: &str, pair: &KeyAndCert) -> Result<()> {
    write(&dir.join(format!("{stem}.crt")), &pair.cert_pem)?;
    write(&dir.join(format!("{stem}.key")), &pair.key_pem)
}

/// Writes into `pki_dir` the test bed's CA, the API server's serving
/// certificate (for loopback, the in-cluster names and `api_host`), the
/// service-account key pair and the API server's client certificate for
/// kubelets; returns the CA.
pub(super) fn write_control_plane_pki(pki_dir: &Path, api_host: &str) -> Result<KeyAndCert> {
    let mut mint = Mint::at(Timestamp::now());
    let ca = pki::generate_ca("nestor-testbed-ca", &mut mint)?;
    write_pair(pki_dir, "ca", &ca)?;
    let serving = pki::issue(
        &ca,
        &LeafRequest {
            common_name: "kube-apiserver".into(),
            organizations: vec![],
            dns_names: vec![
                "localhost".into(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
            ],
            ips: vec!["127.0.0.1".parse()?, "10.0.0.1".parse()?, api_host.parse()?],
            usage: Usage::Server,
        },
        &mut mint,
    )?;
    write_pair(pki_dir, "apiserver", &serving)?;
    let sa = pki::generate_ca_bundle("sa", &mut mint)?.service_account;
    write(&pki_dir.join("sa.key"), &sa.private_pem)?;
    write(&pki_dir.join("sa.pub"), &sa.public_pem)?;
    let kubelet_client = pki::issue(
        &ca,
        &LeafRequest::client("kube-apiserver-kubelet-client", &["system:masters"]),
        &mut mint,
    )?;
    write_pair(pki_dir, "apiserver-kubelet-client", &kubelet_client)?;
    Ok(ca)
}

/// The kubeconfigs of the test bed's admin and of the controller-manager
/// and the scheduler.
pub(super) struct ComponentKubeconfigs {
    pub(super) admin: PathBuf,
    pub(super) controller_manager: PathBuf,
    pub(super) scheduler: PathBuf,
}

impl ComponentKubeconfigs {
    /// Issues each user's client certificate from `ca` and writes its
    /// kubeconfig for `server` into `dir`.
    pub(super) fn write(dir: &Path, server: &str, ca: &KeyAndCert) -> Result<Self> {
        let kubeconfig_for = |user: &str, groups: &[&str], file: &str| {
            write_client_kubeconfig(&dir.join(file), server, ca, user, groups)
        };
        Ok(ComponentKubeconfigs {
            admin: kubeconfig_for(
                "nestor-testbed-admin",
                &["system:masters"],
                "admin.kubeconfig",
            )?,
            controller_manager: kubeconfig_for(
                "system:kube-controller-manager",
                &[],
                "controller-manager.kubeconfig",
            )?,
            scheduler: kubeconfig_for("system:kube-scheduler", &[], "scheduler.kubeconfig")?,
        })
    }
}
