//! A real Kubernetes control plane on loopback: etcd, kube-apiserver,
//! kube-controller-manager (every controller, the garbage collector
//! included) and kube-scheduler, with their own CA, certificates,
//! service-account keys, ports and data directory.
//!
//! `certs` issues the control plane's certificates and kubeconfigs,
//! `components` builds each component's arguments, `node_setup` joins the
//! real node and its add-ons, and `stop` stops it all.

mod certs;
mod components;
mod node_setup;
mod stop;

pub use crate::kubeconfig::{client_for, write_client_kubeconfig};

use crate::process::{Lifetime, Proc, spawn};
use crate::{node, paths};
use anyhow::{Context, Result, bail};
use certs::ComponentKubeconfigs;
use components::Ports;
use nestor_controllers::build::pki::KeyAndCert;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The service range of the host test cluster.
pub const SERVICE_CIDR: &str = "10.0.0.0/16";

/// A running test bed.
pub struct TestBed {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_port: u16,
    /// etcd's client port on loopback (plain HTTP).
    pub etcd_port: u16,
    /// The API server's address: loopback, or the node's address.
    pub api_host: String,
    processes: Vec<Proc>,
    keep_logs: bool,
    /// Handed over to `nestor-testbed down`: nothing is stopped or removed.
    detached: bool,
    has_node: bool,
}

