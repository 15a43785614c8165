//! Measures what the issue tracker asks to report, on this machine:
//! `nestor-figures ready [N]` starts a test bed with a real node, installs
//! Nestor with Helm, then N times (default 5) applies an empty-spec
//! VirtualCluster, times apply -> Ready, and reads the memory of its pods
//! from the kubelet's summary API once it has settled. Prints a table and
//! writes the same figures as JSON to `target/figures/ready.json`.
//!
//! `nestor-figures workloads [N]` applies N times a VirtualCluster with a
//! one-node NodePool, creates a busybox pod in the nested cluster as soon
//! as it accepts one, and times apply -> that pod Running; then reads the
//! node pod's memory. Writes `target/figures/workloads.json`.
//!
//! `nestor-figures throughput [N]` runs iperf3 (TCP, 5 s) N times between
//! two nested pods on two node pods of one cluster, then N times more with
//! the cluster's host NetworkPolicies removed (the operator stopped), and
//! prints the median of each: what the host's policy enforcement costs
//! the nested pod network.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use nestor_crds::VirtualCluster;
use nestor_e2e::node::TOOLS_IMAGE as TOOLS;
use nestor_e2e::process::Lifetime;
use nestor_e2e::support::vc_yaml;
use nestor_e2e::testbed::TestBedOptions;
use nestor_e2e::tools::kubectl_ok;
use nestor_e2e::{TestBed, node, paths};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn pod_memory(bed: &TestBed, namespace: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for pod in stats_pods(bed, namespace)? {
        out.insert(
            pod["podRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            pod["memory"]["workingSetBytes"].as_u64().unwrap_or(0),
        );
    }
    Ok(out)
}

/// The kubelet summary API's entries of the pods of `namespace`.
fn stats_pods(bed: &TestBed, namespace: &str) -> Result<Vec<serde_json::Value>> {
    let path = format!(
        "/api/v1/nodes/{}/proxy/stats/summary",
        node::setting("NODE_NAME")
    );
    let text = kubectl_ok(&bed.kubeconfig, &["get", "--raw", &path], None)?;
    let summary: serde_json::Value = serde_json::from_str(&text)?;
    Ok(summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| pod["podRef"]["namespace"] == namespace)
        .cloned()
        .collect())
}

/// Working set of each container of the pods of `namespace`, keyed
/// `pod/container`.
fn container_memory(bed: &TestBed, namespace: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for pod in stats_pods(bed, namespace)? {
        let name = pod["podRef"]["name"].as_str().unwrap_or_default();
        for c in pod["containers"].as_array().into_iter().flatten() {
            out.insert(
                format!("{name}/{}", c["name"].as_str().unwrap_or_default()),
                c["memory"]["workingSetBytes"].as_u64().unwrap_or(0),
            );
        }
    }
    Ok(out)
}

/// Resident memory of this machine's processes named `comm` (the node
/// pods' daemons run as such), in bytes.
fn process_rss(comm: &str) -> Vec<u64> {
    process_rss_with(comm, "")
}

/// The resident set of each process named `comm` whose command line holds
/// `arg` (the host's kube-router and the node pods' share a name).
fn process_rss_with(comm: &str, arg: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let named = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == comm);
        let with_arg = arg.is_empty()
            || std::fs::read(path.join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(arg));
        if !named || !with_arg {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            out.push(kb * 1024);
        }
    }
    out
}

fn install(bed: &TestBed) -> Result<()> {
    let args = node::platform_helm_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nestor_e2e::support::helm_install(&bed.kubeconfig, &args)
}

