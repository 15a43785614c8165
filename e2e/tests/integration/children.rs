//! A cluster's children: every one created and owned, none written again
//! while nothing changed, one deleted by hand repaired, spec edits rolled
//! out.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use nestor_crds::{NodePool, VirtualCluster};
use nestor_e2e::harness::integration::{Env, children, condition, converged, secret_data};
use nestor_e2e::support::{vc_yaml, wait_for};
use std::time::{Duration, Instant};

/// Test 3: An empty spec and a NodePool give every child, owned; scaling the
/// pool reaches its StatefulSet; the scheduler sees the etcd pod; status
/// says honestly that nothing is ready.
pub(crate) async fn empty_spec_creates_every_child(env: &Env) -> Result<()> {
    let s = env.scenario("children").await?;
    s.apply(&vc_yaml("demo", "{}"))?;
    s.apply("apiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: workers\nspec:\n  clusterRef:\n    name: demo\n")?;
    let vc = converged(&s, "demo", Duration::from_secs(60)).await?;
    let uid = vc.metadata.uid.clone().unwrap_or_default();
    for ((kind, name), owners) in children(&s, "demo").await? {
        ensure!(
            owners == vec![format!("VirtualCluster/{uid}")],
            "{kind} {name} is owned by {owners:?}"
        );
    }
    let np_api = s.api::<NodePool>();
    let sts_api = s.api::<StatefulSet>();
    wait_for("the pool's StatefulSet", Duration::from_secs(30), || {
        let sts_api = sts_api.clone();
        Box::pin(async move { Ok(sts_api.get_opt("workers-node").await?.is_some()) })
    })
    .await?;
    let sts = sts_api.get("workers-node").await?;
    ensure!(
        sts.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "NodePool"),
        "node StatefulSet not owned by its pool"
    );
    for secret in ["workers-bootstrap"] {
        ensure!(
            s.api::<Secret>().get_opt(secret).await?.is_some(),
            "missing {secret}"
        );
    }
    let out = s.kubectl(&["scale", "np/workers", "--replicas=3"])?;
    ensure!(out.ok, "kubectl scale failed: {}", out.stderr);
    wait_for(
        "the scale to reach the StatefulSet and the pool's status",
        Duration::from_secs(30),
        || {
            let (sts_api, np_api) = (sts_api.clone(), np_api.clone());
            Box::pin(async move {
                let sts = sts_api.get("workers-node").await?;
                let np = np_api.get("workers").await?;
                let status = np.status.unwrap_or_default();
                Ok(sts.spec.and_then(|s| s.replicas) == Some(3)
                    && status.desired_replicas == 3
                    && status.replicas == 3)
            })
        },
    )
    .await?;
    let pods = s.api::<Pod>();
    wait_for(
        "the scheduler to see the etcd pod",
        Duration::from_secs(30),
        || {
            let pods = pods.clone();
            Box::pin(async move {
                let Some(pod) = pods.get_opt("demo-etcd-0").await? else {
                    return Ok(false);
                };
                Ok(pod
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    }))
            })
        },
    )
    .await?;
    let vc = s.api::<VirtualCluster>().get("demo").await?;
    let ready = condition(&vc, "Ready").context("no Ready condition")?;
    ensure!(
        ready.status == "False"
            && ready.reason == "ComponentsNotReady"
            && ready.message.contains("EtcdReady"),
        "Ready: {ready:?}"
    );
    let etcd = condition(&vc, "EtcdReady").context("no EtcdReady")?;
    ensure!(
        etcd.status == "False" && etcd.message == "0/1 members ready",
        "EtcdReady: {etcd:?}"
    );
    let status = vc.status.clone().unwrap_or_default();
    ensure!(
        status.admin_kubeconfig_secret.as_deref() == Some("demo-admin-kubeconfig"),
        "status: {status:?}"
    );
    ensure!(
        status
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("https://10.0.")),
        "endpoint: {:?}",
        status.endpoint
    );
    let np = np_api.get("workers").await?;
    let np_ready = np
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .context("pool Ready")?;
    ensure!(
        np_ready.status == "False" && np_ready.message.contains("waiting for VirtualCluster demo"),
        "pool Ready: {np_ready:?}"
    );
    Ok(())
}

