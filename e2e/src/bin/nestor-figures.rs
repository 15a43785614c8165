//! Measures what the issue tracker asks to report, on this machine:
//! `nestor-figures ready [N]` starts a test bed with a real node, installs
//! Nestor with Helm, then N times (default 5) applies an empty-spec
//! VirtualCluster, times apply -> Ready, and reads the memory of its pods
//! from the kubelet's summary API once it has settled. Prints a table and
//! writes the same figures as JSON to `target/figures/ready.json`.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use nestor_crds::VirtualCluster;
use nestor_e2e::process::Lifetime;
use nestor_e2e::support::vc_yaml;
use nestor_e2e::testbed::TestBedOptions;
use nestor_e2e::tools::kubectl_ok;
use nestor_e2e::{TestBed, node, paths};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn pod_memory(bed: &TestBed, namespace: &str) -> Result<BTreeMap<String, u64>> {
    let path = format!(
        "/api/v1/nodes/{}/proxy/stats/summary",
        node::setting("NODE_NAME")
    );
    let text = kubectl_ok(&bed.kubeconfig, &["get", "--raw", &path], None)?;
    let summary: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = BTreeMap::new();
    for pod in summary["pods"].as_array().into_iter().flatten() {
        if pod["podRef"]["namespace"] == namespace {
            let component = pod["podRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.insert(
                component,
                pod["memory"]["workingSetBytes"].as_u64().unwrap_or(0),
            );
        }
    }
    Ok(out)
}

async fn ready(bed: &TestBed, runs: usize) -> Result<()> {
    let client = bed.client().await?;
    nestor_e2e::support::helm_install(&bed.kubeconfig, &[])?;
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
        for (pod, bytes) in &memory {
            println!("    {pod:<45} {:>6.1} MiB", *bytes as f64 / 1048576.0);
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

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ready") => {
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
            let result = ready(&bed, runs).await;
            drop(bed);
            result
        }
        _ => bail!("usage: nestor-figures ready [N]"),
    }
}
