//! What the operator costs: for each N (default 10, 100, 1000) it starts a
//! test bed (etcd, kube-apiserver with an audit log, kube-controller-manager,
//! kube-scheduler; no kubelet), measures the floor (a plain client creating
//! the same objects with the same concurrency), then starts the operator as
//! a separate process and measures: time until N VirtualClusters have every
//! child and a settled status, peak RSS and CPU seconds (from /proc), memory
//! per virtual cluster, API requests per virtual cluster by verb (audit log)
//! and writes by kind (operator metrics), writes and CPU during 60 s of
//! idle, and the time to notice and repair a deleted child. Also the cost
//! of one cluster's certificates. Prints a table and writes the figures as
//! JSON to `target/figures/bench.json`.
//!
//! bash e2e/testbed/build-images.sh   # the operator binary the image ships
//! cargo run --profile image -p nestor-e2e --bin nestor-bench -- [10,100,1000]
//!
//! With `NESTOR_BENCH_CONVERGE_ONLY=1` each run stops at convergence (for
//! quick before/after comparisons). `nestor-bench writes [N]` measures instead what a create and a
//! server-side apply of the same object cost the API server.
//!
//! One binary runs every phase of a measurement (the floors, the operator,
//! idle, repair) on the same harness, so that every phase is measured the
//! same way: `run` orders the phases of one N, `floor` and `measure` are
//! the phases, `settle` what follows convergence, `writes` the `writes`
//! command; `cpu`, `audit`, `metrics` and `progress` are how the phases
//! observe, `objects` and `bed` what they work on.

mod audit;
mod bed;
mod cpu;
mod floor;
mod measure;
mod metrics;
mod objects;
mod progress;
mod run;
mod settle;
mod writes;

use anyhow::{Context, Result, bail};
use nestor_e2e::paths;
use objects::certificate_cost;
use run::run;
use serde_json::{Value, json};
use std::path::PathBuf;
use writes::write_costs;

fn operator_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NESTOR_OPERATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    // The binary the operator image ships (e2e/testbed/build-images.sh).
    let image = paths::repo_root().join("target/x86_64-unknown-linux-gnu/image/nestor-operator");
    if image.is_file() {
        return Ok(image);
    }
    bail!("build the operator first: bash e2e/testbed/build-images.sh (or set NESTOR_OPERATOR_BIN)")
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("writes") {
        let n = match std::env::args().nth(2) {
            Some(n) => n.parse().context("writes N: a number")?,
            None => 2000,
        };
        return writes(n).await;
    }
    let sizes: Vec<usize> = match std::env::args().nth(1) {
        Some(list) => list
            .split(',')
            .map(|n| n.trim().parse())
            .collect::<Result<_, _>>()
            .context("sizes: a comma-separated list")?,
        None => vec![10, 100, 1000],
    };
    bench(sizes).await
}

/// `nestor-bench writes N`: prints the figures and writes them to
/// `target/figures/writes.json`.
async fn writes(n: usize) -> Result<()> {
    let figures = write_costs(n).await?;
    let dir = paths::repo_root().join("target/figures");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("writes.json"),
        serde_json::to_string_pretty(&figures)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}

/// `nestor-bench [SIZES]`: measures each size, prints the table and writes
/// the figures to `target/figures/bench.json`.
async fn bench(sizes: Vec<usize>) -> Result<()> {
    let operator = operator_binary()?;
    let cert_ms = certificate_cost()?;
    eprintln!(
        "bench: certificates of one cluster (ECDSA P-256, 3 CAs, 11 leaves, SA key): {cert_ms:.2} ms"
    );
    let mut results = vec![];
    for n in sizes {
        let result = run(n, &operator).await?;
        eprintln!("bench N={n}: {result}");
        results.push(result);
    }
    print_table(&results);
    println!("certificates of one cluster: {cert_ms:.2} ms");
    let dir = paths::repo_root().join("target/figures");
    std::fs::create_dir_all(&dir)?;
    let all = json!({ "certificate_ms_per_cluster": cert_ms, "runs": results });
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&all)?)?;
    println!("figures written to {}", dir.join("bench.json").display());
    Ok(())
}

/// The runs' figures as a Markdown table, one row per N.
fn print_table(results: &[Value]) {
    println!();
    println!(
        "| N | floor s (by kind / by cluster / applied; by cluster after) | operator s | ratio (by kind / by cluster / applied; by cluster bracketed) | settled s | peak RSS MiB | RSS/cluster KiB | CPU ms/cluster | writes/cluster | requests/cluster | idle 60 s writes | idle 60 s CPU s | repair s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let requests: f64 = r["requests_per_cluster_by_verb"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_f64).sum())
            .unwrap_or(0.0);
        println!(
            "| {} | {:.1} / {:.1} / {:.1}; {:.1} | {:.1} | {:.2} / {:.2} / {:.2}; {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.2} |",
            r["n"],
            r["floor_seconds"].as_f64().unwrap_or(0.0),
            r["floor_by_cluster_seconds"].as_f64().unwrap_or(0.0),
            r["floor_applied_seconds"].as_f64().unwrap_or(0.0),
            r["floor_by_cluster_after_seconds"].as_f64().unwrap_or(0.0),
            r["converged_seconds"].as_f64().unwrap_or(0.0),
            r["ratio_to_floor"].as_f64().unwrap_or(0.0),
            r["ratio_to_floor_by_cluster"].as_f64().unwrap_or(0.0),
            r["ratio_to_floor_applied"].as_f64().unwrap_or(0.0),
            r["ratio_to_floor_by_cluster_bracketed"]
                .as_f64()
                .unwrap_or(0.0),
            r["settled_seconds"].as_f64().unwrap_or(0.0),
            r["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            r["rss_per_cluster_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            r["cpu_ms_per_cluster"].as_f64().unwrap_or(0.0),
            r["writes_per_cluster"].as_f64().unwrap_or(0.0),
            requests,
            r["idle_60s_writes"],
            r["idle_60s_cpu_seconds"].as_f64().unwrap_or(0.0),
            r["repair_seconds"].as_f64().unwrap_or(0.0),
        );
    }
}