/// Test 4: A reconcile of an unchanged object sends no write; a restarted
/// operator sends none either, and keys are byte-identical.
pub(crate) async fn unchanged_object_sends_no_write(env: &Env) -> Result<()> {
    let mut s = env.scenario("idle").await?;
    s.apply(&vc_yaml("quiet", "{}"))?;
    converged(&s, "quiet", Duration::from_secs(60)).await?;
    let before = s
        .settle(Duration::from_secs(3), Duration::from_secs(60))
        .await?;
    let reconciles = s.reconciles().await?;
    // Touch the object without changing its spec: a reconcile runs.
    s.kubectl(&["annotate", "vc/quiet", "test.nestor.dev/poke=1"])?;
    let op_reconciles = || async { s.reconciles().await };
    let deadline = Instant::now() + Duration::from_secs(20);
    while op_reconciles().await? <= reconciles {
        ensure!(
            Instant::now() < deadline,
            "no reconcile after the annotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = s
        .settle(Duration::from_secs(2), Duration::from_secs(30))
        .await?;
    ensure!(
        after == before,
        "an unchanged object caused {} writes",
        after - before
    );

    let keys_before = secret_data(&s, "quiet").await?;
    s.restart_operator("idle-2").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.reconciles().await? < 1.0 {
        ensure!(
            Instant::now() < deadline,
            "the restarted operator did not reconcile"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = s
        .settle(Duration::from_secs(3), Duration::from_secs(30))
        .await?;
    ensure!(
        writes == 0.0,
        "the restarted operator sent {writes} writes for an unchanged cluster"
    );
    let keys_after = secret_data(&s, "quiet").await?;
    ensure!(
        keys_before == keys_after,
        "certificates or keys changed across a restart"
    );
    Ok(())
}

/// A child deleted by hand is noticed and repaired at once, not at the next
/// resync.
pub(crate) async fn deleted_child_is_repaired(env: &Env) -> Result<()> {
    let s = env.scenario("repair").await?;
    s.apply(&vc_yaml("fix", "{}"))?;
    converged(&s, "fix", Duration::from_secs(60)).await?;
    let deployments = s.api::<Deployment>();
    let services = s.api::<Service>();
    let old_deployment = deployments.get("fix-scheduler").await?.metadata.uid;
    let old_service = services.get("fix-etcd").await?.metadata.uid;
    let deleted = Instant::now();
    deployments
        .delete("fix-scheduler", &Default::default())
        .await?;
    services.delete("fix-etcd", &Default::default()).await?;
    wait_for(
        "the deleted children to come back",
        Duration::from_secs(30),
        || {
            let (deployments, services) = (deployments.clone(), services.clone());
            let (old_deployment, old_service) = (old_deployment.clone(), old_service.clone());
            Box::pin(async move {
                let d = deployments
                    .get_opt("fix-scheduler")
                    .await?
                    .and_then(|d| d.metadata.uid);
                let s = services
                    .get_opt("fix-etcd")
                    .await?
                    .and_then(|s| s.metadata.uid);
                Ok(d.is_some() && d != old_deployment && s.is_some() && s != old_service)
            })
        },
    )
    .await?;
    eprintln!(
        "deleted_child_is_repaired: repaired in {:.2}s",
        deleted.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Test 5: Spec edits roll out to the children; an immutable field is refused.
pub(crate) async fn spec_edits_roll_out(env: &Env) -> Result<()> {
    let s = env.scenario("edits").await?;
    s.apply(&vc_yaml("edit", "{}"))?;
    converged(&s, "edit", Duration::from_secs(60)).await?;
    // Leaves are created with the roots; their first renewal (the new SAN
    // below) is an apply, which must take over every field the create gave
    // Nestor, so that later applies prune what they no longer send.
    let secrets = s.api::<Secret>();
    let serving = "edit-apiserver-certs";
    // Who wrote the object, and how: (manager, operation).
    let writers = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| -> Vec<(String, String)> {
        meta.managed_fields
            .iter()
            .flatten()
            .map(|e| {
                (
                    e.manager.clone().unwrap_or_default(),
                    e.operation.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let created = secrets.get(serving).await?;
    ensure!(
        writers(&created.metadata) == [("nestor-operator".to_string(), "Update".to_string())],
        "a new leaf is created by Nestor alone: {:?}",
        writers(&created.metadata)
    );
    // So is the API server's Deployment; the edit below is applied, and
    // takes over what the create gave Nestor in the same way.
    let deployments = s.api::<Deployment>();
    let nestor_entries = move |d: &Deployment| -> Vec<String> {
        writers(&d.metadata)
            .into_iter()
            .filter(|(manager, _)| manager == "nestor-operator")
            .map(|(_, operation)| operation)
            .collect()
    };
    let apiserver = deployments.get("edit-apiserver").await?;
    ensure!(
        nestor_entries(&apiserver) == ["Update"],
        "the API server's Deployment is created: {:?}",
        nestor_entries(&apiserver)
    );
    s.apply(&vc_yaml(
        "edit",
        "{apiServer: {certSANs: [edit.example.test], replicas: 2, extraArgs: {v: \"2\"}, resources: {requests: {cpu: 200m, memory: 256Mi}}}, controllerManager: {replicas: 2, extraArgs: {node-monitor-grace-period: 20s}}, scheduler: {extraArgs: {v: \"3\"}}}",
    ))?;
    wait_for(
        "the edits to reach the Deployments",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            Box::pin(async move {
                let api = deployments.get("edit-apiserver").await?;
                let cm = deployments.get("edit-controller-manager").await?;
                let sched = deployments.get("edit-scheduler").await?;
                let container = |d: &Deployment| {
                    d.spec
                        .as_ref()
                        .and_then(|s| s.template.spec.as_ref())
                        .map(|p| p.containers[0].clone())
                };
                let Some(api_c) = container(&api) else {
                    return Ok(false);
                };
                let cpu = api_c
                    .resources
                    .and_then(|r| r.requests)
                    .and_then(|r| r.get("cpu").cloned())
                    .map(|q| q.0);
                // (The controller-manager has no replicas before the API server
                // serves, which it never does without a kubelet.)
                Ok(api.spec.as_ref().and_then(|s| s.replicas) == Some(2)
                    && nestor_entries(&api) == ["Apply"]
                    && api_c
                        .command
                        .unwrap_or_default()
                        .contains(&"--v=2".to_string())
                    && cpu.as_deref() == Some("200m")
                    && container(&cm)
                        .and_then(|c| c.command)
                        .unwrap_or_default()
                        .contains(&"--node-monitor-grace-period=20s".to_string())
                    && container(&sched)
                        .and_then(|c| c.command)
                        .unwrap_or_default()
                        .contains(&"--v=3".to_string()))
            })
        },
    )
    .await?;
    wait_for(
        "the serving certificate's renewal",
        Duration::from_secs(30),
        || {
            let (secrets, created) = (secrets.clone(), created.clone());
            Box::pin(async move {
                let renewed = secrets.get(serving).await?;
                Ok(renewed.data != created.data
                    && writers(&renewed.metadata)
                        == [("nestor-operator".to_string(), "Apply".to_string())])
            })
        },
    )
    .await?;
    let out = s.kubectl(&[
        "patch",
        "vc/edit",
        "--type=merge",
        "-p",
        r#"{"spec":{"networking":{"podCIDR":"10.128.0.0/16"}}}"#,
    ])?;
    ensure!(
        !out.ok
            && out
                .stderr
                .contains("networking is immutable after creation"),
        "immutable networking: {}",
        out.stderr
    );
    Ok(())
}
