//! Nestor's egress rules in the node pod: installed once the Node has its
//! pod range, then kept in step with the nested cluster's Nodes (the VXLAN
//! peers) and the endpoints of its API servers and DNS.

use crate::daemons::{output, spawn};
use crate::net::{self, Allowed};
use crate::waits::iptables_succeeds;
use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::process::Command;
use tracing::{info, warn};

pub(crate) async fn run_all(commands: &[Vec<String>]) -> Result<()> {
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
pub(crate) async fn keep_network(
    client: Client,
    own_ip: Ipv4Addr,
    cluster_cidr: Ipv4Net,
) -> Result<()> {
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
pub(crate) fn peer_of(node: &Node) -> Option<Ipv4Addr> {
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
pub(crate) const ALLOWED_SERVICES: &[(&str, &str)] =
    &[("default", "kubernetes"), ("kube-system", "kube-dns")];

pub(crate) fn allowed_endpoints(slices: &[std::sync::Arc<EndpointSlice>]) -> BTreeSet<Allowed> {
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

pub(crate) async fn apply_rules(rules: &str, cluster_cidr: &Ipv4Net) -> Result<()> {
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
