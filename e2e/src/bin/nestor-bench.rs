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
//! Longer than most files: one binary runs every phase of a measurement
//! (the floors, the operator, idle, repair) on the same harness, so that
//! every phase is measured the same way.

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::{Api, DeleteParams, PartialObjectMeta, PostParams};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::watcher;
use nestor_controllers::OperatorSettings;
use nestor_controllers::build::pki;
use nestor_controllers::build::pki_secrets::Exposure;
use nestor_controllers::build::{ByKind, DesiredCluster, desired_pki_secrets};
use nestor_controllers::model::inputs::ClusterInputs;
use nestor_controllers::model::validate::validate_cluster;
use nestor_crds::{VirtualCluster, VirtualClusterSpec};
use nestor_e2e::operator::sum_samples;
use nestor_e2e::process::{Lifetime, Proc, spawn};
use nestor_e2e::testbed::{TestBedOptions, client_for, free_port};
use nestor_e2e::tools::kubectl_ok;
use nestor_e2e::{TestBed, paths};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Requests sent at once, by the floor's client and by the operator.
const CONCURRENCY: usize = 16;
const OPERATOR_USER: &str = "nestor-operator";
/// The floor's client, audited like the operator so that both phases pay
/// the API server's audit logging.
const FLOOR_USER: &str = "nestor-floor";
/// A Deployment's default `progressDeadlineSeconds`, which Nestor keeps.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  users: [\"{OPERATOR_USER}\", \"{FLOOR_USER}\"]\n- level: None\n"
    )
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

/// CPU seconds of each test bed component (etcd, kube-apiserver, ...).
fn control_plane_cpu(bed: &TestBed) -> BTreeMap<String, f64> {
    let mut cpu = BTreeMap::new();
    for (name, pid) in bed.pids() {
        if let Ok(seconds) = cpu_seconds(pid) {
            *cpu.entry(name).or_insert(0.0) += seconds;
        }
    }
    cpu
}

fn cpu_since(before: &BTreeMap<String, f64>, bed: &TestBed) -> BTreeMap<String, f64> {
    control_plane_cpu(bed)
        .into_iter()
        .map(|(name, now)| {
            let spent = now - before.get(&name).copied().unwrap_or(0.0);
            (name, (spent * 100.0).round() / 100.0)
        })
        .collect()
}

/// Waits (up to five minutes) until the control plane uses under 0.15 of a
/// core, so that neither phase pays for the other's leftovers (the
/// controller-manager finishing its work on the floor's objects); returns
/// the seconds waited and the last rate seen, in cores. A phase that
/// started on a busy control plane ran slower in every run where it
/// happened (session 7: two minutes were not always enough); when the wait
/// gives up, it says which component was still busy.
async fn until_quiet(bed: &TestBed) -> (f64, f64) {
    const WINDOW: Duration = Duration::from_secs(4);
    const MOST: Duration = Duration::from_secs(300);
    let started = Instant::now();
    let total = |cpu: &BTreeMap<String, f64>| cpu.values().sum::<f64>();
    let mut before = control_plane_cpu(bed);
    loop {
        tokio::time::sleep(WINDOW).await;
        let now = control_plane_cpu(bed);
        let rate = (total(&now) - total(&before)) / WINDOW.as_secs_f64();
        if rate < 0.15 {
            return (started.elapsed().as_secs_f64(), rate);
        }
        if started.elapsed() > MOST {
            let busy: BTreeMap<&String, String> = now
                .iter()
                .map(|(name, cpu)| {
                    let spent = cpu - before.get(name).copied().unwrap_or(0.0);
                    (name, format!("{:.2}", spent / WINDOW.as_secs_f64()))
                })
                .collect();
            eprintln!("bench: the control plane is still busy, in cores: {busy:?}");
            return (started.elapsed().as_secs_f64(), rate);
        }
        before = now;
    }
}