fn median(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

async fn workloads(bed: &TestBed, runs: usize) -> Result<()> {
    let client = bed.client().await?;
    install(bed)?;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: first\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: first\n    image: images.nestor.test/busybox:1.35\n    command: [sleep, '3600']\n";
    let mut times = Vec::new();
    let mut node_memory = Vec::new();
    for run in 1..=runs {
        let ns = format!("figures-workloads-{run}");
        kubectl_ok(&bed.kubeconfig, &["create", "namespace", &ns], None)?;
        let start = Instant::now();
        let manifest = format!(
            "{}---\napiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: pool\nspec:\n  clusterRef: {{name: bench}}\n  replicas: 1\n",
            vc_yaml("bench", "{}")
        );
        kubectl_ok(
            &bed.kubeconfig,
            &["apply", "-n", &ns, "-f", "-"],
            Some(&manifest),
        )?;
        let config = bed.dir.join(format!("{ns}.kubeconfig"));
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        // The pod goes in as soon as the nested cluster takes it.
        loop {
            if let Some(secret) = secrets.get_opt("bench-admin-kubeconfig").await?
                && let Some(data) = secret.data.and_then(|d| d.get("kubeconfig").cloned())
            {
                std::fs::write(&config, data.0)?;
                let out = nestor_e2e::tools::kubectl(&config, &["apply", "-f", "-"], Some(pod))?;
                if out.ok {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("run {run}: the nested cluster took no pod in 300s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            let phase = nestor_e2e::tools::kubectl(
                &config,
                &["get", "pod", "first", "-o", "jsonpath={.status.phase}"],
                None,
            )?;
            if phase.stdout.trim() == "Running" {
                break;
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("run {run}: the nested pod is not Running after 300s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let memory = pod_memory(bed, &ns).await?;
        let node = memory.get("pool-node-0").copied().unwrap_or(0);
        let mean_mib =
            |rss: Vec<u64>| rss.iter().sum::<u64>() as f64 / 1048576.0 / rss.len().max(1) as f64;
        println!(
            "run {run}: first nested pod Running {took:.1}s after apply; node pod working set {:.0} MiB (resident: Konnectivity's agent {:.0} MiB, flanneld {:.0} MiB, kube-router {:.0} MiB)",
            node as f64 / 1048576.0,
            mean_mib(process_rss("proxy-agent")),
            mean_mib(process_rss("flanneld")),
            mean_mib(process_rss_with(
                "kube-router",
                "/var/lib/kubelet/kubeconfig"
            )),
        );
        times.push(took);
        node_memory.push(node as f64);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces.delete(&ns, &DeleteParams::default()).await?;
        while namespaces.get_opt(&ns).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (med, min, max) = median(&times);
    let (mem, _, _) = median(&node_memory);
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| apply (cluster and pool) -> first nested pod Running, median of {runs} | {med:.1} s (min {min:.1}, max {max:.1}) |"
    );
    println!(
        "| working set of a node pod running one pod, median | {:.0} MiB |",
        mem / 1048576.0
    );
    let dir = paths::repo_root().join("target/figures");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::json!({
        "first_pod_running_seconds": times,
        "first_pod_running_seconds_median": med,
        "node_pod_working_set_bytes": node_memory,
        "node_pod_working_set_bytes_median": mem,
    });
    std::fs::write(
        dir.join("workloads.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!(
        "figures written to {}",
        dir.join("workloads.json").display()
    );
    Ok(())
}

async fn ready(bed: &TestBed, runs: usize) -> Result<()> {
    let client = bed.client().await?;
    install(bed)?;
    let mut times = Vec::new();
    let mut memories = Vec::new();
    for run in 1..=runs {
        let ns = format!("figures-{run}");
        kubectl_ok(&bed.kubeconfig, &["create", "namespace", &ns], None)?;
        let api: Api<VirtualCluster> = Api::namespaced(client.clone(), &ns);
        let start = Instant::now();
        kubectl_ok(
            &bed.kubeconfig,
            &["apply", "-n", &ns, "-f", "-"],
            Some(&vc_yaml("bench", "{}")),
        )?;
        loop {
            let vc = api.get("bench").await?;
            if vc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            }) {
                break;
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("run {run}: not Ready in 300s: {:?}", vc.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = start.elapsed().as_secs_f64();
        // Let the components settle (caches filled, start-up garbage freed).
        tokio::time::sleep(Duration::from_secs(20)).await;
        let memory = pod_memory(bed, &ns).await?;
        let total: u64 = memory.values().sum();
        println!(
            "run {run}: Ready {took:.1}s after apply; pods' working set {:.0} MiB",
            total as f64 / 1048576.0
        );
        let containers = container_memory(bed, &ns)?;
        for (pod, bytes) in &memory {
            println!("    {pod:<45} {:>6.1} MiB", *bytes as f64 / 1048576.0);
            for (name, bytes) in containers.range(format!("{pod}/")..format!("{pod}0")) {
                println!("      {name:<43} {:>6.1} MiB", *bytes as f64 / 1048576.0);
            }
        }
        times.push(took);
        memories.push((total, memory));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces.delete(&ns, &DeleteParams::default()).await?;
        while namespaces.get_opt(&ns).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut totals: Vec<u64> = memories.iter().map(|(t, _)| *t).collect();
    totals.sort();
    let median_memory = totals[totals.len() / 2];
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| apply -> Ready, median of {runs} | {median:.1} s (min {:.1}, max {:.1}) |",
        sorted[0],
        sorted[sorted.len() - 1]
    );
    println!(
        "| working set of a minimal virtual cluster's pods, median | {:.0} MiB |",
        median_memory as f64 / 1048576.0
    );
    let dir = paths::repo_root().join("target/figures");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::json!({
        "ready_seconds": times,
        "ready_seconds_median": median,
        "pods_working_set_bytes": memories.iter().map(|(_, m)| m).collect::<Vec<_>>(),
        "pods_working_set_bytes_median": median_memory,
    });
    std::fs::write(dir.join("ready.json"), serde_json::to_string_pretty(&json)?)?;
    println!("figures written to {}", dir.join("ready.json").display());
    Ok(())
}

/// Received bits per second of `runs` iperf3 runs from the client pod to
/// the server pod.
fn iperf_runs(config: &std::path::Path, server: &str, runs: usize) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..runs {
        let text = kubectl_ok(
            config,
            &[
                "exec",
                "iperf-client",
                "--",
                "iperf3",
                "-c",
                server,
                "-t",
                "5",
                "-J",
            ],
            None,
        )?;
        let report: serde_json::Value = serde_json::from_str(&text)?;
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 reported no received rate")?;
        out.push(bps);
    }
    Ok(out)
}

async fn throughput(bed: &TestBed, runs: usize) -> Result<()> {
    install(bed)?;
    let ns = "figures-throughput";
    kubectl_ok(&bed.kubeconfig, &["create", "namespace", ns], None)?;
    let manifest = format!(
        "{}---\napiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: pool\nspec:\n  clusterRef: {{name: bench}}\n  replicas: 2\n",
        vc_yaml("bench", "{}")
    );
    kubectl_ok(
        &bed.kubeconfig,
        &["apply", "-n", ns, "-f", "-"],
        Some(&manifest),
    )?;
    let client = bed.client().await?;
    let pools: Api<nestor_crds::NodePool> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = pools
            .get_opt("pool")
            .await?
            .and_then(|p| p.status)
            .is_some_and(|s| s.ready_replicas == 2);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the pool of two nodes was not Ready in 300s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let data = secrets
        .get("bench-admin-kubeconfig")
        .await?
        .data
        .and_then(|d| d.get("kubeconfig").cloned())
        .context("no admin kubeconfig")?;
    let config = bed.dir.join("throughput.kubeconfig");
    std::fs::write(&config, data.0)?;
    let pod = |name: &str, node: &str, command: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {TOOLS}\n    command: [{command}]\n"
        )
    };
    let pods = [
        pod("iperf-server", "pool-node-0", "iperf3, -s"),
        pod("iperf-client", "pool-node-1", "sleep, '3600'"),
    ]
    .join("---\n");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nestor_e2e::tools::kubectl(&config, &["apply", "-f", "-"], Some(&pods))?.ok {
        if Instant::now() > deadline {
            bail!("the nested cluster took no pod in 120s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    kubectl_ok(
        &config,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/iperf-server",
            "pod/iperf-client",
            "--timeout=180s",
        ],
        None,
    )?;
    let server = kubectl_ok(
        &config,
        &[
            "get",
            "pod",
            "iperf-server",
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    )?;
    let with = iperf_runs(&config, &server, runs)?;
    // The same, with the cluster's host policies gone: the operator would
    // put them back, so it stops first.
    let operator = [
        "-n",
        nestor_e2e::support::OPERATOR_NAMESPACE,
        "scale",
        "deployment",
        "--all",
    ];
    kubectl_ok(
        &bed.kubeconfig,
        &[&operator[..], &["--replicas=0"]].concat(),
        None,
    )?;
    kubectl_ok(
        &bed.kubeconfig,
        &[
            "delete",
            "networkpolicy",
            "-n",
            ns,
            "-l",
            "nestor.dev/cluster=bench",
        ],
        None,
    )?;
    // kube-router's rules name each policy a pod runs through.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rules = node::node_command("iptables", &["-S"]).output()?;
        if !String::from_utf8_lossy(&rules.stdout).contains("nw policy bench-") {
            break;
        }
        if Instant::now() > deadline {
            bail!("kube-router kept the cluster's firewall rules 60 s after its policies went");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let without = iperf_runs(&config, &server, runs)?;
    kubectl_ok(
        &bed.kubeconfig,
        &[&operator[..], &["--replicas=1"]].concat(),
        None,
    )?;
    let gbit = |v: &[f64]| {
        let (med, min, max) = median(v);
        format!(
            "{:.2} Gbit/s (min {:.2}, max {:.2})",
            med / 1e9,
            min / 1e9,
            max / 1e9
        )
    };
    println!();
    println!(
        "| iperf3, TCP, 5 s, nested pod to nested pod on another node pod, median of {runs} | value |"
    );
    println!("|---|---|");
    println!(
        "| with the cluster's host NetworkPolicies enforced | {} |",
        gbit(&with)
    );
    println!("| without them | {} |", gbit(&without));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(which @ ("ready" | "workloads" | "throughput")) => {
            let runs = args
                .get(1)
                .map(|n| n.parse())
                .transpose()
                .context("N must be a number")?
                .unwrap_or(5);
            let dir = std::env::temp_dir().join(format!("nestor-figures-{}", std::process::id()));
            let helper = std::env::current_exe()?.with_file_name("nestor-testbed");
            let started = Instant::now();
            let bed = TestBed::start(
                &dir,
                Lifetime::Tied,
                &TestBedOptions {
                    node: Some(helper),
                    ..Default::default()
                },
            )
            .await?;
            println!(
                "test bed with a node up in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            let result = match which {
                "ready" => ready(&bed, runs).await,
                "workloads" => workloads(&bed, runs).await,
                _ => throughput(&bed, runs).await,
            };
            drop(bed);
            result
        }
        _ => bail!("usage: nestor-figures ready|workloads|throughput [N]"),
    }
}
