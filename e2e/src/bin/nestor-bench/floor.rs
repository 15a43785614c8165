//! The floors: a plain client creating what the operator creates, with
//! the same concurrency, on a test bed of its own.

use crate::audit::FLOOR_USER;
use crate::bed::fresh_bed;
use crate::cpu::{control_plane_cpu, cpu_since, profile, state, until_quiet};
use crate::objects::{CONCURRENCY, Write, children, create_in_order, mint, vc, write_all};
use crate::progress::Progress;
use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use nestor_controllers::OperatorSettings;
use nestor_controllers::build::pki;
use nestor_e2e::TestBed;
use nestor_e2e::testbed::{TestBedOptions, client_for};
use nestor_e2e::tools::kubectl_ok;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The order in which the floor creates the children.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FloorOrder {
    /// Every cluster's Secrets, then every cluster's Services, ... and the
    /// workloads last: the controller-manager's work on them (ReplicaSets,
    /// Pods) falls mostly after the floor's window.
    ByKind,
    /// One cluster after another (`CONCURRENCY` at once), each in the
    /// order above: the shape of the operator's work, with the
    /// controller-manager reacting within the window as it does during
    /// the operator's.
    ByCluster,
    /// As `ByCluster`, but every object written by server-side apply, as
    /// the operator writes them: the other floors' gap to the operator,
    /// less what applying costs the API server.
    Applied,
}

/// The floors measured before the operator, in order: by default by kind,
/// applied, by cluster; `NESTOR_BENCH_FLOORS` (e.g. `cluster,cluster,cluster`)
/// sets another list, to see how a floor drifts within one run.
pub(crate) fn floor_orders() -> Result<Vec<FloorOrder>> {
    let list =
        std::env::var("NESTOR_BENCH_FLOORS").unwrap_or_else(|_| "kind,applied,cluster".into());
    list.split(',')
        .map(|key| {
            [
                FloorOrder::ByKind,
                FloorOrder::Applied,
                FloorOrder::ByCluster,
            ]
            .into_iter()
            .find(|o| o.key() == key.trim())
            .with_context(|| {
                format!("NESTOR_BENCH_FLOORS: {key:?} is not one of kind, applied, cluster")
            })
        })
        .collect()
}

impl FloorOrder {
    pub(crate) fn key(self) -> &'static str {
        match self {
            FloorOrder::ByKind => "kind",
            FloorOrder::ByCluster => "cluster",
            FloorOrder::Applied => "applied",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            FloorOrder::ByKind => "floor",
            FloorOrder::ByCluster => "floor-by-cluster",
            FloorOrder::Applied => "floor-applied",
        }
    }

    fn how(self) -> Write {
        match self {
            FloorOrder::ByKind | FloorOrder::ByCluster => Write::Create,
            FloorOrder::Applied => Write::Apply,
        }
    }
}

/// The floor: a plain client creates N VirtualClusters and every child,
/// built beforehand by the same builders (certificates included, outside
/// the timing), with `CONCURRENCY` requests in flight.
async fn floor(client: &kube::Client, n: usize, order: FloorOrder) -> Result<f64> {
    let namespace = order.namespace();
    let settings = OperatorSettings::default();
    let bundle = pki::generate_ca_bundle("floor", &mut mint())?;
    let started = Instant::now();
    let created = write_all(
        client,
        namespace,
        (0..n)
            .map(|i| vc(&format!("vc-{i:04}"), namespace))
            .collect(),
        Write::Create,
        CONCURRENCY,
    )
    .await?;
    let build_started = Instant::now();
    let clusters = created
        .iter()
        .map(|vc| children(vc, &settings, &bundle))
        .collect::<Result<Vec<_>>>()?;
    let building = build_started.elapsed();
    match order {
        FloorOrder::ByKind => {
            let mut all = clusters.into_iter();
            let mut merged = all.next().context("no cluster")?;
            for objects in all {
                merged.extend(objects);
            }
            create_in_order(client, namespace, merged, order.how(), CONCURRENCY).await?;
        }
        FloorOrder::ByCluster | FloorOrder::Applied => {
            futures::stream::iter(
                clusters
                    .into_iter()
                    .map(|objects| create_in_order(client, namespace, objects, order.how(), 1)),
            )
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        }
    }
    Ok((started.elapsed() - building).as_secs_f64())
}

/// Measures one floor on a test bed of its own (see [`fresh_bed`]), under
/// the same observers as the operator (the benchmark's watches of every
/// kind under test) and the same audit logging, from a quiet control
/// plane.
pub(crate) async fn measure_floor(
    n: usize,
    order: FloorOrder,
    options: &TestBedOptions,
    dir: &Path,
) -> Result<(f64, BTreeMap<String, f64>)> {
    let (mut bed, admin) = fresh_bed(dir, options).await?;
    let result = floor_on(&bed, &admin, n, order).await;
    if result.is_err() {
        bed.keep_logs();
        eprintln!("bench N={n}: logs kept in {}", dir.join("logs").display());
    }
    result
}

async fn floor_on(
    bed: &TestBed,
    admin: &kube::Client,
    n: usize,
    order: FloorOrder,
) -> Result<(f64, BTreeMap<String, f64>)> {
    let client =
        client_for(&bed.user_kubeconfig(FLOOR_USER, &["system:masters"], "floor.kubeconfig")?)
            .await?;
    let namespace = order.namespace();
    kubectl_ok(&bed.kubeconfig, &["create", "namespace", namespace], None)?;
    let observers = Progress::start(admin, namespace).await?;
    let (waited, rate) = until_quiet(bed).await;
    eprintln!(
        "bench N={n}: control plane at {rate:.2} cores after {waited:.1}s; {}",
        state(bed)
    );
    let cpu_before = control_plane_cpu(bed);
    let profile = profile(bed, &format!("{order:?}"))?;
    let seconds = floor(&client, n, order).await?;
    let cpu = cpu_since(&cpu_before, bed);
    drop(observers);
    if let Some(mut p) = profile {
        p.wait()?;
    }
    eprintln!("bench N={n}: floor {order:?} {seconds:.1}s; control plane CPU s {cpu:?}");
    Ok((seconds, cpu))
}

/// The by-cluster floor once more, after the operator's phase: this
/// machine's speed drifts by up to half within minutes, and the mean of
/// the floors on both sides of the operator evens out a drift between the
/// phases (not one within a phase). In a
/// converge-only run it follows the convergence within a minute; in a full
/// run, the settle, idle and repair phases (about 25 minutes at N = 1,000).
pub(crate) fn floor_after(figures: &mut Value, (after, cpu): (f64, BTreeMap<String, f64>)) {
    let before = figures["floor_by_cluster_seconds"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let converged = figures["converged_seconds"].as_f64().unwrap_or(f64::NAN);
    figures["floor_by_cluster_after_seconds"] = json!(after);
    figures["floor_by_cluster_after_control_plane_cpu_seconds"] = json!(cpu);
    figures["floor_by_cluster_drift"] = json!(after / before);
    figures["ratio_to_floor_by_cluster_bracketed"] = json!(converged / ((before + after) / 2.0));
}
