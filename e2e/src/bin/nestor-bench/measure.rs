//! The operator's phase: the operator as a separate process, N
//! VirtualClusters created at once, the time until every child exists and
//! every status is settled, and (in a full run) what follows: settling,
//! idle and repair.

use crate::audit::{OPERATOR_USER, audit_counts};
use crate::cpu::{control_plane_cpu, cpu_seconds, cpu_since, memory, profile, state, until_quiet};
use crate::floor::FloorOrder;
use crate::metrics::{operator_metrics, writes_by_kind};
use crate::objects::{CONCURRENCY, Write, children, mint, vc, write_all};
use crate::progress::Progress;
use crate::settle::{Idle, idle, repair, settle};
use anyhow::{Result, bail, ensure};
use nestor_controllers::OperatorSettings;
use nestor_controllers::build::pki;
use nestor_e2e::TestBed;
use nestor_e2e::process::{Lifetime, Proc, spawn};
use nestor_e2e::testbed::{TestBedOptions, free_port};
use nestor_e2e::tools::kubectl_ok;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A floor's seconds and control plane CPU seconds, by floor key.
pub(crate) type Floors<'a> = BTreeMap<&'a str, (f64, BTreeMap<String, f64>)>;

/// The operator's phase (and, in a full run, its settle, idle and repair
/// phases) on a test bed of its own.
pub(crate) async fn measure(
    n: usize,
    operator_bin: &Path,
    bed: &TestBed,
    admin: &kube::Client,
    options: &TestBedOptions,
    floors: &Floors<'_>,
) -> Result<Value> {
    kubectl_ok(&bed.kubeconfig, &["create", "namespace", "bench"], None)?;
    let mut operator = RunningOperator::start(operator_bin, bed).await?;
    // As many as the operator's own builders make.
    let children_per_cluster = children(
        &vc("vc-0000", "bench"),
        &OperatorSettings::default(),
        &pki::generate_ca_bundle("bench", &mut mint())?,
    )?
    .len();
    let progress = Progress::start(admin, "bench").await?;
    let converged = converge(
        n,
        children_per_cluster,
        &mut operator,
        bed,
        admin,
        &progress,
    )
    .await?;
    let mut figures = convergence_figures(n, options, floors, &converged);
    if std::env::var_os("NESTOR_BENCH_CONVERGE_ONLY").is_some() {
        // For quick before/after comparisons: no settle, idle or repair.
        operator.proc.stop(Duration::from_secs(10));
        return Ok(figures);
    }
    let settled = settle(bed, admin, operator.port, converged.started, converged.at).await?;
    let totals = Totals::read(&operator).await?;
    let idle = idle(
        operator.proc.pid,
        operator.port,
        totals.writes,
        &operator.audit,
        totals.audit_offset,
    )
    .await?;
    let repair = repair(admin).await?;
    operator.proc.stop(Duration::from_secs(10));
    let rest = after_convergence_figures(n, settled, operator.rss_before, &totals, &idle, repair);
    if let (Value::Object(all), Value::Object(rest)) = (&mut figures, rest) {
        all.extend(rest);
    }
    Ok(figures)
}

/// The operator under measurement, and what it used before any cluster.
struct RunningOperator {
    proc: Proc,
    /// Its metrics port.
    port: u16,
    rss_before: u64,
    cpu_before: f64,
    /// The test bed's audit log, and its length before any cluster.
    audit: PathBuf,
    audit_offset: u64,
}

