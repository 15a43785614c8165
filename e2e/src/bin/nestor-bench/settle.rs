//! After convergence: until the operator settles, 60 s of idle, and the
//! repair of a deleted child.

use crate::audit::audit_counts;
use crate::cpu::{cpu_seconds, until_quiet};
use crate::metrics::operator_writes;
use crate::progress::owned_selector;
use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams};
use nestor_e2e::TestBed;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A Deployment's default `progressDeadlineSeconds`, which Nestor keeps.
pub(crate) const PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

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

/// Waits until the operator has settled: the Deployments' progress
/// deadlines are past (no pod runs here, so each turns
/// ProgressDeadlineExceeded ten minutes after its ReplicaSet appeared, a
/// real change that the clusters' status reports), then no write for 20 s
/// (the workload controllers' status updates come late under load), and
/// none while the control plane calms down: idle is measured on a quiet
/// world. Returns the seconds from `started` to the last write.
pub(crate) async fn settle(
    bed: &TestBed,
    admin: &kube::Client,
    port: u16,
    started: Instant,
    converged_at: Instant,
) -> Result<f64> {
    tokio::time::sleep_until((converged_at + PROGRESS_DEADLINE).into()).await;
    deadlines_reported(admin, "bench", converged_at + PROGRESS_DEADLINE * 6).await?;
    loop {
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
            return Ok(settled);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the operator still writes after an hour"
        );
    }
}

/// What the operator does in 60 s with nothing to do.
pub(crate) struct Idle {
    pub(crate) writes: f64,
    pub(crate) cpu: f64,
    pub(crate) requests: BTreeMap<String, u64>,
}

/// Idle: 60 s with nothing to do, for the operator with PID `pid`, metrics
/// on `port`, `writes` so far and its requests in `audit` from
/// `audit_offset`.
pub(crate) async fn idle(
    pid: i32,
    port: u16,
    writes: f64,
    audit: &Path,
    audit_offset: u64,
) -> Result<Idle> {
    let idle_cpu_before = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle_writes = operator_writes(port).await? - writes;
    let idle_cpu = cpu_seconds(pid)? - idle_cpu_before;
    let (idle_requests, _) = audit_counts(audit, audit_offset, true)?;
    Ok(Idle {
        writes: idle_writes,
        cpu: idle_cpu,
        requests: idle_requests,
    })
}

/// Repair: a child deleted by hand; returns the seconds until the operator
/// has made it anew.
pub(crate) async fn repair(admin: &kube::Client) -> Result<f64> {
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
    Ok(deleted.elapsed().as_secs_f64())
}
