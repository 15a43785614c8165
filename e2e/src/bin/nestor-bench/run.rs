//! One size N: the floors, the operator's phase and the floor after it,
//! each on a test bed of its own.

use crate::audit::audit_policy;
use crate::bed::fresh_bed;
use crate::floor::{FloorOrder, floor_after, floor_orders, measure_floor};
use crate::measure::measure;
use anyhow::Result;
use nestor_e2e::testbed::TestBedOptions;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Measures one N: the floors, the operator's phase, and the by-cluster
/// floor once more after it.
pub(crate) async fn run(n: usize, operator_bin: &Path) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("nestor-bench-{}-{n}", std::process::id()));
    let options = TestBedOptions {
        audit_policy: Some(audit_policy()),
        // To measure the share of the controller-manager's work on the
        // objects under test (ReplicaSets and Pods for every Deployment and
        // StatefulSet), e.g. `*,-deployment-controller,-replicaset-controller,-statefulset-controller`.
        controllers: std::env::var("NESTOR_BENCH_KCM_CONTROLLERS").ok(),
        // `kubectl get --raw '/debug/pprof/profile?seconds=30'` then shows
        // where the API server's time goes.
        profiling: std::env::var_os("NESTOR_BENCH_PROFILE_APISERVER").is_some(),
        ..Default::default()
    };
    // The by-cluster floor, the one the operator's shape matches, runs
    // last, right before the operator, and once more after it: this
    // machine's speed drifts within minutes. Each figure is the last run
    // of that floor before the operator.
    let mut floors = BTreeMap::new();
    let mut in_order = vec![];
    for (i, order) in floor_orders()?.into_iter().enumerate() {
        let measured = measure_floor(
            n,
            order,
            &options,
            &dir.join(format!("{i}-floor-{}", order.key())),
        )
        .await?;
        in_order.push(json!({
            "floor": order.key(),
            "seconds": measured.0,
            "control_plane_cpu_seconds": measured.1,
        }));
        floors.insert(order.key(), measured);
    }
    let (mut bed, admin) = fresh_bed(&dir.join("operator"), &options).await?;
    let result = measure(n, operator_bin, &bed, &admin, &options, &floors).await;
    if result.is_err() {
        bed.keep_logs();
        eprintln!(
            "bench N={n}: logs kept in {}",
            bed.dir.join("logs").display()
        );
    }
    drop(bed);
    let mut figures = result?;
    let after = measure_floor(
        n,
        FloorOrder::ByCluster,
        &options,
        &dir.join("after-floor-cluster"),
    )
    .await?;
    floor_after(&mut figures, after);
    figures["floors_in_order"] = json!(in_order);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}
