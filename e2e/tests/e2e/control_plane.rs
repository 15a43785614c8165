//! The control plane of a virtual cluster: Nestor installed with Helm runs
//! it, it turns Ready, serves clients, survives the loss of an etcd member,
//! keeps tenants apart, and leaves the host clean when deleted.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use nestor_crds::VirtualCluster;
use nestor_e2e::harness::e2e::Env;
use nestor_e2e::support::{OPERATOR_NAMESPACE, vc_yaml, wait_for};
use nestor_e2e::testbed::client_for;
use nestor_e2e::tools::{kubectl, kubectl_ok};
use std::time::{Duration, Instant};

/// Test 1: `helm install` with the locally built image; the operator pod is
/// Ready and is the one that reconciles (it holds the Lease).
pub(crate) async fn helm_install_runs_the_operator(env: &Env) -> Result<()> {
    let pods = env.api::<Pod>(OPERATOR_NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=nestor"))
        .await?;
    let pod = list.items.first().context("no operator pod")?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ensure!(ready, "operator pod {name} is not Ready");
    let image = pod
        .spec
        .as_ref()
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default();
    ensure!(
        image.starts_with("ghcr.io/nestor-dev/nestor-operator:"),
        "operator image {image}"
    );
    let leases = env.api::<Lease>(OPERATOR_NAMESPACE);
    let holder = leases
        .get("nestor-operator")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    ensure!(
        holder == name,
        "the lease is held by {holder}, not the chart's pod {name}"
    );
    Ok(())
}

/// Test 2: an empty spec runs etcd, apiserver, controller-manager and
/// scheduler; `Ready` turns true only once the nested API answers /readyz.
pub(crate) async fn empty_spec_becomes_ready(env: &Env) -> Result<()> {
    let ns = env.namespace("e2e-ready")?;
    let start = Instant::now();
    env.apply(&ns, &vc_yaml("first", "{}"))?;
    let took = env
        .ready(&ns, "first", start, Duration::from_secs(240))
        .await?;
    eprintln!(
        "empty_spec_becomes_ready: apply to Ready in {:.1}s",
        took.as_secs_f64()
    );
    let config = env.nested_kubeconfig(&ns, "first").await?;
    let nested = client_for(&config).await?;
    let readyz = nested
        .request_text(http::Request::get("/readyz").body(Vec::new())?)
        .await?;
    ensure!(readyz == "ok", "/readyz answered {readyz}");
    for component in [
        "etcd",
        "apiserver",
        "controller-manager",
        "scheduler",
        "coredns",
    ] {
        let pods = env
            .api::<Pod>(&ns)
            .list(&ListParams::default().labels(&format!(
                "nestor.dev/cluster=first,app.kubernetes.io/component={component}"
            )))
            .await?;
        ensure!(
            pods.items
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")),
            "no running {component} pod"
        );
    }
    let vc = env.api::<VirtualCluster>(&ns).get("first").await?;
    ensure!(
        vc.status.as_ref().and_then(|s| s.version.as_deref()) == Some(nestor_crds::DEFAULT_VERSION),
        "status.version: {:?}",
        vc.status
    );
    ns.done()?;
    Ok(())
}

/// Test 3: with the admin kubeconfig and the published endpoint, a client
/// outside the nested cluster uses it; the nested controllers act.
pub(crate) async fn nested_cluster_serves_clients(env: &Env) -> Result<()> {
    let ns = env.namespace("e2e-client")?;
    let start = Instant::now();
    env.apply(&ns, &vc_yaml("tenant", "{}"))?;
    env.ready(&ns, "tenant", start, Duration::from_secs(240))
        .await?;
    let config = env.nested_kubeconfig(&ns, "tenant").await?;
    let endpoint = env
        .api::<VirtualCluster>(&ns)
        .get("tenant")
        .await?
        .status
        .and_then(|s| s.endpoint)
        .unwrap_or_default();
    let text = std::fs::read_to_string(&config)?;
    ensure!(
        text.contains(&format!("server: {endpoint}")),
        "the kubeconfig does not point at the published endpoint {endpoint}"
    );
    let out = kubectl_ok(&config, &["get", "namespaces", "-o", "name"], None)?;
    ensure!(out.contains("namespace/kube-system"), "namespaces: {out}");
    kubectl_ok(&config, &["create", "namespace", "shop"], None)?;
    kubectl_ok(
        &config,
        &[
            "-n",
            "shop",
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=test",
        ],
        None,
    )?;
    kubectl_ok(
        &config,
        &[
            "-n",
            "shop",
            "create",
            "deployment",
            "web",
            "--image=registry.k8s.io/pause:3.10",
            "--replicas=2",
        ],
        None,
    )?;
    let nested = client_for(&config).await?;
    let pods: Api<Pod> = Api::namespaced(nested.clone(), "shop");
    wait_for(
        "the nested controller-manager to create the pods",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            Box::pin(async move {
                Ok(pods
                    .list(&ListParams::default().labels("app=web"))
                    .await?
                    .items
                    .len()
                    == 2)
            })
        },
    )
    .await?;
    let rs = kubectl_ok(
        &config,
        &["-n", "shop", "get", "replicasets", "-o", "name"],
        None,
    )?;
    ensure!(rs.contains("replicaset.apps/web-"), "no ReplicaSet: {rs}");
    let leases: Api<Lease> = Api::namespaced(nested, "kube-system");
    let lease = leases
        .get("kube-scheduler")
        .await?
        .spec
        .context("scheduler lease has no spec")?;
    ensure!(
        lease
            .holder_identity
            .is_some_and(|h| h.starts_with("tenant-scheduler-")),
        "scheduler lease holder"
    );
    ns.done()?;
    Ok(())
}

