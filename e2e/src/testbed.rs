//! A real Kubernetes control plane on loopback: etcd, kube-apiserver,
//! kube-controller-manager (every controller, the garbage collector
//! included) and kube-scheduler, with their own CA, certificates,
//! service-account keys, ports and data directory.

use crate::process::{Lifetime, Proc, spawn};
use crate::{node, paths};
use anyhow::{Context, Result, bail};
use nestor_controllers::build::kubeconfig::{Credentials, render};
use nestor_controllers::build::pki::{self, KeyAndCert, LeafRequest, Usage};
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

fn write_pair(dir: &Path, stem: &str, pair: &KeyAndCert) -> Result<()> {
    write(&dir.join(format!("{stem}.crt")), &pair.cert_pem)?;
    write(&dir.join(format!("{stem}.key")), &pair.key_pem)
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
            node::lock(dir)?;
            if let Err(e) = node::network("up", &dir.join("node")) {
                let _ = node::network("down", &dir.join("node"));
                node::unlock(dir);
                return Err(e);
            }
        }
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;

        // PKI.
        let ca = pki::generate_ca("nestor-testbed-ca")?;
        write_pair(&pki_dir, "ca", &ca)?;
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
        )?;
        write_pair(&pki_dir, "apiserver", &serving)?;
        let sa = pki::generate_ca_bundle("sa")?.service_account;
        write(&pki_dir.join("sa.key"), &sa.private_pem)?;
        write(&pki_dir.join("sa.pub"), &sa.public_pem)?;
        let kubelet_client = pki::issue(
            &ca,
            &LeafRequest::client("kube-apiserver-kubelet-client", &["system:masters"]),
        )?;
        write_pair(&pki_dir, "apiserver-kubelet-client", &kubelet_client)?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://{api_host}:{api_port}");
        let kubeconfig_for = |user: &str, groups: &[&str], file: &str| {
            write_client_kubeconfig(&dir.join(file), &server, &ca, user, groups)
        };
        let admin = kubeconfig_for(
            "nestor-testbed-admin",
            &["system:masters"],
            "admin.kubeconfig",
        )?;
        let cm_config = kubeconfig_for(
            "system:kube-controller-manager",
            &[],
            "controller-manager.kubeconfig",
        )?;
        let sched_config = kubeconfig_for("system:kube-scheduler", &[], "scheduler.kubeconfig")?;

        let mut bed = TestBed {
            dir: dir.to_path_buf(),
            kubeconfig: admin.clone(),
            api_port,
            etcd_port: etcd_client,
            api_host: api_host.clone(),
            processes: Vec::new(),
            keep_logs: false,
            detached: false,
            has_node,
        };
        let p = |f: &str| pki_dir.join(f).display().to_string();

        bed.start_component(
            "etcd",
            &paths::etcd_binary()?,
            &[
                "--name=testbed".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=testbed=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            lifetime,
        )?;

        bed.start_component(
            "kube-apiserver",
            &paths::kube_binary("kube-apiserver")?,
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                format!("--bind-address={api_host}"),
                format!("--advertise-address={api_host}"),
                format!("--secure-port={api_port}"),
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
            ]
            .into_iter()
            .chain(match &options.audit_policy {
                Some(policy) => {
                    write(&dir.join("audit-policy.yaml"), policy)?;
                    vec![
                        format!(
                            "--audit-policy-file={}",
                            dir.join("audit-policy.yaml").display()
                        ),
                        format!("--audit-log-path={}", dir.join("audit.log").display()),
                        "--audit-log-format=json".into(),
                        "--audit-log-mode=blocking".into(),
                    ]
                }
                None => vec![],
            })
            .collect::<Vec<_>>(),
            lifetime,
        )?;

        // The controllers need the API server's bootstrap RBAC.
        bed.write_state()?;
        if let Err(e) = bed.wait_ready(Duration::from_secs(120), false).await {
            bed.keep_logs();
            return Err(e);
        }

        bed.start_component(
            "kube-controller-manager",
            &paths::kube_binary("kube-controller-manager")?,
            &[
                format!("--kubeconfig={}", cm_config.display()),
                format!("--authentication-kubeconfig={}", cm_config.display()),
                format!("--authorization-kubeconfig={}", cm_config.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
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
            ],
            lifetime,
        )?;

        bed.start_component(
            "kube-scheduler",
            &paths::kube_binary("kube-scheduler")?,
            &[
                format!("--kubeconfig={}", sched_config.display()),
                format!("--authentication-kubeconfig={}", sched_config.display()),
                format!("--authorization-kubeconfig={}", sched_config.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
            ],
            lifetime,
        )?;

        bed.write_state()?;
        if let Err(e) = bed.wait_ready(Duration::from_secs(120), true).await {
            // Keep the logs for whoever reads the error.
            bed.keep_logs();
            return Err(e);
        }
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

    async fn start_node(
        &mut self,
        ca: &KeyAndCert,
        server: &str,
        helper: &Path,
        lifetime: Lifetime,
    ) -> Result<()> {
        let started = Instant::now();
        let procs = node::start(&self.dir, server, ca, lifetime)?;
        self.processes.extend(procs);
        self.processes.push(spawn(
            "provisioner",
            helper,
            &[
                "provisioner".into(),
                self.kubeconfig.display().to_string(),
                self.dir.join("volumes").display().to_string(),
            ],
            &[],
            &self.dir.join("logs/provisioner.log"),
            lifetime,
        )?);
        self.write_state()?;
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
                break;
            }
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
            if Instant::now() > deadline {
                bail!(
                    "the node was not Ready within 120s; logs are in {}/logs",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        crate::tools::kubectl_ok(
            &self.kubeconfig,
            &["apply", "-f", "-"],
            Some(&node::addons_yaml()),
        )?;
        crate::tools::kubectl_ok(
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
        node::wait_for_policy_enforcement(&self.dir.join("logs"))?;
        eprintln!(
            "nestor-testbed: node {name} Ready with CoreDNS and NetworkPolicy enforcement in {:.1}s",
            started.elapsed().as_secs_f64()
        );
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

    async fn wait_ready(&mut self, timeout: Duration, controllers: bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.client().await?;
        loop {
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

    /// Stops every process by PID, newest first; with a node, removes
    /// everything the node made on this machine.
    pub fn stop(&mut self) {
        stop_all(&mut self.processes, &self.dir, self.has_node);
        if self.has_node {
            node::unlock(&self.dir);
        }
        if self.detached {
            return;
        }
        if self.keep_logs {
            remove_all_but_logs(&self.dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Stops a detached test bed recorded in `dir` by `nestor-testbed up`.
    pub fn stop_recorded(dir: &Path) -> Result<usize> {
        let text = std::fs::read_to_string(dir.join("pids"))
            .with_context(|| format!("no test bed in {}", dir.display()))?;
        let mut procs: Vec<Proc> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(pid, name)| pid.parse().ok().map(|pid| Proc::from_pid(name, pid)))
            .collect();
        let n = procs.len();
        let has_node = dir.join("node").exists();
        stop_all(&mut procs, dir, has_node);
        if has_node {
            node::unlock(dir);
        }
        std::fs::remove_dir_all(dir)?;
        Ok(n)
    }

    /// Forgets the processes without stopping them (for `up`).
    pub fn detach(mut self) {
        self.processes.clear();
        self.detached = true;
        self.has_node = false;
    }
}

/// Removes everything in a stopped test bed's directory except `logs/`.
fn remove_all_but_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == "logs" {
            continue;
        }
        let _ = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// Stops processes newest first. The node's containers are removed while
/// containerd still runs, and the machine is cleaned after it stops.
fn stop_all(procs: &mut Vec<Proc>, dir: &Path, has_node: bool) {
    while let Some(mut p) = procs.pop() {
        if has_node
            && p.name == "containerd"
            && let Err(e) = node::network("down", &dir.join("node"))
        {
            eprintln!("nestor-testbed: {e:#}");
        }
        p.stop(Duration::from_secs(10));
        if has_node
            && p.name == "containerd"
            && let Err(e) = node::network("down", &dir.join("node"))
        {
            eprintln!("nestor-testbed: {e:#}");
        }
    }
    if has_node {
        // Also when the node never got as far as containerd.
        let _ = node::network("down", &dir.join("node"));
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Issues a client certificate for `user` in `groups` from the test bed's
/// CA and writes a kubeconfig with it to `path`.
pub fn write_client_kubeconfig(
    path: &Path,
    server: &str,
    ca: &KeyAndCert,
    user: &str,
    groups: &[&str],
) -> Result<PathBuf> {
    let cert = pki::issue(ca, &LeafRequest::client(user, groups))?;
    let credentials = Credentials::Certificate {
        cert_pem: &cert.cert_pem,
        key_pem: &cert.key_pem,
    };
    write(
        path,
        &render("nestor-testbed", server, &ca.cert_pem, user, credentials),
    )?;
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
