//! Network attacks, against the host NetworkPolicies that kube-router
//! enforces on the test bed's node. Tenant A (confined, its own cluster
//! domain) tries from a nested pod, tenant P (in a namespace the platform
//! opted in to privileged pods) from a `hostNetwork` nested pod, to reach
//! tenant B, the host cluster, the operator and a link-local metadata
//! listener, and, by a route of its own, tenant B's nested pods. Every
//! target first answers from the node (and, off the host's
//! pod network, from a host pod no policy selects), so a refusal is the
//! policy's doing, not a dead target. Each attempt counts in the attack
//! suite's summary.

use anyhow::{Result, ensure};
use nestor_e2e::harness::attacks::record;
use nestor_e2e::harness::e2e::{Env, NETWORK_PRIVILEGED_NAMESPACE};
use nestor_e2e::harness::host::{
    component_ip, host_field, host_pod_ip, host_targets, node_connects, pool_ready, service_ip,
};
use nestor_e2e::harness::nested::{
    BUSYBOX, connect_script, connects, default_service_account, exec, nested, nested_apply,
    pool_yaml, wait_nested,
};
use nestor_e2e::node::{TOOLS_IMAGE as TOOLS, node_command, setting};
use nestor_e2e::support::{OPERATOR_NAMESPACE, vc_yaml};
use nestor_e2e::tools::{kubectl, kubectl_ok};
use std::path::Path;
use std::time::{Duration, Instant};

fn probe_yaml(name: &str, image: &str, host_network: bool) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  hostNetwork: {host_network}
  terminationGracePeriodSeconds: 1
  containers:
  - name: probe
    image: {image}
    command: [sleep, '3600']
"
    )
}

/// Runs iptables in the test bed node's network namespace, where every
/// packet a node pod sends arrives (its pod network's bridge).
fn node_iptables(args: &[&str]) -> Result<String> {
    let out = node_command("iptables", args).output()?;
    ensure!(
        out.status.success(),
        "iptables {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A rule that only counts UDP packets from `source` to `target:port`
/// arriving at the node (before any filtering).
struct Counter {
    rule: Vec<String>,
}

impl Counter {
    fn new(protocol: &str, source: &str, target: &str, port: u16) -> Result<Self> {
        let rule: Vec<String> = [
            "PREROUTING",
            "-s",
            source,
            "-d",
            target,
            "-p",
            protocol,
            "--dport",
            &port.to_string(),
            "-m",
            "comment",
            "--comment",
            "nestor-e2e-spoof",
        ]
        .map(String::from)
        .to_vec();
        let mut add = vec!["-t", "raw", "-I"];
        add.extend(rule.iter().map(String::as_str));
        node_iptables(&add)?;
        Ok(Self { rule })
    }

    fn packets(&self) -> Result<u64> {
        let listing = node_iptables(&["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"])?;
        let (source, target, port) = (&self.rule[2], &self.rule[4], &self.rule[8]);
        Ok(listing
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 8
                    && f.contains(&source.as_str())
                    && f.contains(&target.as_str())
                    && l.contains(&format!("dpt:{port}"))
            })
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let mut delete = vec!["-t", "raw", "-D"];
        delete.extend(self.rule.iter().map(String::as_str));
        let _ = node_iptables(&delete);
    }
}

/// hping3 sending three UDP datagrams of 16 bytes to `target:port`, from
/// `source` when given (hping3 exits 1 when nothing answers, as nothing
/// does here).
fn udp_burst(source: Option<&str>, target: &str, port: u16) -> String {
    let spoof = source.map(|s| format!("-a {s} ")).unwrap_or_default();
    format!("hping3 --udp -c 3 -i u200000 -d 16 {spoof}-p {port} {target}; true")
}

/// A busybox pod on the host, in `ns`, selected by no policy.
fn host_probe(env: &Env, ns: &str, name: &str) -> Result<()> {
    kubectl_ok(
        &env.admin,
        &["apply", "-n", ns, "-f", "-"],
        Some(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: probe
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sleep, '3600']
"
        )),
    )?;
    kubectl_ok(
        &env.admin,
        &[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=120s",
        ],
        None,
    )
    .map(|_| ())
}

fn host_sh(env: &Env, ns: &str, pod: &str, script: &str) -> Result<String> {
    kubectl_ok(
        &env.admin,
        &["exec", "-n", ns, pod, "--", "sh", "-c", script],
        None,
    )
}