/// Test 4: a 3-member etcd survives the loss of a member: data written
/// before is all there, the API keeps serving, the member rejoins with its
/// volume.
pub(crate) async fn three_member_etcd_survives_member_loss(env: &Env) -> Result<()> {
    let ns = env.namespace("e2e-ha")?;
    let start = Instant::now();
    env.apply(&ns, &vc_yaml("ha", "{etcd: {replicas: 3}}"))?;
    let took = env
        .ready(&ns, "ha", start, Duration::from_secs(300))
        .await?;
    eprintln!(
        "three_member_etcd_survives_member_loss: 3-member cluster Ready in {:.1}s",
        took.as_secs_f64()
    );
    let nested = client_for(&env.nested_kubeconfig(&ns, "ha").await?).await?;
    let cms: Api<ConfigMap> = Api::namespaced(nested.clone(), "default");
    for i in 0..20 {
        let cm: ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("before-{i}")}, "data": {"i": i.to_string()}}),
        )?;
        cms.create(&PostParams::default(), &cm).await?;
    }
    let claims = env.api::<PersistentVolumeClaim>(&ns);
    let claim_uid = claims.get("data-ha-etcd-1").await?.metadata.uid;
    env.api::<Pod>(&ns)
        .delete("ha-etcd-1", &DeleteParams::default())
        .await?;
    let lost = Instant::now();
    let mut failures = 0;
    let mut first_ok_after_failure = None;
    let sts = env.api::<StatefulSet>(&ns);
    loop {
        match cms.list(&ListParams::default()).await {
            Ok(list) => {
                ensure!(
                    list.items
                        .iter()
                        .filter(|c| c
                            .metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("before-")))
                        .count()
                        == 20,
                    "data lost"
                );
                if failures > 0 && first_ok_after_failure.is_none() {
                    first_ok_after_failure = Some(lost.elapsed());
                }
            }
            Err(_) => failures += 1,
        }
        let ready = sts
            .get("ha-etcd")
            .await?
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let recreated = env
            .api::<Pod>(&ns)
            .get_opt("ha-etcd-1")
            .await?
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        if ready == 3 && recreated && lost.elapsed() > Duration::from_secs(2) {
            break;
        }
        ensure!(
            lost.elapsed() < Duration::from_secs(180),
            "the member did not rejoin in 180s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "three_member_etcd_survives_member_loss: member back in {:.1}s; {failures} failed reads meanwhile",
        lost.elapsed().as_secs_f64()
    );
    ensure!(
        claims.get("data-ha-etcd-1").await?.metadata.uid == claim_uid,
        "the member came back on a new volume"
    );
    // Writes work with the member back, and every earlier object is there.
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "after"}}))?;
    cms.create(&PostParams::default(), &cm).await?;
    ensure!(
        cms.list(&ListParams::default()).await?.items.len() >= 21,
        "objects missing after the rejoin"
    );
    ns.done()?;
    Ok(())
}

