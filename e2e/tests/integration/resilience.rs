//! The operator under strain: killed in the middle of a creation, its
//! leader lost, fifty clusters at once.

use anyhow::{Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use nestor_crds::VirtualCluster;
use nestor_e2e::harness::integration::{Env, children, converged, expected_children};
use nestor_e2e::support::{OPERATOR_NAMESPACE, vc_yaml, wait_for};
use nestor_e2e::tools::kubectl_ok;
use std::time::{Duration, Instant};

/// Test 8: Killing the operator in the middle of creating a cluster and
/// starting it again converges with no duplicate or orphan, and the CA
/// made before the crash is kept.
pub(crate) async fn crash_mid_creation_converges(env: &Env) -> Result<()> {
    let mut s = env.scenario("crash").await?;
    s.apply(&vc_yaml("crashy", "{}"))?;
    let secrets = s.api::<Secret>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while secrets.get_opt("crashy-ca").await?.is_none() {
        ensure!(Instant::now() < deadline, "the CA was never written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.operator_mut().kill();
    let partial = children(&s, "crashy").await?.len();
    let ca_before = secrets.get("crashy-ca").await?.data;
    s.restart_operator("crash-2").await?;
    let vc = converged(&s, "crashy", Duration::from_secs(60)).await?;
    let uid = vc.metadata.uid.unwrap_or_default();
    let found = children(&s, "crashy").await?;
    let expected: Vec<(String, String)> = expected_children("crashy")
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    let found_keys: Vec<(String, String)> = found.keys().cloned().collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    ensure!(
        found_keys == expected_sorted,
        "children after the crash: {found_keys:?}"
    );
    for ((kind, name), owners) in &found {
        ensure!(
            owners == &vec![format!("VirtualCluster/{uid}")],
            "{kind} {name} is owned by {owners:?}"
        );
    }
    ensure!(
        secrets.get("crashy-ca").await?.data == ca_before,
        "the CA was regenerated after the crash"
    );
    eprintln!(
        "crash_mid_creation_converges: {partial} of {} children existed at the crash",
        expected.len()
    );
    Ok(())
}

/// Test 9: Two replicas: only the leader reconciles; when it dies the other
/// takes over within the lease duration.
pub(crate) async fn leader_election_fails_over(env: &Env) -> Result<()> {
    let namespace = "t-leader";
    kubectl_ok(&env.admin, &["create", "namespace", namespace], None)?;
    let mut a = env.operator("leader-a", namespace, "nestor-leader")?;
    let mut b = env.operator("leader-b", namespace, "nestor-leader")?;
    a.wait_ready(Duration::from_secs(60)).await?;
    b.wait_ready(Duration::from_secs(60)).await?;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), OPERATOR_NAMESPACE);
    let holder = || async {
        anyhow::Ok(
            leases
                .get_opt("nestor-leader")
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut leader = holder().await?;
    while leader.is_empty() {
        ensure!(Instant::now() < deadline, "nobody took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
        leader = holder().await?;
    }
    kubectl_ok(
        &env.admin,
        &["apply", "-n", namespace, "-f", "-"],
        Some(&vc_yaml("led", "{}")),
    )?;
    let vcs: Api<VirtualCluster> = Api::namespaced(env.client.clone(), namespace);
    wait_for("the leader to reconcile", Duration::from_secs(30), || {
        let vcs = vcs.clone();
        Box::pin(async move { Ok(vcs.get("led").await?.status.is_some()) })
    })
    .await?;
    let (mut winner, mut follower) = if leader == "leader-a" { (a, b) } else { (b, a) };
    ensure!(
        winner.metric_sum("nestor_reconciles_total", "").await? > 0.0,
        "the leader did not reconcile"
    );
    ensure!(
        follower.metric_sum("nestor_reconciles_total", "").await? == 0.0,
        "the follower reconciled"
    );
    ensure!(
        follower.metric_sum("nestor_api_writes_total", "").await? == 0.0,
        "the follower wrote"
    );

    let killed = Instant::now();
    winner.kill();
    kubectl_ok(
        &env.admin,
        &["apply", "-n", namespace, "-f", "-"],
        Some(&vc_yaml("after", "{}")),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now_leader = holder().await?;
        let took_over = now_leader == follower.name
            && follower.metric_sum("nestor_reconciles_total", "").await? > 0.0;
        if took_over && vcs.get("after").await?.status.is_some() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the follower did not take over (holder: {now_leader})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    eprintln!(
        "leader_election_fails_over: the follower took over {:.1}s after the leader died (lease 6s)",
        took.as_secs_f64()
    );
    ensure!(
        took < Duration::from_secs(6 * 3),
        "take-over took {took:?}, far beyond the 6s lease"
    );
    follower.stop();
    Ok(())
}

/// Test 10: Fifty virtual clusters applied together all converge.
pub(crate) async fn fifty_clusters_converge(env: &Env) -> Result<()> {
    let s = env.scenario("many").await?;
    let yaml: Vec<String> = (0..50)
        .map(|i| vc_yaml(&format!("vc-{i:02}"), "{}"))
        .collect();
    let started = Instant::now();
    s.apply(&yaml.join("---\n"))?;
    for i in 0..50 {
        converged(&s, &format!("vc-{i:02}"), Duration::from_secs(300)).await?;
    }
    let took = started.elapsed();
    let writes = s
        .settle(Duration::from_secs(3), Duration::from_secs(120))
        .await?;
    eprintln!(
        "fifty_clusters_converge: 50 clusters ({} children) converged in {:.1}s with {writes} writes",
        50 * expected_children("x").len(),
        took.as_secs_f64()
    );
    Ok(())
}