/// What to start besides the control plane.
#[derive(Clone, Debug, Default)]
pub struct TestBedOptions {
    /// Start a real node (containerd, kubelet, kube-proxy), CoreDNS and a
    /// volume provisioner; the value is the `nestor-testbed` binary, which
    /// runs the provisioner. Needs root.
    pub node: Option<PathBuf>,
    /// An audit policy (YAML) for the API server; the log goes to
    /// `DIR/audit.log`.
    pub audit_policy: Option<String>,
    /// The controller-manager's `--controllers` value; every controller
    /// (`*`) when unset.
    pub controllers: Option<String>,
    /// Serve the API server's `/debug/pprof` (off by default).
    pub profiling: bool,
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl TestBed {
    /// Starts a test bed in `dir` (created; must not hold one already).
    pub async fn start(dir: &Path, lifetime: Lifetime, options: &TestBedOptions) -> Result<Self> {
        let started = Instant::now();
        std::fs::create_dir_all(dir)?;
        let has_node = options.node.is_some();
        let api_host = if has_node {
            node::host_ip().to_string()
        } else {
            "127.0.0.1".to_string()
        };
        if has_node {
            node_setup::take_machine(dir)?;
        }
        // Until the bed exists (and its drop gives the machine back), a
        // failure gives it back here.
        let prepared = (|| {
            let pki_dir = dir.join("pki");
            std::fs::create_dir_all(&pki_dir)?;
            std::fs::create_dir_all(dir.join("logs"))?;
            let ca = certs::write_control_plane_pki(&pki_dir, &api_host)?;
            let ports = Ports::free()?;
            let server = format!("https://{api_host}:{}", ports.api);
            let kubeconfigs = ComponentKubeconfigs::write(dir, &server, &ca)?;
            anyhow::Ok((ca, ports, server, kubeconfigs))
        })();
        let (ca, ports, server, kubeconfigs) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                if has_node {
                    node_setup::release_machine(dir);
                }
                return Err(e);
            }
        };
        let mut bed = TestBed {
            dir: dir.to_path_buf(),
            kubeconfig: kubeconfigs.admin.clone(),
            api_port: ports.api,
            etcd_port: ports.etcd_client,
            api_host,
            processes: Vec::new(),
            keep_logs: false,
            detached: false,
            has_node,
        };
        bed.start_api_server(&ports, options, lifetime).await?;
        bed.start_controllers(&kubeconfigs, options, lifetime)
            .await?;
        if let Some(helper) = &options.node
            && let Err(e) = bed.start_node(&ca, &server, helper, lifetime).await
        {
            bed.keep_logs();
            return Err(e);
        }
        eprintln!(
            "nestor-testbed: control plane ready in {:.1}s at {server}",
            started.elapsed().as_secs_f64()
        );
        Ok(bed)
    }

    /// Starts etcd and the API server, and waits until the API server is
    /// ready: the controllers need its bootstrap RBAC.
    async fn start_api_server(
        &mut self,
        ports: &Ports,
        options: &TestBedOptions,
        lifetime: Lifetime,
    ) -> Result<()> {
        let etcd = components::etcd_args(&self.dir, ports);
        self.start_component("etcd", &paths::etcd_binary()?, &etcd, lifetime)?;
        let binary = paths::kube_binary("kube-apiserver")?;
        if let Some(policy) = &options.audit_policy {
            write(&self.dir.join("audit-policy.yaml"), policy)?;
        }
        let args = components::apiserver_args(&self.dir, &self.api_host, ports, options);
        self.start_component("kube-apiserver", &binary, &args, lifetime)?;
        self.write_state()?;
        if let Err(e) = self.wait_ready(Duration::from_secs(120), false).await {
            self.keep_logs();
            return Err(e);
        }
        Ok(())
    }

    /// Starts the controller-manager and the scheduler, and waits until
    /// the controllers are at work.
    async fn start_controllers(
        &mut self,
        kubeconfigs: &ComponentKubeconfigs,
        options: &TestBedOptions,
        lifetime: Lifetime,
    ) -> Result<()> {
        let binary = paths::kube_binary("kube-controller-manager")?;
        let args = components::controller_manager_args(
            &self.dir,
            &kubeconfigs.controller_manager,
            free_port()?,
            options,
        );
        self.start_component("kube-controller-manager", &binary, &args, lifetime)?;
        let binary = paths::kube_binary("kube-scheduler")?;
        let args = components::scheduler_args(&kubeconfigs.scheduler, free_port()?);
        self.start_component("kube-scheduler", &binary, &args, lifetime)?;
        self.write_state()?;
        if let Err(e) = self.wait_ready(Duration::from_secs(120), true).await {
            // Keep the logs for whoever reads the error.
            self.keep_logs();
            return Err(e);
        }
        Ok(())
    }

    /// Starts one component, logging to `logs/<name>.log`, and records it.
    fn start_component(
        &mut self,
        name: &str,
        binary: &Path,
        args: &[String],
        lifetime: Lifetime,
    ) -> Result<()> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        self.processes
            .push(spawn(name, binary, args, &[], &log, lifetime)?);
        Ok(())
    }

    fn write_state(&self) -> Result<()> {
        let pids: Vec<String> = self
            .processes
            .iter()
            .map(|p| format!("{} {}", p.pid, p.name))
            .collect();
        write(&self.dir.join("pids"), &(pids.join("\n") + "\n"))
    }

    /// Writes a kubeconfig for a client-certificate user of this test bed.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str], file: &str) -> Result<PathBuf> {
        let read = |f: &str| std::fs::read_to_string(self.dir.join("pki").join(f));
        let ca = KeyAndCert {
            cert_pem: read("ca.crt")?,
            key_pem: read("ca.key")?,
        };
        let server = format!("https://{}:{}", self.api_host, self.api_port);
        write_client_kubeconfig(&self.dir.join(file), &server, &ca, user, groups)
    }

    /// A client with the admin credentials.
    pub async fn client(&self) -> Result<kube::Client> {
        client_for(&self.kubeconfig).await
    }

    /// Fails when one of the test bed's processes has exited.
    fn check_alive(&mut self) -> Result<()> {
        for p in self.processes.iter_mut() {
            if !p.alive() {
                bail!(
                    "{} exited; see {}/logs/{}.log",
                    p.name,
                    self.dir.display(),
                    p.name
                );
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, timeout: Duration, controllers: bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.client().await?;
        loop {
            self.check_alive()?;
            let ready = client
                .request_text(http::Request::get("/readyz").body(Vec::new())?)
                .await;
            if matches!(ready.as_deref(), Ok("ok")) {
                if !controllers {
                    return Ok(());
                }
                // The controller-manager is at work once it has made the
                // default ServiceAccount.
                let sa: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                    kube::Api::namespaced(client.clone(), "default");
                if sa.get_opt("default").await.ok().flatten().is_some() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the test bed was not ready within {timeout:?}; logs are in {}/logs",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The test bed's processes by name (etcd, kube-apiserver, ...) and PID.
    pub fn pids(&self) -> Vec<(String, i32)> {
        self.processes
            .iter()
            .map(|p| (p.name.clone(), p.pid))
            .collect()
    }

    /// Keeps the logs after the test bed stops, for whoever reads the
    /// failure; the rest (volumes, etcd data, caches: hundreds of MiB with
    /// a node) goes, so failed runs do not fill the disk.
    pub fn keep_logs(&mut self) {
        self.keep_logs = true;
    }
}