fn host_connects(env: &Env, ns: &str, pod: &str, ip: &str, port: u16) -> Result<bool> {
    Ok(host_sh(env, ns, pod, &connect_script(ip, port))?.trim() == "open")
}

/// Whether `name` resolves through the pod's DNS: `true` for an address,
/// `false` for `NXDOMAIN`. A lookup that gets no answer at all proves
/// nothing either way, so it is asked again, for at most 90 s; a wait is
/// printed, since the suite has seen a nested pod's DNS go unanswered for
/// over 30 s.
async fn resolves(config: &Path, pod: &str, name: &str) -> Result<bool> {
    let asked = Instant::now();
    let deadline = asked + Duration::from_secs(90);
    let mut attempts = 0;
    loop {
        attempts += 1;
        if attempts == 2 {
            eprintln!("network_attacks: no DNS answer for {name} yet; asking again");
        } else if attempts > 2 && attempts % 10 == 0 {
            eprintln!(
                "network_attacks: still no DNS answer for {name} after {:.0}s",
                asked.elapsed().as_secs_f64()
            );
        }
        let out = exec(config, pod, &format!("nslookup {name} 2>&1; true"))?;
        if out.contains("Name:") {
            return Ok(true);
        }
        if out.contains("NXDOMAIN") {
            return Ok(false);
        }
        ensure!(
            Instant::now() < deadline,
            "no answer for {name} within 90 s: {out}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn operator_ip(env: &Env) -> Result<String> {
    host_field(
        env,
        OPERATOR_NAMESPACE,
        &["pods", "-l", "app.kubernetes.io/name=nestor"],
        "{.items[0].status.podIP}",
    )
}

pub(crate) async fn network_attacks(env: &Env) -> Result<()> {
    let a_ns = env.namespace("net-a")?;
    let b_ns = env.namespace("net-b")?;
    let p_ns = env.namespace(NETWORK_PRIVILEGED_NAMESPACE)?;
    let control_ns = env.namespace("net-control")?;
    let start = Instant::now();
    env.apply(
        &a_ns,
        &[
            vc_yaml("a", "{networking: {clusterDomain: tenant-a.local}}"),
            pool_yaml("nodes", "a", 1, ""),
        ]
        .join("---\n"),
    )?;
    env.apply(
        &b_ns,
        &[vc_yaml("b", "{}"), pool_yaml("nodes", "b", 1, "")].join("---\n"),
    )?;
    env.apply(
        &p_ns,
        &[vc_yaml("p", "{}"), pool_yaml("nodes", "p", 1, "")].join("---\n"),
    )?;
    host_probe(env, &control_ns, "control")?;
    let timeout = Duration::from_secs(300);
    for (ns, vc) in [(&a_ns, "a"), (&b_ns, "b"), (&p_ns, "p")] {
        env.ready(ns, vc, start, timeout).await?;
        pool_ready(env, ns, "nodes", 1, timeout).await?;
    }
    let a = env.nested_kubeconfig(&a_ns, "a").await?;
    let p = env.nested_kubeconfig(&p_ns, "p").await?;
    for (config, host_network) in [(&a, false), (&p, true)] {
        default_service_account(config).await?;
        nested_apply(config, &probe_yaml("probe", BUSYBOX, host_network))?;
        nested_apply(config, &probe_yaml("spoofer", TOOLS, host_network))?;
        nested(
            config,
            &[
                "wait",
                "--for=condition=Ready",
                "pod/probe",
                "pod/spoofer",
                "--timeout=120s",
            ],
        )?;
    }

    let b_etcd = host_pod_ip(env, &b_ns, "b-etcd-0")?;
    let b_apiserver = component_ip(env, &b_ns, "b", "apiserver")?;
    let targets: Vec<(String, String, u16)> = vec![
        ("B's etcd".into(), b_etcd.clone(), 2379),
        ("B's etcd metrics".into(), b_etcd.clone(), 2381),
        (
            "A's own etcd metrics".into(),
            host_pod_ip(env, &a_ns, "a-etcd-0")?,
            2381,
        ),
        (
            "B's API server pod, Konnectivity's agent port".into(),
            b_apiserver.clone(),
            8132,
        ),
        (
            "B's node pod's kubelet".into(),
            host_pod_ip(env, &b_ns, "nodes-node-0")?,
            10250,
        ),
        (
            "B's CoreDNS".into(),
            component_ip(env, &b_ns, "b", "coredns")?,
            1053,
        ),
        (
            "the operator's metrics port".into(),
            operator_ip(env)?,
            8080,
        ),
    ]
    .into_iter()
    .chain(host_targets(env)?)
    .collect();
    // Every target answers from its node (which NetworkPolicy does not
    // filter); those outside the host's pods also answer an unconfined pod,
    // so the pods' path to them is open but for the policies.
    let pod_network: ipnet::Ipv4Net = setting("POD_CIDR").parse()?;
    for (what, ip, port) in &targets {
        ensure!(
            node_connects(ip, *port)?,
            "{what} ({ip}:{port}) does not answer on the node: the test proves nothing"
        );
        if !pod_network.contains(&ip.parse::<std::net::Ipv4Addr>()?) {
            ensure!(
                host_connects(env, &control_ns, "control", ip, *port)?,
                "{what} ({ip}:{port}) does not answer an unconfined pod: the test proves nothing"
            );
        }
    }
    for (config, who) in [
        (&a, "a nested pod of A"),
        (&p, "a hostNetwork nested pod of P"),
    ] {
        for (what, ip, port) in &targets {
            record(
                &format!("{who} reaching {what} ({ip}:{port})"),
                connects(config, "probe", ip, *port)?,
            )?;
        }
    }

    // Spoofed sources: from a nested pod and from a hostNetwork nested pod,
    // three UDP datagrams that claim to come from B's API server pod (which
    // B's etcd and nodes trust), counted where they would reach the host.
    // The same datagrams with the pod's true source (a node pod's address
    // once they leave it) are counted there, so the counting works and the
    // spoofed ones are what their node pod dropped. A's go to its own DNS
    // Service, which its node pod's egress rules let through.
    let impersonated = b_apiserver;
    for (config, who, ns, target, port) in [
        (
            &a,
            "a nested pod of A",
            &a_ns,
            service_ip(env, &a_ns, "a-dns")?,
            53,
        ),
        (
            &p,
            "a hostNetwork nested pod of P",
            &p_ns,
            host_pod_ip(env, &control_ns, "control")?,
            9000,
        ),
    ] {
        let node_ip = host_pod_ip(env, ns, "nodes-node-0")?;
        let honest = Counter::new("udp", &node_ip, &target, port)?;
        let spoofed_counter = Counter::new("udp", &impersonated, &target, port)?;
        for source in [None, Some(impersonated.as_str())] {
            let out = kubectl(
                config,
                &[
                    "exec",
                    "spoofer",
                    "--",
                    "sh",
                    "-c",
                    &udp_burst(source, &target, port),
                ],
                None,
            )?;
            // A packet the node pod drops on its way out of a local socket
            // (a hostNetwork pod's) fails the send itself.
            let dropped_at_send =
                source.is_some() && out.stderr.contains("sendto: Operation not permitted");
            ensure!(
                out.stderr.contains("3 packets transmitted") || dropped_at_send,
                "hping3 did not send from {who}: {}{}",
                out.stdout,
                out.stderr
            );
        }
        ensure!(
            honest.packets()? >= 3,
            "{who}'s own datagrams were not counted on the node: the test proves nothing"
        );
        record(
            &format!("{who} sending packets as B's API server ({impersonated})"),
            spoofed_counter.packets()? > 0,
        )?;
    }

    // B's nested pods, by route: a privileged hostNetwork pod of P (root
    // in P's node pod) routes B's nested pod's address via B's node pod and
    // connects. The packets leave P's node pod (counted on the node), and
    // go no further: P's node pod may not send into the host's networks,
    // and B's node pod takes from its host side only replies and Service
    // traffic.
    let b = env.nested_kubeconfig(&b_ns, "b").await?;
    default_service_account(&b).await?;
    nested_apply(
        &b,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: target}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: ["sh", "-c", "mkdir -p /www && echo b > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
        ),
    )?;
    nested_apply(
        &p,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: router}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: router
    image: {TOOLS}
    command: [sleep, '3600']
    securityContext: {{privileged: true}}
"#
        ),
    )?;
    for (config, pod) in [(&b, "pod/target"), (&p, "pod/router")] {
        nested(
            config,
            &["wait", "--for=condition=Ready", pod, "--timeout=120s"],
        )?;
    }
    let b_pod = nested(
        &b,
        &["get", "pod", "target", "-o", "jsonpath={.status.podIP}"],
    )?;
    ensure!(
        connects(&b, "target", &b_pod, 8080)?,
        "B's nested pod does not answer at {b_pod}:8080: the test proves nothing"
    );
    let b_node = host_pod_ip(env, &b_ns, "nodes-node-0")?;
    let p_node = host_pod_ip(env, &p_ns, "nodes-node-0")?;
    exec(
        &p,
        "router",
        &format!("ip route replace {b_pod}/32 via {b_node} dev eth0"),
    )?;
    let routed = Counter::new("tcp", &p_node, &b_pod, 8080)?;
    let reached = connects(&p, "router", &b_pod, 8080)?;
    exec(&p, "router", &format!("ip route del {b_pod}/32"))?;
    ensure!(
        routed.packets()? > 0,
        "P's packets to {b_pod} never left its node pod: the test proves nothing"
    );
    record(
        &format!(
            "a privileged hostNetwork nested pod of P reaching B's nested pod ({b_pod}:8080) through B's node pod"
        ),
        reached,
    )?;
    // The second layer alone: the node, whose own traffic no NetworkPolicy
    // stops, routes the same way, and B's node pod drops the packets itself
    // (its NESTOR-INGRESS chain counts them).
    let ingress_drops = || -> Result<u64> {
        let listing = kubectl_ok(
            &env.admin,
            &[
                "exec",
                "-n",
                &b_ns,
                "nodes-node-0",
                "-c",
                "node",
                "--",
                "iptables",
                "-w",
                "-t",
                "mangle",
                "-L",
                "NESTOR-INGRESS",
                "-v",
                "-x",
                "-n",
            ],
            None,
        )?;
        Ok(listing
            .lines()
            .filter(|l| l.contains("DROP"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    };
    let before = ingress_drops()?;
    let route = format!("{b_pod}/32");
    let added = node_command("ip", &["route", "replace", &route, "via", &b_node]).status()?;
    ensure!(
        added.success(),
        "the node could not route {route} via {b_node}"
    );
    let from_node = node_connects(&b_pod, 8080);
    let _ = node_command("ip", &["route", "del", &route]).status();
    ensure!(
        !from_node?,
        "B's node pod forwarded a packet routed at its nested pod {b_pod} from the host network"
    );
    ensure!(
        ingress_drops()? > before,
        "B's node pod's NESTOR-INGRESS chain dropped nothing: the test proves nothing"
    );

    // The operator's metrics port: its chart's policy admits its own
    // namespace, not a pod elsewhere on the host (the control pod).
    let operator = operator_ip(env)?;
    host_probe(env, OPERATOR_NAMESPACE, "metrics-probe")?;
    // The enforcer admits a new pod once it has synced it: a few seconds.
    let admitted = wait_nested(
        "the operator's own namespace to reach its metrics port",
        Duration::from_secs(30),
        || host_connects(env, OPERATOR_NAMESPACE, "metrics-probe", &operator, 8080),
    )
    .await;
    kubectl(
        &env.admin,
        &[
            "delete",
            "pod",
            "-n",
            OPERATOR_NAMESPACE,
            "metrics-probe",
            "--wait=false",
        ],
        None,
    )?;
    admitted?;
    record(
        "a host pod of another namespace reaching the operator's metrics port",
        host_connects(env, &control_ns, "control", &operator, 8080)?,
    )?;

    // Nested DNS answers no name of the host cluster's domain (A's domain
    // is tenant-a.local; the host's cluster.local): NXDOMAIN, while the
    // host's DNS resolves them and A's own names resolve.
    for name in [
        format!("b-apiserver.{b_ns}.svc.cluster.local"),
        "kube-dns.kube-system.svc.cluster.local".into(),
    ] {
        ensure!(
            host_sh(
                env,
                &control_ns,
                "control",
                &format!("nslookup {name} >/dev/null && echo found")
            )?
            .trim()
                == "found",
            "the host's DNS does not resolve {name}: the test proves nothing"
        );
        record(
            &format!("A resolving the host's {name} through its nested DNS"),
            resolves(&a, "probe", &name).await?,
        )?;
    }
    ensure!(
        resolves(&a, "probe", "kubernetes.default.svc.tenant-a.local").await?,
        "A's own names do not resolve"
    );

    for ns in [a_ns, b_ns, p_ns, control_ns] {
        ns.done()?;
    }
    Ok(())
}
