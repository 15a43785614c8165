//! `nestor-bench writes`: what a create and a server-side apply of the
//! same object cost the API server.

use crate::cpu::{control_plane_cpu, cpu_since};
use crate::objects::{CONCURRENCY, Write, children, mint, vc, write_all};
use anyhow::Result;
use kube::Resource;
use nestor_controllers::OperatorSettings;
use nestor_controllers::build::pki;
use nestor_e2e::TestBed;
use nestor_e2e::process::Lifetime;
use nestor_e2e::testbed::TestBedOptions;
use nestor_e2e::tools::kubectl_ok;
use serde_json::{Value, json};
use std::time::Instant;

/// What a write costs the API server: N Secrets and N Deployments (one
/// cluster's, renamed), created with POST in one namespace and with
/// server-side apply in another, 16 requests in flight. Wall time and the
/// CPU seconds of the API server and etcd for each.
pub(crate) async fn write_costs(n: usize) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("nestor-bench-writes-{}", std::process::id()));
    let bed = TestBed::start(&dir, Lifetime::Tied, &TestBedOptions::default()).await?;
    let admin = bed.client().await?;
    let bundle = pki::generate_ca_bundle("writes", &mut mint())?;
    let objects = children(
        &vc("vc-0000", "writes"),
        &OperatorSettings::default(),
        &bundle,
    )?;
    let mut figures = serde_json::Map::new();
    for (verb, how, namespace) in [
        ("create", Write::Create, "by-post"),
        ("apply", Write::Apply, "by-apply"),
    ] {
        kubectl_ok(&bed.kubeconfig, &["create", "namespace", namespace], None)?;
        let secrets = copies(&objects.secrets[1], n, namespace);
        let deployments = copies(&objects.deployments[0], n, namespace);
        figures.insert(
            format!("Secret {verb}"),
            write_cost(&bed, &format!("{n} Secrets by {verb}"), n, async {
                write_all(&admin, namespace, secrets, how, CONCURRENCY).await
            })
            .await?,
        );
        figures.insert(
            format!("Deployment {verb}"),
            write_cost(&bed, &format!("{n} Deployments by {verb}"), n, async {
                write_all(&admin, namespace, deployments, how, CONCURRENCY).await
            })
            .await?,
        );
    }
    Ok(Value::Object(figures))
}

/// Wall time, and API server and etcd CPU per object, of `n` writes.
async fn write_cost<T>(
    bed: &TestBed,
    what: &str,
    n: usize,
    writes: impl std::future::Future<Output = Result<T>>,
) -> Result<Value> {
    let before = control_plane_cpu(bed);
    let started = Instant::now();
    writes.await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_since(&before, bed);
    let each = |name: &str| cpu.get(name).copied().unwrap_or(0.0) * 1000.0 / n as f64;
    let (apiserver_ms, etcd_ms) = (each("kube-apiserver"), each("etcd"));
    eprintln!(
        "bench writes: {what}: {seconds:.1}s, API server {apiserver_ms:.2} ms and etcd {etcd_ms:.2} ms of CPU each"
    );
    Ok(
        json!({"seconds": seconds, "apiserver_cpu_ms_each": apiserver_ms, "etcd_cpu_ms_each": etcd_ms}),
    )
}

/// `n` copies of `template` in `namespace`, named `<name>-00000` on, with
/// no owner.
fn copies<K: Resource + Clone>(template: &K, n: usize, namespace: &str) -> Vec<K> {
    (0..n)
        .map(|i| {
            let mut obj = template.clone();
            let name = format!("{}-{i:05}", obj.meta().name.clone().unwrap_or_default());
            obj.meta_mut().name = Some(name);
            obj.meta_mut().namespace = Some(namespace.into());
            obj.meta_mut().owner_references = None;
            obj
        })
        .collect()
}