/// Test 5: two virtual clusters side by side: each kubeconfig sees only its
/// own cluster, and neither grants anything in the other or on the host.
pub(crate) async fn tenants_are_isolated(env: &Env) -> Result<()> {
    let ns = env.namespace("e2e-tenants")?;
    let start = Instant::now();
    env.apply(
        &ns,
        &format!("{}---\n{}", vc_yaml("alpha", "{}"), vc_yaml("beta", "{}")),
    )?;
    env.ready(&ns, "alpha", start, Duration::from_secs(300))
        .await?;
    env.ready(&ns, "beta", start, Duration::from_secs(300))
        .await?;
    let alpha = env.nested_kubeconfig(&ns, "alpha").await?;
    let beta = env.nested_kubeconfig(&ns, "beta").await?;
    kubectl_ok(&alpha, &["create", "namespace", "only-in-alpha"], None)?;
    ensure!(
        !kubectl_ok(&beta, &["get", "namespaces", "-o", "name"], None)?.contains("only-in-alpha"),
        "beta sees alpha's namespace"
    );
    // Alpha's credentials against beta's endpoint and against the host.
    let alpha_text = std::fs::read_to_string(&alpha)?;
    let beta_endpoint = env
        .api::<VirtualCluster>(&ns)
        .get("beta")
        .await?
        .status
        .and_then(|s| s.endpoint)
        .unwrap_or_default();
    let alpha_endpoint = env
        .api::<VirtualCluster>(&ns)
        .get("alpha")
        .await?
        .status
        .and_then(|s| s.endpoint)
        .unwrap_or_default();
    let host = format!("https://{}:{}", env.bed.api_host, env.bed.api_port);
    for (target, what) in [
        (beta_endpoint.as_str(), "beta"),
        (host.as_str(), "the host"),
    ] {
        let path = env
            .bed
            .dir
            .join(format!("alpha-to-{}.kubeconfig", what.replace(' ', "-")));
        std::fs::write(&path, alpha_text.replace(&alpha_endpoint, target))?;
        let verified = kubectl(&path, &["get", "namespaces"], None)?;
        ensure!(!verified.ok, "alpha's kubeconfig reached {what}");
        let unverified = kubectl(
            &path,
            &["--insecure-skip-tls-verify", "get", "namespaces"],
            None,
        )?;
        ensure!(
            !unverified.ok,
            "alpha's client certificate was accepted by {what}"
        );
        ensure!(
            unverified.stderr.contains("Unauthorized")
                || unverified.stderr.contains("forbidden")
                || unverified.stderr.contains("certificate"),
            "unexpected refusal from {what}: {}",
            unverified.stderr
        );
    }
    ns.done()?;
    Ok(())
}

/// Test 6: deleting a virtual cluster stops and removes all its pods and
/// objects, and its volumes; the host is left clean.
pub(crate) async fn delete_leaves_the_host_clean(env: &Env) -> Result<()> {
    let ns = env.namespace("e2e-delete")?;
    let start = Instant::now();
    env.apply(&ns, &vc_yaml("doomed", "{}"))?;
    env.ready(&ns, "doomed", start, Duration::from_secs(240))
        .await?;
    let volume = env
        .api::<PersistentVolumeClaim>(&ns)
        .get("data-doomed-etcd-0")
        .await?
        .spec
        .and_then(|s| s.volume_name)
        .context("no volume")?;
    kubectl_ok(
        &env.admin,
        &["-n", &ns, "delete", "vc/doomed", "--wait=false"],
        None,
    )?;
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lp = ListParams::default().labels("nestor.dev/cluster=doomed");
        let left = env.api::<Pod>(&ns).list_metadata(&lp).await?.items.len()
            + env
                .api::<Deployment>(&ns)
                .list_metadata(&lp)
                .await?
                .items
                .len()
            + env
                .api::<StatefulSet>(&ns)
                .list_metadata(&lp)
                .await?
                .items
                .len()
            + env
                .api::<k8s_openapi::api::core::v1::Secret>(&ns)
                .list_metadata(&lp)
                .await?
                .items
                .len()
            + env
                .api::<k8s_openapi::api::core::v1::Service>(&ns)
                .list_metadata(&lp)
                .await?
                .items
                .len()
            + env
                .api::<PersistentVolumeClaim>(&ns)
                .list_metadata(&ListParams::default())
                .await?
                .items
                .len()
            + usize::from(pvs.get_opt(&volume).await?.is_some())
            + usize::from(
                env.api::<VirtualCluster>(&ns)
                    .get_opt("doomed")
                    .await?
                    .is_some(),
            );
        if left == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{left} objects of the deleted cluster remain"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ns.done()
}
