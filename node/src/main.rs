//! `nestor-node`: the entry point of a Nestor node pod.
//!
//! It prepares the pod to host containers (mount propagation, sysctls of the
//! pod's own network namespace), starts containerd and the kubelet (which
//! joins the nested cluster by TLS bootstrapping), kube-proxy and
//! Konnectivity's proxy-agent (the API server's way into the cluster). Once
//! the Node has its pod range it installs Nestor's egress rules, starts
//! flanneld (the pod network) and kube-router (the tenant's
//! NetworkPolicies), and writes the CNI configuration only when both stand,
//! so no nested pod runs unconfined. Then it keeps the egress rules in step
//! with the nested cluster's Nodes and control-plane endpoints. If any of
//! the daemons exits, the pod exits too and the host kubelet restarts it;
//! the Node keeps its name, so it comes back as the same Node.

mod net;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use nestor_crds::node_contract as contract;
use net::Allowed;
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// This node's name in the nested cluster (the pod's name).
    #[arg(long, env = contract::NODE_NAME_ENV)]
    node_name: String,
    /// The pod's IP on the host network: the Node's InternalIP and VTEP.
    #[arg(long, env = contract::POD_IP_ENV)]
    pod_ip: Ipv4Addr,
    /// The nested cluster's pod range.
    #[arg(long)]
    cluster_cidr: Ipv4Net,
    /// The nested cluster's Service range (kube-router's firewall lets
    /// pods reach it).
    #[arg(long)]
    service_cidr: Ipv4Net,
    /// Labels the kubelet registers the Node with.
    #[arg(long, default_value = "")]
    node_labels: String,
    /// Where the API servers' Konnectivity proxy servers take agents
    /// (`host:port`, the host name their certificate names).
    #[arg(long)]
    konnectivity_server: String,
    /// Where the operator's configuration is mounted.
    #[arg(long, default_value = contract::CONFIG_DIR)]
    config_dir: PathBuf,
}

/// PIDs of the children this process waits for itself (daemons and the
/// commands it runs); the orphan reaper leaves them alone. Spawning and
/// registering happen under the lock, so a child can never be reaped
/// behind its waiter's back.
static OURS: std::sync::Mutex<Option<HashSet<u32>>> = std::sync::Mutex::new(None);

fn ours() -> std::sync::MutexGuard<'static, Option<HashSet<u32>>> {
    OURS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns a command and registers it as ours.
fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut guard = ours();
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        guard.get_or_insert_with(HashSet::new).insert(pid);
    }
    Ok(child)
}

/// Waits for a registered command's output, then forgets it.
async fn output(child: Child) -> std::io::Result<std::process::Output> {
    let pid = child.id();
    let out = child.wait_with_output().await;
    if let (Some(pid), Some(set)) = (pid, ours().as_mut()) {
        set.remove(&pid);
    }
    out
}

