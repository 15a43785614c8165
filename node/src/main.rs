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

mod daemons;
mod net;
mod rules;
mod waits;

use daemons::Daemons;
use rules::{apply_rules, keep_network};
use waits::{
    wait_for_bootstrap_token, wait_for_file, wait_for_pod_cidr, wait_for_policy_chains,
    wait_for_subnet,
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use ipnet::Ipv4Net;
use kube::Client;
use nestor_crds::node_contract as contract;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use tokio::process::Command;
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
