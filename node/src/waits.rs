//! What a node waits for before each stage of its start: the pool's
//! bootstrap token, files the kubelet and flanneld write, the Node's pod
//! range, kube-router's chains. Each wait also watches the daemons already
//! running, so that one that exits ends the wait.

use crate::FLANNEL_SUBNET_FILE;
use crate::daemons::{Daemons, output, spawn};
use crate::net;
use anyhow::{Context as _, Result, bail};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;
use tracing::{info, warn};

/// How long a node waits for its bootstrap token before it starts the
/// kubelet anyway (which then retries on its own, backing off).
pub(crate) const BOOTSTRAP_WAIT: Duration = Duration::from_secs(600);

/// Waits until the nested API server takes the pool's bootstrap token
/// (Nestor installs it once the control plane is Ready), so that the
/// kubelet bootstraps at once instead of backing off between failures.
/// Asks every 500 ms, for at most [`BOOTSTRAP_WAIT`].
pub(crate) async fn wait_for_bootstrap_token(
    kubeconfig: &Path,
    daemons: &mut Daemons,
) -> Result<()> {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let deadline = tokio::time::Instant::now() + BOOTSTRAP_WAIT;
    let mut logged = false;
    loop {
        let accepted = csrs
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
            .is_ok();
        if accepted {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                waited = ?BOOTSTRAP_WAIT,
                "the nested cluster has not accepted the bootstrap token; starting the kubelet anyway"
            );
            return Ok(());
        }
        if !logged {
            info!("waiting for the nested cluster to accept the bootstrap token");
            logged = true;
        }
        tokio::select! {
            exited = daemons.wait_any() => bail!("{exited} while waiting for the bootstrap token"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Asks `ready` every 250 ms until it gives a value, failing as soon as
/// one of the daemons exits.
pub(crate) async fn wait_until<T, F, Fut>(
    what: &str,
    daemons: &mut Daemons,
    mut ready: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    loop {
        if let Some(value) = ready().await? {
            return Ok(value);
        }
        tokio::select! {
            exited = daemons.wait_any() => bail!("{exited} while waiting for {what}"),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

pub(crate) async fn wait_for_file(path: &Path, daemons: &mut Daemons) -> Result<()> {
    wait_until(&path.display().to_string(), daemons, || async {
        Ok(path.exists().then_some(()))
    })
    .await
}

pub(crate) async fn wait_for_pod_cidr(
    client: &Client,
    name: &str,
    daemons: &mut Daemons,
) -> Result<Ipv4Net> {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        match nodes.get_opt(name).await {
            Ok(Some(node)) => {
                if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
                    return cidr
                        .parse()
                        .with_context(|| format!("Node {name} has an invalid podCIDR {cidr}"));
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "reading this node"),
        }
        tokio::select! {
            exited = daemons.wait_any() => bail!("{exited} while waiting for the pod range"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Waits for flanneld's subnet file (written once it holds the node's
/// lease and its VXLAN device is up).
pub(crate) async fn wait_for_subnet(daemons: &mut Daemons) -> Result<net::Subnet> {
    wait_until("flannel's subnet", daemons, || async {
        Ok(std::fs::read_to_string(FLANNEL_SUBNET_FILE)
            .ok()
            .as_deref()
            .and_then(net::parse_subnet_env))
    })
    .await
}

/// Waits until kube-router has programmed its chains (it does so once its
/// caches hold every pod, namespace and policy).
pub(crate) async fn wait_for_policy_chains(daemons: &mut Daemons) -> Result<()> {
    wait_until("kube-router's first sync", daemons, || async {
        Ok(
            iptables_succeeds(&["-t", "filter", "-S", "KUBE-ROUTER-FORWARD"])
                .await?
                .then_some(()),
        )
    })
    .await
}

/// Whether `iptables -w args...` succeeds (a check, not a change).
pub(crate) async fn iptables_succeeds(args: &[&str]) -> Result<bool> {
    let check = spawn(
        Command::new("iptables")
            .arg("-w")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    Ok(output(check).await?.status.success())
}
