//! Deleting a cluster: the garbage collector removes everything it owned,
//! also while the operator is down.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use nestor_crds::{NodePool, VirtualCluster};
use nestor_e2e::harness::integration::{Env, Scenario, children, converged};
use nestor_e2e::support::{vc_yaml, wait_for};
use std::time::{Duration, Instant};

/// Test 7: Deleting a cluster removes every child, pod, volume claim and
/// pool through the garbage collector: no finalizer, so also while the
/// operator is down.
pub(crate) async fn delete_removes_everything(env: &Env) -> Result<()> {
    let mut s = env.scenario("delete").await?;
    s.apply(&vc_yaml("gone", "{}"))?;
    s.apply(&pool_yaml("gone"))?;
    converged(&s, "gone", Duration::from_secs(60)).await?;
    let vcs = s.api::<VirtualCluster>();
    let pools = s.api::<NodePool>();
    let uid = vcs.get("gone").await?.metadata.uid;
    ensure!(
        vcs.get("gone").await?.metadata.finalizers.is_none(),
        "a cluster has no finalizer"
    );
    wait_for(
        "the pool owned by its cluster",
        Duration::from_secs(30),
        || {
            let (pools, uid) = (pools.clone(), uid.clone());
            Box::pin(async move { owned_by(&pools, "gone-pool", uid.as_deref()).await })
        },
    )
    .await?;
    // The etcd volume claim exists (made by the StatefulSet controller), so
    // that its deletion below is seen, not assumed.
    let claims = s.api::<PersistentVolumeClaim>();
    wait_for("the etcd volume claim", Duration::from_secs(30), || {
        let claims = claims.clone();
        Box::pin(async move {
            let selected = ListParams::default().labels("nestor.dev/cluster=gone");
            Ok(!claims.list_metadata(&selected).await?.items.is_empty())
        })
    })
    .await?;
    ensure!(
        s.kubectl(&["delete", "vc/gone", "--wait=false"])?.ok,
        "delete failed"
    );
    gone_within(&s, "gone", "children left after deleting the cluster").await?;

    // Deleted while the operator is down: nothing waits for it but the
    // pool, whose finalizer tidies the nested cluster.
    s.apply(&vc_yaml("later", "{}"))?;
    s.apply(&pool_yaml("later"))?;
    converged(&s, "later", Duration::from_secs(60)).await?;
    let uid = vcs.get("later").await?.metadata.uid;
    wait_for(
        "the pool owned by its cluster",
        Duration::from_secs(30),
        || {
            let (pools, uid) = (pools.clone(), uid.clone());
            Box::pin(async move { owned_by(&pools, "later-pool", uid.as_deref()).await })
        },
    )
    .await?;
    if let Some(mut op) = s.operator.take() {
        op.stop();
    }
    ensure!(
        s.kubectl(&["delete", "vc/later", "--wait=false"])?.ok,
        "delete failed"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cluster_gone = vcs.get_opt("later").await?.is_none();
        let left = children(&s, "later").await?;
        // Gone already would mean its finalizer did not wait for the operator.
        let pool_deleting = pools
            .get_opt("later-pool")
            .await?
            .context("the pool went without its finalizer")?
            .metadata
            .deletion_timestamp
            .is_some();
        if cluster_gone && left.is_empty() && pool_deleting {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "with the operator down, the cluster was not deleted: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.restart_operator("delete-2").await?;
    gone_within(
        &s,
        "later",
        "the pool of the cluster deleted while the operator was down stayed",
    )
    .await?;
    Ok(())
}

/// Whether the pool has the cluster of `uid` as an owner, not as its
/// controller.
async fn owned_by(pools: &Api<NodePool>, pool: &str, uid: Option<&str>) -> Result<bool> {
    let pool = pools.get(pool).await?;
    Ok(pool
        .metadata
        .owner_references
        .unwrap_or_default()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid && o.controller.is_none()))
}

fn pool_yaml(cluster: &str) -> String {
    format!(
        "apiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: {cluster}-pool\nspec:\n  clusterRef:\n    name: {cluster}\n"
    )
}

async fn gone_within(s: &Scenario<'_>, vc: &str, failure: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_gone(s, vc).await? {
        ensure!(
            Instant::now() < deadline,
            "{failure}: {:?}",
            children(s, vc).await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Nothing of the cluster is left: the object, its children, its pods, its
/// etcd volume claims, its pools.
async fn all_gone(s: &Scenario<'_>, vc: &str) -> Result<bool> {
    let vc_left = s.api::<VirtualCluster>().get_opt(vc).await?.is_some();
    let children = children(s, vc).await?;
    let selected = ListParams::default().labels(&format!("nestor.dev/cluster={vc}"));
    let pods = s.api::<Pod>().list_metadata(&selected).await?.items.len();
    let claims = s
        .api::<PersistentVolumeClaim>()
        .list_metadata(&selected)
        .await?
        .items
        .len();
    let pools = s
        .api::<NodePool>()
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    Ok(!vc_left && children.is_empty() && pods == 0 && claims == 0 && pools == 0)
}
