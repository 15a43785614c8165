//! The real node of a test bed: the machine-wide lock and links it takes,
//! its processes and the volume provisioner, and the add-ons a cluster
//! has beside (CoreDNS, NetworkPolicy enforcement, a StorageClass).

use super::TestBed;
use crate::node;
use crate::process::Lifetime;
use crate::tools::kubectl_ok;
use anyhow::{Result, bail};
use nestor_controllers::build::pki::KeyAndCert;
use std::path::Path;
use std::time::{Duration, Instant};

/// Takes the machine-wide node lock for the test bed in `dir` and sets up
/// the node's links; undoes both when the links fail.
pub(super) fn take_machine(dir: &Path) -> Result<()> {
    node::lock(dir)?;
    if let Err(e) = node::network("up", &dir.join("node")) {
        let _ = node::network("down", &dir.join("node"));
        node::unlock(dir);
        return Err(e);
    }
    Ok(())
}

/// Gives the machine back: the node's links down and the lock released.
pub(super) fn release_machine(dir: &Path) {
    let _ = node::network("down", &dir.join("node"));
    node::unlock(dir);
}

impl TestBed {
    /// Starts the node and the provisioner (the `helper` binary), waits
    /// until the node is Ready, then installs the add-ons and waits for
    /// CoreDNS and NetworkPolicy enforcement.
    pub(super) async fn start_node(
        &mut self,
        ca: &KeyAndCert,
        server: &str,
        helper: &Path,
        lifetime: Lifetime,
    ) -> Result<()> {
        let started = Instant::now();
        let procs = node::start(&self.dir, server, ca, lifetime)?;
        self.processes.extend(procs);
        let provisioner = [
            "provisioner".into(),
            self.kubeconfig.display().to_string(),
            self.dir.join("volumes").display().to_string(),
        ];
        self.start_component("provisioner", helper, &provisioner, lifetime)?;
        self.write_state()?;
        self.wait_node_ready().await?;
        self.install_addons()?;
        eprintln!(
            "nestor-testbed: node {} Ready with CoreDNS and NetworkPolicy enforcement in {:.1}s",
            node::setting("NODE_NAME"),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Waits (up to 120 s) until the node reports Ready.
    async fn wait_node_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        let name = node::setting("NODE_NAME");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = nodes
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.status)
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "the node was not Ready within 120s; logs are in {}/logs",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Applies the add-ons and waits for CoreDNS's rollout and for
    /// kube-router's firewall.
    fn install_addons(&self) -> Result<()> {
        kubectl_ok(
            &self.kubeconfig,
            &["apply", "-f", "-"],
            Some(&node::addons_yaml()),
        )?;
        kubectl_ok(
            &self.kubeconfig,
            &[
                "-n",
                "kube-system",
                "rollout",
                "status",
                "deployment/coredns",
                "--timeout=120s",
            ],
            None,
        )?;
        node::wait_for_policy_enforcement(&self.dir.join("logs"))
    }
}