const KUBELET_KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
const KUBELET_CLIENT_CERT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
const CNI_CONF: &str = "/etc/cni/net.d/10-nestor.conflist";
const FLANNEL_NET_CONF: &str = "/run/nestor/flannel/net-conf.json";
const FLANNEL_SUBNET_FILE: &str = "/run/flannel/subnet.env";

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    prepare()?;
    let mut daemons = Daemons::default();
    daemons.start(
        "containerd",
        Command::new("containerd").arg("--config").arg(
            args.config_dir
                .join(contract::NODE_CONFIG_DIR)
                .join(contract::CONTAINERD_CONFIG),
        ),
    )?;
    wait_for_file(Path::new(contract::CONTAINERD_SOCKET), &mut daemons).await?;
    let bootstrap_kubeconfig = args
        .config_dir
        .join(contract::BOOTSTRAP_DIR)
        .join(contract::BOOTSTRAP_KUBECONFIG);
    if !Path::new(KUBELET_CLIENT_CERT).exists() {
        wait_for_bootstrap_token(&bootstrap_kubeconfig, &mut daemons).await?;
    }
    let mut kubelet = Command::new("kubelet");
    kubelet
        .arg(format!(
            "--config={}",
            args.config_dir
                .join(contract::NODE_CONFIG_DIR)
                .join(contract::KUBELET_CONFIG)
                .display()
        ))
        .arg(format!(
            "--bootstrap-kubeconfig={}",
            bootstrap_kubeconfig.display()
        ))
        .arg(format!("--kubeconfig={KUBELET_KUBECONFIG}"))
        .arg("--cert-dir=/var/lib/kubelet/pki")
        .arg(format!("--hostname-override={}", args.node_name))
        .arg(format!("--node-ip={}", args.pod_ip));
    if !args.node_labels.is_empty() {
        kubelet.arg(format!("--node-labels={}", args.node_labels));
    }
    daemons.start("kubelet", &mut kubelet)?;
    // The kubelet writes its kubeconfig before its certificate is issued:
    // wait for the certificate (the nested cluster may not even serve yet).
    wait_for_file(Path::new(KUBELET_KUBECONFIG), &mut daemons).await?;
    wait_for_file(Path::new(KUBELET_CLIENT_CERT), &mut daemons).await?;
    info!("the kubelet has its client certificate");

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(KUBELET_KUBECONFIG)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;

    // kube-proxy uses the node's own credentials (the nested cluster grants
    // nodes what kube-proxy needs).
    if let Some(dir) = Path::new(contract::KUBE_PROXY_KUBECONFIG).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(KUBELET_KUBECONFIG, contract::KUBE_PROXY_KUBECONFIG)?;
    daemons.start(
        "kube-proxy",
        Command::new("kube-proxy")
            .arg(format!(
                "--config={}",
                args.config_dir
                    .join(contract::KUBE_PROXY_DIR)
                    .join(contract::KUBE_PROXY_CONFIG)
                    .display()
            ))
            .arg(format!("--hostname-override={}", args.node_name)),
    )?;

    daemons.start("proxy-agent", &mut proxy_agent(&args)?)?;

    let own_cidr = wait_for_pod_cidr(&client, &args.node_name, &mut daemons).await?;
    info!(pod_cidr = %own_cidr, "setting up the pod network");
    // Fail closed: Nestor's rules stand, allowing nothing yet, before any
    // nested pod can start.
    apply_rules(
        &net::rules(
            &args.cluster_cidr,
            args.pod_ip,
            &BTreeSet::new(),
            &BTreeSet::new(),
        ),
        &args.cluster_cidr,
    )
    .await
    .context("installing the node's egress rules")?;
    std::fs::create_dir_all(
        Path::new(FLANNEL_NET_CONF)
            .parent()
            .unwrap_or(Path::new("/")),
    )?;
    std::fs::write(FLANNEL_NET_CONF, net::flannel_net_conf(&args.cluster_cidr))?;
    daemons.start("flanneld", &mut flanneld(&args))?;
    daemons.start("kube-router", &mut kube_router(&args))?;
    let subnet = wait_for_subnet(&mut daemons).await?;
    // The tenant's NetworkPolicies hold from the first nested pod on: the
    // CNI configuration (which makes the Node Ready) waits for kube-router's
    // first sync.
    wait_for_policy_chains(&mut daemons).await?;
    info!(range = %subnet.range, mtu = subnet.mtu, "the pod network is up");
    std::fs::create_dir_all("/etc/cni/net.d")?;
    std::fs::write(CNI_CONF, net::cni_conflist(&subnet))?;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = keep_network(client, args.pod_ip, args.cluster_cidr) => {
            daemons.stop().await;
            result
        }
        exited = daemons.wait_any() => {
            daemons.stop().await;
            bail!("{exited}")
        }
        _ = terminate.recv() => {
            info!("SIGTERM: stopping the node");
            daemons.stop().await;
            Ok(())
        }
    }
}