/// What a phase starts from: the API server's and etcd's resident memory
/// and the size of etcd's database file.
fn state(bed: &TestBed) -> String {
    let rss = |name: &str| {
        bed.pids()
            .into_iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, pid)| memory(pid).ok())
            .map_or(f64::NAN, |(rss, _)| rss as f64 / 1048576.0)
    };
    let db = std::fs::metadata(bed.dir.join("etcd/member/snap/db"))
        .map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    format!(
        "kube-apiserver RSS {:.0} MiB, etcd RSS {:.0} MiB, etcd db {db:.0} MiB",
        rss("kube-apiserver"),
        rss("etcd")
    )
}

/// With `NESTOR_BENCH_PROFILE_APISERVER=SECONDS`, starts a CPU profile of
/// the API server for the first SECONDS of a phase, written to
/// `target/figures/apiserver-PHASE.pprof` (read with `go tool pprof`).
fn profile(bed: &TestBed, phase: &str) -> Result<Option<std::process::Child>> {
    let Ok(seconds) = std::env::var("NESTOR_BENCH_PROFILE_APISERVER") else {
        return Ok(None);
    };
    let dir = paths::repo_root().join("target/figures");
    std::fs::create_dir_all(&dir)?;
    let out = std::fs::File::create(dir.join(format!("apiserver-{phase}.pprof")))?;
    let child = std::process::Command::new(paths::tool("kubectl")?)
        .arg(format!("--kubeconfig={}", bed.kubeconfig.display()))
        .args([
            "get",
            "--raw",
            &format!("/debug/pprof/profile?seconds={seconds}"),
        ])
        .stdout(out)
        .spawn()?;
    Ok(Some(child))
}

/// (VmRSS, VmHWM) in bytes.
fn memory(pid: i32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn vc(name: &str, namespace: &str) -> VirtualCluster {
    let spec: VirtualClusterSpec =
        serde_json::from_value(json!({})).expect("an empty spec deserializes");
    let mut vc = VirtualCluster::new(name, spec);
    vc.metadata.namespace = Some(namespace.into());
    vc
}

/// How a benchmark client writes objects.
#[derive(Clone, Copy)]
enum Write {
    Create,
    Apply,
}

/// Writes objects with `in_flight` requests at once.
async fn write_all<K>(
    client: &kube::Client,
    namespace: &str,
    objects: Vec<K>,
    how: Write,
    in_flight: usize,
) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let apply = kube::api::PatchParams::apply("nestor-bench").force();
    futures::stream::iter(objects.into_iter().map(|o| {
        let (api, apply) = (api.clone(), apply.clone());
        async move {
            match how {
                Write::Create => api.create(&PostParams::default(), &o).await,
                Write::Apply => {
                    let name = o.meta().name.clone().unwrap_or_default();
                    api.patch(&name, &apply, &kube::api::Patch::Apply(&o)).await
                }
            }
        }
    }))
    .buffer_unordered(in_flight)
    .try_collect()
    .await
    .map_err(Into::into)
}

/// Every child of `vc`, built by the operator's own builders.
fn children(
    vc: &VirtualCluster,
    settings: &OperatorSettings,
    bundle: &pki::CaBundle,
) -> Result<ByKind> {
    let valid = validate_cluster(
        &vc.metadata.name.clone().unwrap_or_default(),
        &vc.spec,
        &settings.platform(),
    )?;
    let inputs = ClusterInputs::new(vc, valid, settings, "bench".into());
    let exposure = Exposure {
        admin_endpoint: inputs.names.internal_endpoint(),
        extra_sans: vec![],
    };
    let client_signer = pki::generate_ca("bench-client-signer")?;
    Ok(DesiredCluster::new(&inputs, &exposure, bundle, &client_signer, None)?.by_kind())
}

