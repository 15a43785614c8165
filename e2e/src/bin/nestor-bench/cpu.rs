//! CPU and memory of processes, read from /proc: the operator's and each
//! control plane component's, and when the control plane is quiet.

use anyhow::{Context, Result};
use nestor_e2e::{TestBed, paths};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// CPU seconds (user + system) of a process.
pub(crate) fn cpu_seconds(pid: i32) -> Result<f64> {
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
pub(crate) fn control_plane_cpu(bed: &TestBed) -> BTreeMap<String, f64> {
    let mut cpu = BTreeMap::new();
    for (name, pid) in bed.pids() {
        if let Ok(seconds) = cpu_seconds(pid) {
            *cpu.entry(name).or_insert(0.0) += seconds;
        }
    }
    cpu
}

pub(crate) fn cpu_since(before: &BTreeMap<String, f64>, bed: &TestBed) -> BTreeMap<String, f64> {
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
/// starts on a busy control plane runs slower, and two minutes are not
/// always enough to calm it; when the wait gives up, it says which
/// component is still busy.
pub(crate) async fn until_quiet(bed: &TestBed) -> (f64, f64) {
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
pub(crate) fn state(bed: &TestBed) -> String {
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
pub(crate) fn profile(bed: &TestBed, phase: &str) -> Result<Option<std::process::Child>> {
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
pub(crate) fn memory(pid: i32) -> Result<(u64, u64)> {
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