/// Konnectivity's agent: it dials the API servers' proxy servers and opens,
/// from inside this node, the connections they ask for (webhooks,
/// aggregated APIs, proxy subresources, this kubelet). It proves itself
/// with the kubelet's client certificate (the file holds the key too) and
/// checks the servers against the cluster's CA. It announces this node's
/// address, so that connections to this kubelet come to it. Its health and
/// admin ports listen on loopback only.
fn proxy_agent(args: &Args) -> Result<Command> {
    let (host, port) = args
        .konnectivity_server
        .rsplit_once(':')
        .context("--konnectivity-server must be host:port")?;
    let ca = args
        .config_dir
        .join(contract::BOOTSTRAP_DIR)
        .join(contract::CA_CERT);
    let mut command = Command::new("proxy-agent");
    command
        .arg(format!("--proxy-server-host={host}"))
        .arg(format!("--proxy-server-port={port}"))
        .arg(format!("--ca-cert={}", ca.display()))
        .arg(format!("--agent-cert={KUBELET_CLIENT_CERT}"))
        .arg(format!("--agent-key={KUBELET_CLIENT_CERT}"))
        .arg(format!("--agent-identifiers=ipv4={}", args.pod_ip))
        .arg("--sync-forever=true")
        .arg("--keepalive-time=30s")
        .arg("--health-server-host=127.0.0.1")
        .arg("--admin-bind-address=127.0.0.1")
        .arg("--enable-profiling=false");
    Ok(command)
}

/// flanneld, the pod network: it takes this node's range from its Node,
/// publishes the node's VTEP in the Node's annotations (with the node's own
/// credentials) and routes the other nodes' ranges over VXLAN through
/// `eth0`. Masquerading and the FORWARD chain are left to Nestor's rules
/// and kube-router; its health port stays off.
fn flanneld(args: &Args) -> Command {
    let mut command = Command::new("flanneld");
    command
        .env("NODE_NAME", &args.node_name)
        .arg("--kube-subnet-mgr")
        .arg(format!("--kubeconfig-file={KUBELET_KUBECONFIG}"))
        .arg("--iface=eth0")
        .arg(format!("--net-config-path={FLANNEL_NET_CONF}"))
        .arg(format!("--subnet-file={FLANNEL_SUBNET_FILE}"))
        .arg("--ip-masq=false")
        .arg("--iptables-forward-rules=false");
    command
}

/// kube-router in firewall-only mode: the tenant's NetworkPolicies, as
/// iptables and ipset rules on the traffic of this node's pods. It reads
/// pods, namespaces and policies with the node's credentials (the nested
/// cluster grants nodes that read); its health and metrics ports are off.
fn kube_router(args: &Args) -> Command {
    let mut command = Command::new("kube-router");
    command
        .arg(format!("--kubeconfig={KUBELET_KUBECONFIG}"))
        .arg(format!("--hostname-override={}", args.node_name))
        .arg("--run-firewall=true")
        .arg("--run-router=false")
        .arg("--run-service-proxy=false")
        .arg("--enable-cni=false")
        .arg("--enable-pod-egress=false")
        .arg("--health-port=0")
        .arg("--metrics-port=0")
        .arg(format!("--service-cluster-ip-range={}", args.service_cidr));
    command
}

/// Makes the pod able to host containers: shared mount propagation (the
/// kubelet and containerd mount volumes into containers) and forwarding in
/// the pod's own network namespace.
fn prepare() -> Result<()> {
    for dir in [
        "/run/containerd",
        "/var/lib/kubelet",
        "/etc/cni/net.d",
        "/run/nestor/ipam",
    ] {
        std::fs::create_dir_all(dir)?;
    }
    let status = std::process::Command::new("mount")
        .args(["--make-rshared", "/"])
        .status()?;
    if !status.success() {
        bail!("mount --make-rshared / failed");
    }
    for (key, value) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
    ] {
        let path = Path::new("/proc/sys").join(key);
        if let Err(e) = std::fs::write(&path, value) {
            warn!(sysctl = key, error = %e, "could not set sysctl");
        }
    }
    Ok(())
}