/// The order in which the floor creates the children.
#[derive(Clone, Copy, Debug)]
enum FloorOrder {
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
fn floor_orders() -> Result<Vec<FloorOrder>> {
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
    fn key(self) -> &'static str {
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

/// Writes children kind by kind (Secrets, Services, ConfigMaps,
/// NetworkPolicies, StatefulSets, Deployments), `in_flight` at once.
async fn create_in_order(
    client: &kube::Client,
    namespace: &str,
    objects: ByKind,
    create: Write,
    in_flight: usize,
) -> Result<()> {
    write_all(client, namespace, objects.secrets, create, in_flight).await?;
    write_all(client, namespace, objects.services, create, in_flight).await?;
    write_all(client, namespace, objects.config_maps, create, in_flight).await?;
    write_all(
        client,
        namespace,
        objects.network_policies,
        create,
        in_flight,
    )
    .await?;
    write_all(client, namespace, objects.stateful_sets, create, in_flight).await?;
    write_all(client, namespace, objects.deployments, create, in_flight).await?;
    Ok(())
}

/// The floor: a plain client creates N VirtualClusters and every child,
/// built beforehand by the same builders (certificates included, outside
/// the timing), with `CONCURRENCY` requests in flight.
async fn floor(client: &kube::Client, n: usize, order: FloorOrder) -> Result<f64> {
    let namespace = order.namespace();
    let settings = OperatorSettings::default();
    let bundle = pki::generate_ca_bundle("floor")?;
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

/// A test bed of its own for one phase, with Nestor's CRDs established.
///
/// Every phase starts from the same state. On one test bed shared by every
/// phase, each phase would begin where the earlier ones left it, their
/// objects deleted: the API server's memory and etcd's database grow from
/// phase to phase, and the deletions take minutes to die down, an effect
/// that cannot be told apart from the machine's drift. A fresh test bed
/// per phase removes the question.
async fn fresh_bed(dir: &Path, options: &TestBedOptions) -> Result<(TestBed, kube::Client)> {
    let mut bed = TestBed::start(dir, Lifetime::Tied, options).await?;
    match install_crds(&bed).await {
        Ok(admin) => Ok((bed, admin)),
        Err(e) => {
            bed.keep_logs();
            eprintln!("bench: logs kept in {}", dir.join("logs").display());
            Err(e)
        }
    }
}

async fn install_crds(bed: &TestBed) -> Result<kube::Client> {
    kubectl_ok(
        &bed.kubeconfig,
        &[
            "apply",
            "--server-side",
            "-f",
            &paths::repo_root()
                .join("crds/nestor.dev_crds.yaml")
                .display()
                .to_string(),
        ],
        None,
    )?;
    kubectl_ok(
        &bed.kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd/virtualclusters.nestor.dev",
            "crd/nodepools.nestor.dev",
        ],
        None,
    )?;
    bed.client().await
}

/// Measures one floor on a test bed of its own (see [`fresh_bed`]), under
/// the same observers as the operator (the benchmark's watches of every
/// kind under test) and the same audit logging, from a quiet control
/// plane.
async fn measure_floor(
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

/// How many of the operator's children exist and how many clusters report
/// a status for their current generation, read from watches. Polling with
/// lists would read every object from etcd every poll (20,000 of them at
/// N = 1,000): load on the API server under test that the floor, which
/// only awaits its own creates, does not carry.
struct Progress {
    children: Vec<Box<dyn Fn() -> usize + Send + Sync>>,
    clusters: Store<VirtualCluster>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Progress {
    async fn start(client: &kube::Client, namespace: &str) -> Result<Self> {
        let (clusters, writer) = reflector::store();
        let api = Api::<VirtualCluster>::namespaced(client.clone(), namespace);
        let stream = reflector(writer, watcher(api, watcher::Config::default()));
        let mut progress = Progress {
            children: vec![],
            clusters,
            tasks: vec![tokio::spawn(stream.for_each(|_| async {}))],
        };
        progress.clusters.wait_until_ready().await?;
        progress.count::<Secret>(client, namespace).await?;
        progress.count::<Service>(client, namespace).await?;
        progress.count::<ConfigMap>(client, namespace).await?;
        progress.count::<NetworkPolicy>(client, namespace).await?;
        progress.count::<StatefulSet>(client, namespace).await?;
        progress.count::<Deployment>(client, namespace).await?;
        Ok(progress)
    }

    async fn count<K>(&mut self, client: &kube::Client, namespace: &str) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store::<PartialObjectMeta<K>>();
        // An Api of PartialObjectMeta sends metadata-only requests.
        let api = Api::<PartialObjectMeta<K>>::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(&owned_selector());
        let stream = reflector(writer, watcher(api, config));
        self.tasks.push(tokio::spawn(stream.for_each(|_| async {})));
        store.wait_until_ready().await?;
        self.children.push(Box::new(move || store.state().len()));
        Ok(())
    }

    fn now(&self) -> (usize, usize) {
        let children = self.children.iter().map(|count| count()).sum();
        let settled = self
            .clusters
            .state()
            .iter()
            .filter(|vc| {
                vc.status.as_ref().is_some_and(|s| {
                    s.observed_generation == vc.metadata.generation && s.endpoint.is_some()
                })
            })
            .count();
        (children, settled)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The operator's writes so far, by verb and kind.
fn writes_by_kind(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("nestor_api_writes_total{"))
        .map(|line| {
            let labels = line
                .split('{')
                .nth(1)
                .and_then(|l| l.split('}').next())
                .unwrap_or_default()
                .to_string();
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            (labels, value)
        })
        .collect()
}

/// Selects the objects Nestor's builders make.
fn owned_selector() -> String {
    let (key, value) = nestor_controllers::model::names::MANAGED_BY;
    format!("{key}={value}")
}

/// The operator's writes so far.
async fn operator_writes(port: u16) -> Result<f64> {
    Ok(sum_samples(
        &operator_metrics(port).await?,
        "nestor_api_writes_total",
        "",
    ))
}

/// Waits until the workload controller has decided every Deployment's
/// rollout: its `Progressing` condition is either complete
/// (`NewReplicaSetAvailable`, as for those scaled to zero) or failed
/// (`ProgressDeadlineExceeded`). Asks every 10 s. Gives up when a
/// Deployment still pending was last updated more than its progress
/// deadline and five minutes ago, or after `cap`: the controller-manager
/// (20 requests a second by default) may reach the last of thousands of
/// Deployments many minutes after convergence, and its clock for each
/// starts then.
async fn deadlines_reported(client: &kube::Client, namespace: &str, cap: Instant) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::ListParams::default().labels(&owned_selector());
    let grace = k8s_openapi::jiff::SignedDuration::from_secs(300);
    loop {
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut pending = BTreeMap::<String, usize>::new();
        let mut overdue = 0;
        for d in api.list(&params).await?.items {
            let progressing = d
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"));
            let reason = progressing
                .and_then(|c| c.reason.clone())
                .unwrap_or_else(|| "no Progressing condition".into());
            if reason == "ProgressDeadlineExceeded" || reason == "NewReplicaSetAvailable" {
                continue;
            }
            *pending.entry(reason).or_default() += 1;
            let deadline = k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
                d.spec
                    .as_ref()
                    .and_then(|s| s.progress_deadline_seconds)
                    .unwrap_or(600),
            ));
            let updated = progressing.and_then(|c| c.last_update_time.as_ref());
            if updated.is_some_and(|t| now.duration_since(t.0) > deadline + grace) {
                overdue += 1;
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        ensure!(
            overdue == 0 && Instant::now() < cap,
            "Deployments still progressing, by reason: {pending:?}; {overdue} of them past their deadline"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn operator_metrics(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// Requests by verb (and, with `by_resource`, resource) in the audit log,
/// from the given byte offset.
fn audit_counts(path: &Path, from: u64, by_resource: bool) -> Result<(BTreeMap<String, u64>, u64)> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in bytes[from as usize..]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let Ok(event) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if event["user"]["username"].as_str() != Some(OPERATOR_USER) {
            continue;
        }
        let stage = event["stage"].as_str().unwrap_or_default();
        let verb = event["verb"].as_str().unwrap_or_default().to_string();
        // A watch is counted when it starts; everything else when it ends.
        let counted = if verb == "watch" {
            stage == "ResponseStarted"
        } else {
            stage == "ResponseComplete"
        };
        if counted {
            let key = if by_resource {
                let r = &event["objectRef"];
                let sub = r["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!("{verb} {}{sub}", r["resource"].as_str().unwrap_or_default())
            } else {
                verb
            };
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    Ok((counts, bytes.len() as u64))
}

async fn run(n: usize, operator_bin: &Path) -> Result<Value> {
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

/// The operator's phase (and, in a full run, its settle, idle and repair
/// phases) on a test bed of its own.
async fn measure(
    n: usize,
    operator_bin: &Path,
    bed: &TestBed,
    admin: &kube::Client,
    options: &TestBedOptions,
    floors: &BTreeMap<&str, (f64, BTreeMap<String, f64>)>,
) -> Result<Value> {
    let admin = admin.clone();
    kubectl_ok(&bed.kubeconfig, &["create", "namespace", "bench"], None)?;
    let floor_of = |order: FloorOrder| {
        floors
            .get(order.key())
            .cloned()
            .unwrap_or((f64::NAN, BTreeMap::new()))
    };
    let (floor_seconds, floor_cpu) = floor_of(FloorOrder::ByKind);
    let (floor_applied_seconds, floor_applied_cpu) = floor_of(FloorOrder::Applied);
    let (floor_by_cluster_seconds, floor_by_cluster_cpu) = floor_of(FloorOrder::ByCluster);

    let kubeconfig =
        bed.user_kubeconfig(OPERATOR_USER, &["system:masters"], "operator.kubeconfig")?;
    let port = free_port()?;
    let mut operator: Proc = spawn(
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
    let (rss_before, _) = memory(operator.pid)?;
    let cpu_before = cpu_seconds(operator.pid)?;
    let audit = bed.dir.join("audit.log");
    let (_, audit_offset) = audit_counts(&audit, 0, false)?;

    // As many as the operator's own builders make.
    let children_per_cluster = children(
        &vc("vc-0000", "bench"),
        &OperatorSettings::default(),
        &pki::generate_ca_bundle("bench")?,
    )?
    .len();
    let progress = Progress::start(&admin, "bench").await?;
    let (waited, rate) = until_quiet(bed).await;
    eprintln!(
        "bench N={n}: control plane at {rate:.2} cores after {waited:.1}s; the operator's phase starts; {}",
        state(bed)
    );
    let operator_cpu_before = control_plane_cpu(bed);
    let operator_profile = profile(bed, "operator")?;
    let started = Instant::now();
    write_all(
        &admin,
        "bench",
        (0..n).map(|i| vc(&format!("vc-{i:04}"), "bench")).collect(),
        Write::Create,
        CONCURRENCY,
    )
    .await?;
    // Reads memory only (see Progress).
    let poll = Duration::from_millis(250);
    loop {
        let (children, settled) = progress.now();
        if children == n * children_per_cluster && settled == n {
            break;
        }
        if !operator.alive() {
            bail!(
                "the operator died; see {}",
                bed.dir.join("logs/operator.log").display()
            );
        }
        ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "not converged in 30 min ({children} children, {settled} settled)"
        );
        tokio::time::sleep(poll).await;
    }
    let converged_at = Instant::now();
    let converged = started.elapsed().as_secs_f64();
    let converged_cpu = cpu_since(&operator_cpu_before, bed);
    let converged_writes = writes_by_kind(&operator_metrics(port).await?);
    if let Some(mut p) = operator_profile {
        p.wait()?;
    }
    let (_, hwm_converged) = memory(operator.pid)?;
    let cpu_converged = cpu_seconds(operator.pid)? - cpu_before;
    eprintln!(
        "bench N={n}: converged {converged:.1}s; operator CPU {cpu_converged:.1}s, peak RSS {:.1} MiB; control plane CPU s {converged_cpu:?}",
        hwm_converged as f64 / 1048576.0
    );
    let mut figures = json!({
        "n": n,
        "floor_seconds": floor_seconds,
        "controller_manager_controllers": options.controllers.as_deref().unwrap_or("*"),
        "converged_seconds": converged,
        "ratio_to_floor": converged / floor_seconds,
        "floor_control_plane_cpu_seconds": floor_cpu,
        "floor_by_cluster_seconds": floor_by_cluster_seconds,
        "ratio_to_floor_by_cluster": converged / floor_by_cluster_seconds,
        "floor_by_cluster_control_plane_cpu_seconds": floor_by_cluster_cpu,
        "floor_applied_seconds": floor_applied_seconds,
        "ratio_to_floor_applied": converged / floor_applied_seconds,
        "floor_applied_control_plane_cpu_seconds": floor_applied_cpu,
        "converged_control_plane_cpu_seconds": converged_cpu,
        "converged_operator_cpu_seconds": cpu_converged,
        "converged_peak_rss_bytes": hwm_converged,
        "converged_writes_by_kind": converged_writes,
    });
    if std::env::var_os("NESTOR_BENCH_CONVERGE_ONLY").is_some() {
        // For quick before/after comparisons: no settle, idle or repair.
        operator.stop(Duration::from_secs(10));
        return Ok(figures);
    }
    // Settled: the Deployments' progress deadlines are past (no pod runs
    // here, so each turns ProgressDeadlineExceeded ten minutes after its
    // ReplicaSet appeared, a real change that the clusters' status reports),
    // then no write for 20 s (the workload controllers' status updates come
    // late under load), and none while the control plane calms down: idle
    // is measured on a quiet world.
    tokio::time::sleep_until((converged_at + PROGRESS_DEADLINE).into()).await;
    deadlines_reported(&admin, "bench", converged_at + PROGRESS_DEADLINE * 6).await?;
    let settled = loop {
        let mut last = operator_writes(port).await?;
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = operator_writes(port).await?;
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        let settled = started.elapsed().as_secs_f64() - 20.0;
        until_quiet(bed).await;
        if operator_writes(port).await? == last {
            break settled;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the operator still writes after an hour"
        );
    };
    let (rss, hwm) = memory(operator.pid)?;
    let cpu = cpu_seconds(operator.pid)? - cpu_before;
    let writes_by_kind = writes_by_kind(&operator_metrics(port).await?);
    let writes: f64 = writes_by_kind.values().sum();
    let (requests, audit_offset) = audit_counts(&audit, audit_offset, false)?;

    // Idle: 60 s with nothing to do.
    let idle_cpu_before = cpu_seconds(operator.pid)?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle_writes = operator_writes(port).await? - writes;
    let idle_cpu = cpu_seconds(operator.pid)? - idle_cpu_before;
    let (idle_requests, _) = audit_counts(&audit, audit_offset, true)?;

    // Repair: a child deleted by hand.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "bench");
    let victim = "vc-0000-scheduler";
    let old_uid = deployments.get(victim).await?.metadata.uid;
    let deleted = Instant::now();
    deployments.delete(victim, &DeleteParams::default()).await?;
    loop {
        if let Some(d) = deployments.get_opt(victim).await?
            && d.metadata.uid != old_uid
        {
            break;
        }
        ensure!(
            deleted.elapsed() < Duration::from_secs(60),
            "the deleted Deployment was not repaired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let repair = deleted.elapsed().as_secs_f64();
    operator.stop(Duration::from_secs(10));

    let per = |v: f64| v / n as f64;
    let rest = json!({
        "settled_seconds": settled,
        "rss_bytes": rss,
        "peak_rss_bytes": hwm,
        "rss_before_bytes": rss_before,
        "rss_per_cluster_bytes": per(rss.saturating_sub(rss_before) as f64),
        "cpu_seconds": cpu,
        "cpu_ms_per_cluster": per(cpu * 1000.0),
        "writes": writes,
        "writes_per_cluster": per(writes),
        "writes_by_kind": writes_by_kind,
        "requests_by_verb": requests,
        "requests_per_cluster_by_verb": requests.iter().map(|(k, v)| (k.clone(), per(*v as f64))).collect::<BTreeMap<_, _>>(),
        "idle_60s_writes": idle_writes,
        "idle_60s_requests": idle_requests,
        "idle_60s_cpu_seconds": idle_cpu,
        "repair_seconds": repair,
    });
    if let (Value::Object(all), Value::Object(rest)) = (&mut figures, rest) {
        all.extend(rest);
    }
    Ok(figures)
}

/// The by-cluster floor once more, after the operator's phase: this
/// machine's speed drifts by up to half within minutes, and the mean of
/// the floors on both sides of the operator evens out a drift between the
/// phases (not one within a phase). In a
/// converge-only run it follows the convergence within a minute; in a full
/// run, the settle, idle and repair phases (about 25 minutes at N = 1,000).
fn floor_after(figures: &mut Value, (after, cpu): (f64, BTreeMap<String, f64>)) {
    let before = figures["floor_by_cluster_seconds"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let converged = figures["converged_seconds"].as_f64().unwrap_or(f64::NAN);
    figures["floor_by_cluster_after_seconds"] = json!(after);
    figures["floor_by_cluster_after_control_plane_cpu_seconds"] = json!(cpu);
    figures["floor_by_cluster_drift"] = json!(after / before);
    figures["ratio_to_floor_by_cluster_bracketed"] = json!(converged / ((before + after) / 2.0));
}

/// The cost of one cluster's certificates: a CA bundle and every PKI Secret.
fn certificate_cost() -> Result<f64> {
    let settings = OperatorSettings::default();
    let mut cluster = vc("cost", "bench");
    cluster.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let valid = validate_cluster("cost", &cluster.spec, &settings.platform())?;
    let inputs = ClusterInputs::new(&cluster, valid, &settings, String::new());
    let exposure = Exposure {
        admin_endpoint: "https://10.0.0.1:6443".into(),
        extra_sans: vec!["10.0.0.1".into()],
    };
    let rounds = 50;
    let started = Instant::now();
    for _ in 0..rounds {
        let bundle = pki::generate_ca_bundle("cost")?;
        let client_signer = pki::generate_ca("cost-client-signer")?;
        desired_pki_secrets(&inputs, &exposure, &bundle, &client_signer)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / rounds as f64)
}

/// What a write costs the API server: N Secrets and N Deployments (one
/// cluster's, renamed), created with POST in one namespace and with
/// server-side apply in another, 16 requests in flight. Wall time and the
/// CPU seconds of the API server and etcd for each.
async fn write_costs(n: usize) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("nestor-bench-writes-{}", std::process::id()));
    let bed = TestBed::start(&dir, Lifetime::Tied, &TestBedOptions::default()).await?;
    let admin = bed.client().await?;
    let bundle = pki::generate_ca_bundle("writes")?;
    let objects = children(
        &vc("vc-0000", "writes"),
        &OperatorSettings::default(),
        &bundle,
    )?;
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
        let figures = write_costs(n).await?;
        let dir = paths::repo_root().join("target/figures");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("writes.json"),
            serde_json::to_string_pretty(&figures)?,
        )?;
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    let sizes: Vec<usize> = match std::env::args().nth(1) {
        Some(list) => list
            .split(',')
            .map(|n| n.trim().parse())
            .collect::<Result<_, _>>()
            .context("sizes: a comma-separated list")?,
        None => vec![10, 100, 1000],
    };
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
    println!();
    println!(
        "| N | floor s (by kind / by cluster / applied; by cluster after) | operator s | ratio (by kind / by cluster / applied; by cluster bracketed) | settled s | peak RSS MiB | RSS/cluster KiB | CPU ms/cluster | writes/cluster | requests/cluster | idle 60 s writes | idle 60 s CPU s | repair s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
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
    println!("certificates of one cluster: {cert_ms:.2} ms");
    let dir = paths::repo_root().join("target/figures");
    std::fs::create_dir_all(&dir)?;
    let all = json!({ "certificate_ms_per_cluster": cert_ms, "runs": results });
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&all)?)?;
    println!("figures written to {}", dir.join("bench.json").display());
    Ok(())
}
