//! Kubeconfigs of the test bed's client-certificate users, and clients
//! from kubeconfig files.

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use nestor_controllers::build::kubeconfig::{Credentials, render};
use nestor_controllers::build::mint::Mint;
use nestor_controllers::build::pki::{self, KeyAndCert, LeafRequest};
use std::path::{Path, PathBuf};

/// Issues a client certificate for `user` in `groups` from the test bed's
/// CA and writes a kubeconfig with it to `path`.
pub fn write_client_kubeconfig(
    path: &Path,
    server: &str,
    ca: &KeyAndCert,
    user: &str,
    groups: &[&str],
) -> Result<PathBuf> {
    let mut mint = Mint::at(Timestamp::now());
    let cert = pki::issue(ca, &LeafRequest::client(user, groups), &mut mint)?;
    let credentials = Credentials::Certificate {
        cert_pem: &cert.cert_pem,
        key_pem: &cert.key_pem,
    };
    let text = render("nestor-testbed", server, &ca.cert_pem, user, credentials);
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let text = std::fs::read_to_string(kubeconfig)?;
    let config = kube::config::Kubeconfig::from_yaml(&text)?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}