impl RunningOperator {
    /// Starts the operator, watching the `bench` namespace, and waits
    /// until it serves its metrics.
    async fn start(operator_bin: &Path, bed: &TestBed) -> Result<Self> {
        let kubeconfig =
            bed.user_kubeconfig(OPERATOR_USER, &["system:masters"], "operator.kubeconfig")?;
        let port = free_port()?;
        let proc: Proc = spawn(
            "operator",
            operator_bin,
            &[
                "--leader-election=false".into(),
                format!("--metrics-addr=127.0.0.1:{port}"),
                "--watch-namespace=bench".into(),
                "--nested-route=published".into(),
                format!("--concurrency={CONCURRENCY}"),
                "--log-level=warn".into(),
            ],
            &[("KUBECONFIG", kubeconfig.display().to_string())]
                .into_iter()
                .chain(
                    std::env::var("MALLOC_ARENA_MAX")
                        .ok()
                        .map(|v| ("MALLOC_ARENA_MAX", v)),
                )
                .collect::<Vec<_>>(),
            &bed.dir.join("logs/operator.log"),
            Lifetime::Tied,
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while operator_metrics(port).await.is_err() {
            ensure!(Instant::now() < deadline, "the operator did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss_before, _) = memory(proc.pid)?;
        let cpu_before = cpu_seconds(proc.pid)?;
        let audit = bed.dir.join("audit.log");
        let (_, audit_offset) = audit_counts(&audit, 0, false)?;
        Ok(RunningOperator {
            proc,
            port,
            rss_before,
            cpu_before,
            audit,
            audit_offset,
        })
    }
}

/// The operator's convergence: when it began and ended, and what it cost.
struct Convergence {
    started: Instant,
    at: Instant,
    seconds: f64,
    control_plane_cpu: BTreeMap<String, f64>,
    writes_by_kind: BTreeMap<String, f64>,
    operator_cpu: f64,
    peak_rss: u64,
}

/// From a quiet control plane, creates N VirtualClusters and waits until
/// the operator has made every child and settled every status.
async fn converge(
    n: usize,
    children_per_cluster: usize,
    operator: &mut RunningOperator,
    bed: &TestBed,
    admin: &kube::Client,
    progress: &Progress,
) -> Result<Convergence> {
    let (waited, rate) = until_quiet(bed).await;
    eprintln!(
        "bench N={n}: control plane at {rate:.2} cores after {waited:.1}s; the operator's phase starts; {}",
        state(bed)
    );
    let operator_cpu_before = control_plane_cpu(bed);
    let operator_profile = profile(bed, "operator")?;
    let started = Instant::now();
    write_all(
        admin,
        "bench",
        (0..n).map(|i| vc(&format!("vc-{i:04}"), "bench")).collect(),
        Write::Create,
        CONCURRENCY,
    )
    .await?;
    wait_converged(
        n * children_per_cluster,
        n,
        progress,
        operator,
        bed,
        started,
    )
    .await?;
    let at = Instant::now();
    let seconds = started.elapsed().as_secs_f64();
    let control_plane_cpu = cpu_since(&operator_cpu_before, bed);
    let writes_by_kind = writes_by_kind(&operator_metrics(operator.port).await?);
    if let Some(mut p) = operator_profile {
        p.wait()?;
    }
    let (_, peak_rss) = memory(operator.proc.pid)?;
    let operator_cpu = cpu_seconds(operator.proc.pid)? - operator.cpu_before;
    eprintln!(
        "bench N={n}: converged {seconds:.1}s; operator CPU {operator_cpu:.1}s, peak RSS {:.1} MiB; control plane CPU s {control_plane_cpu:?}",
        peak_rss as f64 / 1048576.0
    );
    Ok(Convergence {
        started,
        at,
        seconds,
        control_plane_cpu,
        writes_by_kind,
        operator_cpu,
        peak_rss,
    })
}

/// Waits (up to 30 minutes from `started`) until `children` children exist
/// and `clusters` clusters report a settled status.
async fn wait_converged(
    children: usize,
    clusters: usize,
    progress: &Progress,
    operator: &mut RunningOperator,
    bed: &TestBed,
    started: Instant,
) -> Result<()> {
    // Reads memory only (see Progress).
    let poll = Duration::from_millis(250);
    loop {
        let (made, settled) = progress.now();
        if made == children && settled == clusters {
            return Ok(());
        }
        if !operator.proc.alive() {
            bail!(
                "the operator died; see {}",
                bed.dir.join("logs/operator.log").display()
            );
        }
        ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "not converged in 30 min ({made} children, {settled} settled)"
        );
        tokio::time::sleep(poll).await;
    }
}

/// The figures of the floors and of the operator's convergence.
fn convergence_figures(
    n: usize,
    options: &TestBedOptions,
    floors: &Floors<'_>,
    converged: &Convergence,
) -> Value {
    let floor_of = |order: FloorOrder| {
        floors
            .get(order.key())
            .cloned()
            .unwrap_or((f64::NAN, BTreeMap::new()))
    };
    let (floor_seconds, floor_cpu) = floor_of(FloorOrder::ByKind);
    let (floor_applied_seconds, floor_applied_cpu) = floor_of(FloorOrder::Applied);
    let (floor_by_cluster_seconds, floor_by_cluster_cpu) = floor_of(FloorOrder::ByCluster);
    let seconds = converged.seconds;
    json!({
        "n": n,
        "floor_seconds": floor_seconds,
        "controller_manager_controllers": options.controllers.as_deref().unwrap_or("*"),
        "converged_seconds": seconds,
        "ratio_to_floor": seconds / floor_seconds,
        "floor_control_plane_cpu_seconds": floor_cpu,
        "floor_by_cluster_seconds": floor_by_cluster_seconds,
        "ratio_to_floor_by_cluster": seconds / floor_by_cluster_seconds,
        "floor_by_cluster_control_plane_cpu_seconds": floor_by_cluster_cpu,
        "floor_applied_seconds": floor_applied_seconds,
        "ratio_to_floor_applied": seconds / floor_applied_seconds,
        "floor_applied_control_plane_cpu_seconds": floor_applied_cpu,
        "converged_control_plane_cpu_seconds": converged.control_plane_cpu,
        "converged_operator_cpu_seconds": converged.operator_cpu,
        "converged_peak_rss_bytes": converged.peak_rss,
        "converged_writes_by_kind": converged.writes_by_kind,
    })
}

/// What the operator has used once settled, from its start.
struct Totals {
    rss: u64,
    peak_rss: u64,
    cpu: f64,
    writes_by_kind: BTreeMap<String, f64>,
    writes: f64,
    requests: BTreeMap<String, u64>,
    /// The audit log's length when read.
    audit_offset: u64,
}

impl Totals {
    async fn read(operator: &RunningOperator) -> Result<Self> {
        let (rss, peak_rss) = memory(operator.proc.pid)?;
        let cpu = cpu_seconds(operator.proc.pid)? - operator.cpu_before;
        let writes_by_kind = writes_by_kind(&operator_metrics(operator.port).await?);
        let writes: f64 = writes_by_kind.values().sum();
        let (requests, audit_offset) = audit_counts(&operator.audit, operator.audit_offset, false)?;
        Ok(Totals {
            rss,
            peak_rss,
            cpu,
            writes_by_kind,
            writes,
            requests,
            audit_offset,
        })
    }
}

/// The figures of settling, the totals, idle and repair.
fn after_convergence_figures(
    n: usize,
    settled: f64,
    rss_before: u64,
    totals: &Totals,
    idle: &Idle,
    repair: f64,
) -> Value {
    let per = |v: f64| v / n as f64;
    let requests = &totals.requests;
    json!({
        "settled_seconds": settled,
        "rss_bytes": totals.rss,
        "peak_rss_bytes": totals.peak_rss,
        "rss_before_bytes": rss_before,
        "rss_per_cluster_bytes": per(totals.rss.saturating_sub(rss_before) as f64),
        "cpu_seconds": totals.cpu,
        "cpu_ms_per_cluster": per(totals.cpu * 1000.0),
        "writes": totals.writes,
        "writes_per_cluster": per(totals.writes),
        "writes_by_kind": totals.writes_by_kind,
        "requests_by_verb": requests,
        "requests_per_cluster_by_verb": requests.iter().map(|(k, v)| (k.clone(), per(*v as f64))).collect::<BTreeMap<_, _>>(),
        "idle_60s_writes": idle.writes,
        "idle_60s_requests": idle.requests,
        "idle_60s_cpu_seconds": idle.cpu,
        "repair_seconds": repair,
    })
}