/// The daemons of a node, stopped in reverse order.
#[derive(Default)]
struct Daemons {
    children: Vec<(&'static str, Child)>,
}

impl Daemons {
    fn start(&mut self, name: &'static str, command: &mut Command) -> Result<()> {
        let child =
            spawn(command.kill_on_drop(true)).with_context(|| format!("starting {name}"))?;
        info!(daemon = name, pid = child.id(), "started");
        self.children.push((name, child));
        Ok(())
    }

    /// Waits until one daemon exits, reaping orphans (the node pod's PID 1
    /// inherits containerd's shims' children) meanwhile.
    async fn wait_any(&mut self) -> String {
        loop {
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return format!("{name} exited: {status}");
                }
            }
            reap_orphans();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn stop(&mut self) {
        while let Some((name, mut child)) = self.children.pop() {
            if let Some(pid) = child.id() {
                // SAFETY: signalling a child we started and have not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
                Ok(_) => info!(daemon = name, "stopped"),
                Err(_) => {
                    warn!(daemon = name, "did not stop in 15 s; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// Reaps zombie children that are not ours to wait for (see `wait_any`).
fn reap_orphans() {
    let guard = ours();
    let empty = HashSet::new();
    let ours = guard.as_ref().unwrap_or(&empty);
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if ours.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<u32>().ok()),
        );
        if state == Some("Z") && ppid == Some(me) {
            // SAFETY: waiting for a zombie child of ours with WNOHANG.
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}

/// How long a node waits for its bootstrap token before it starts the
/// kubelet anyway (which then retries on its own, backing off).
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(600);

/// Waits until the nested API server takes the pool's bootstrap token
/// (Nestor installs it once the control plane is Ready), so that the
/// kubelet bootstraps at once instead of backing off between failures.
/// Asks every 500 ms, for at most [`BOOTSTRAP_WAIT`].
async fn wait_for_bootstrap_token(kubeconfig: &Path, daemons: &mut Daemons) -> Result<()> {
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
async fn wait_until<T, F, Fut>(what: &str, daemons: &mut Daemons, mut ready: F) -> Result<T>
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

async fn wait_for_file(path: &Path, daemons: &mut Daemons) -> Result<()> {
    wait_until(&path.display().to_string(), daemons, || async {
        Ok(path.exists().then_some(()))
    })
    .await
}

async fn wait_for_pod_cidr(client: &Client, name: &str, daemons: &mut Daemons) -> Result<Ipv4Net> {
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
async fn wait_for_subnet(daemons: &mut Daemons) -> Result<net::Subnet> {
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
async fn wait_for_policy_chains(daemons: &mut Daemons) -> Result<()> {
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
async fn iptables_succeeds(args: &[&str]) -> Result<bool> {
    let check = spawn(
        Command::new("iptables")
            .arg("-w")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    Ok(output(check).await?.status.success())
}

async fn run_all(commands: &[Vec<String>]) -> Result<()> {
    for argv in commands {
        let child = spawn(
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped()),
        )?;
        let out = output(child).await?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Keeps the egress rules in step with the nested cluster's nodes and
/// control-plane endpoints.
async fn keep_network(client: Client, own_ip: Ipv4Addr, cluster_cidr: Ipv4Net) -> Result<()> {
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let node_events = reflector(
        nodes_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    // Every event, including the end of the initial list (the store is
    // complete only from then on).
    .default_backoff()
    .map(|_| ());
    let slice_events = reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default()
                .labels("kubernetes.io/service-name in (kubernetes,kube-dns)"),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let mut events = std::pin::pin!(futures::stream::select(node_events, slice_events));
    let mut applied_rules = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            event = events.next() => if event.is_none() { bail!("watches ended") },
            _ = tick.tick() => {}
        }
        // Let a burst of events settle into one sync.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let peers: BTreeSet<Ipv4Addr> = nodes
            .state()
            .iter()
            .filter_map(|n| peer_of(n))
            .filter(|ip| *ip != own_ip)
            .collect();
        let allowed = allowed_endpoints(&slices.state());
        let rules = net::rules(&cluster_cidr, own_ip, &allowed, &peers);
        if rules != applied_rules {
            match apply_rules(&rules, &cluster_cidr).await {
                Ok(()) => {
                    info!(
                        allowed = allowed.len(),
                        peers = peers.len(),
                        "rules applied"
                    );
                    applied_rules = rules;
                }
                Err(e) => warn!(error = %e, "applying the node's rules"),
            }
        }
    }
}

/// A node's address on the host network (its InternalIP).
fn peer_of(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()
}

/// The Services whose endpoints nested pods may reach outside the overlay:
/// the API server's and the cluster DNS's, in their own namespaces only.
const ALLOWED_SERVICES: &[(&str, &str)] = &[("default", "kubernetes"), ("kube-system", "kube-dns")];

fn allowed_endpoints(slices: &[std::sync::Arc<EndpointSlice>]) -> BTreeSet<Allowed> {
    let mut allowed = BTreeSet::new();
    for slice in slices.iter().filter(|s| {
        let namespace = s.metadata.namespace.as_deref().unwrap_or_default();
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(String::as_str)
            .unwrap_or_default();
        ALLOWED_SERVICES.contains(&(namespace, service))
    }) {
        let ports: Vec<(u16, String)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    u16::try_from(p.port?).ok()?,
                    p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                ))
            })
            .collect();
        for endpoint in &slice.endpoints {
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<Ipv4Addr>() else {
                    continue;
                };
                for (port, protocol) in &ports {
                    allowed.insert(Allowed {
                        ip,
                        port: *port,
                        protocol: protocol.clone(),
                    });
                }
            }
        }
    }
    allowed
}

async fn apply_rules(rules: &str, cluster_cidr: &Ipv4Net) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut restore = spawn(
        Command::new("iptables-restore")
            .arg("--noflush")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )?;
    restore
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(rules.as_bytes())
        .await?;
    let out = output(restore).await?;
    if !out.status.success() {
        bail!(
            "iptables-restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for (table, chain, rule) in net::jumps(cluster_cidr) {
        let mut check = vec!["-t", table, "-C", chain];
        check.extend(rule.iter().map(String::as_str));
        let exists = iptables_succeeds(&check).await?;
        if !exists {
            let mut insert = vec![
                "-w".to_string(),
                "-t".into(),
                table.into(),
                "-I".into(),
                chain.into(),
                "1".into(),
            ];
            insert.extend(rule);
            let mut argv = vec!["iptables".to_string()];
            argv.extend(insert);
            run_all(&[argv]).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn slice(namespace: &str, service: &str, ip: &str, port: i32) -> Arc<EndpointSlice> {
        let mut s = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![ip.into()],
                ..Default::default()
            }],
            ports: Some(vec![EndpointPort {
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        s.metadata.namespace = Some(namespace.into());
        s.metadata.labels = Some(BTreeMap::from([(
            "kubernetes.io/service-name".to_string(),
            service.to_string(),
        )]));
        Arc::new(s)
    }

    #[test]
    fn only_the_control_planes_services_open_egress() {
        let allowed = allowed_endpoints(&[
            slice("default", "kubernetes", "10.88.0.4", 6443),
            slice("kube-system", "kube-dns", "10.0.0.53", 53),
            // A tenant's own Services named like them open nothing.
            slice("tenant", "kubernetes", "10.88.0.99", 2379),
            slice("default", "kube-dns", "10.88.0.98", 53),
        ]);
        let ips: Vec<String> = allowed.iter().map(|a| a.ip.to_string()).collect();
        assert_eq!(ips, ["10.0.0.53", "10.88.0.4"]);
    }
}
