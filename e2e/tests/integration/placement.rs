//! Placement: what a VirtualCluster's and a NodePool's `spec.placement`
//! ask for reaches every pod template, and node pods prefer host nodes
//! without other clusters' control planes.

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;
use nestor_e2e::harness::integration::{Env, converged};
use nestor_e2e::support::{vc_yaml, wait_for};
use nestor_e2e::tools::kubectl_ok;
use std::time::Duration;

const PLACEMENT: &str = "{runtimeClassName: sandbox, priorityClassName: tenant-control-planes, nodeSelector: {pool: control-planes}, tolerations: [{key: dedicated, operator: Equal, value: control-planes, effect: NoSchedule}]}";

fn placed_as_asked(what: &str, pod: &PodSpec, runtime: &str, pool: &str) -> Result<()> {
    ensure!(
        pod.runtime_class_name.as_deref() == Some(runtime),
        "{what}: runtimeClassName {:?}",
        pod.runtime_class_name
    );
    ensure!(
        pod.node_selector
            .as_ref()
            .and_then(|s| s.get("pool"))
            .map(String::as_str)
            == Some(pool),
        "{what}: nodeSelector {:?}",
        pod.node_selector
    );
    ensure!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some("dedicated")),
        "{what}: tolerations {:?}",
        pod.tolerations
    );
    Ok(())
}

/// What the platform lets these specs name (the Helm value
/// `placement.allowed`).
const ALLOWED: &str = r#"{"runtimeClassNames": ["sandbox", "kata"], "priorityClassNames": ["tenant-control-planes", "tenant-nodes"], "tolerationKeys": ["dedicated"], "nodeSelectorKeys": ["pool"]}"#;

pub(crate) async fn placement_reaches_every_pod(env: &Env) -> Result<()> {
    let s = env
        .scenario_with("placement", &[("NESTOR_PLACEMENT_ALLOWED", ALLOWED)])
        .await?;
    s.apply(&vc_yaml("placed", &format!("{{placement: {PLACEMENT}}}")))?;
    s.apply("apiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: sandboxed\nspec:\n  clusterRef: {name: placed}\n  replicas: 0\n  placement: {runtimeClassName: kata, nodeSelector: {pool: tenants}, tolerations: [{key: dedicated, operator: Equal, value: tenants, effect: NoSchedule}], priorityClassName: tenant-nodes}\n")?;
    converged(&s, "placed", Duration::from_secs(60)).await?;
    let deployments = s.api::<Deployment>();
    for name in ["apiserver", "controller-manager", "scheduler", "coredns"] {
        let d = deployments.get(&format!("placed-{name}")).await?;
        let pod = d.spec.and_then(|s| s.template.spec).unwrap_or_default();
        placed_as_asked(name, &pod, "sandbox", "control-planes")?;
        ensure!(pod.priority_class_name.as_deref() == Some("tenant-control-planes"));
    }
    let sets = s.api::<StatefulSet>();
    let etcd = sets.get("placed-etcd").await?;
    placed_as_asked(
        "etcd",
        &etcd.spec.and_then(|s| s.template.spec).unwrap_or_default(),
        "sandbox",
        "control-planes",
    )?;
    wait_for("the pool's StatefulSet", Duration::from_secs(30), || {
        let sets = sets.clone();
        Box::pin(async move { Ok(sets.get_opt("sandboxed-node").await?.is_some()) })
    })
    .await?;
    let nodes = sets.get("sandboxed-node").await?;
    let pod = nodes.spec.and_then(|s| s.template.spec).unwrap_or_default();
    placed_as_asked("node pods", &pod, "kata", "tenants")?;
    let preferred = pod
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    ensure!(
        preferred.len() == 2
            && preferred
                .iter()
                .all(|p| p.pod_affinity_term.topology_key == "kubernetes.io/hostname"),
        "node pods' anti-affinity to other control planes: {preferred:?}"
    );
    Ok(())
}

/// The chart's default placement of node pods, as `helm install` renders
/// it against the test bed (`--dry-run=server`, so that the chart's lookup
/// sees the host's RuntimeClasses), with `extra` values.
fn node_pool_placement(env: &Env, extra: &[&str]) -> Result<Option<serde_json::Value>> {
    let chart = nestor_e2e::paths::repo_root().join("charts/nestor");
    let (chart, config) = (chart.display().to_string(), env.admin.display().to_string());
    let mut args = vec![
        "template",
        "sandbox",
        &chart,
        "--namespace",
        "nestor-system",
        "--dry-run=server",
        "--kubeconfig",
        &config,
    ];
    args.extend_from_slice(extra);
    let out = nestor_e2e::tools::helm(&args)?;
    ensure!(out.ok, "helm template: {}", out.stderr);
    let mut lines = out.stdout.lines();
    let found = lines.find(|l| l.trim() == "- name: NESTOR_NODE_POOL_PLACEMENT");
    let Some(_) = found else { return Ok(None) };
    let value = lines.next().unwrap_or_default().trim();
    let json: String = serde_yaml::from_str(value.trim_start_matches("value:").trim())?;
    Ok(Some(serde_json::from_str(&json)?))
}

/// Node pods run in a VM sandbox by default where the host has one: the
/// first of `placement.sandboxRuntimeClasses` the host cluster has, unless
/// the platform names a runtime class itself.
pub(crate) async fn sandbox_runtime_class_is_the_default_where_present(env: &Env) -> Result<()> {
    let runtime = |placement: Option<serde_json::Value>| {
        placement.and_then(|p| p["runtimeClassName"].as_str().map(String::from))
    };
    ensure!(
        runtime(node_pool_placement(env, &[])?).is_none(),
        "a sandbox named on a host without one"
    );
    let runtime_class = |name: &str| {
        format!(
            "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {{name: {name}}}\nhandler: {name}\n"
        )
    };
    for name in ["kata-clh", "kata"] {
        kubectl_ok(
            &env.admin,
            &["create", "-f", "-"],
            Some(&runtime_class(name)),
        )?;
    }
    let found = runtime(node_pool_placement(env, &[])?);
    let chosen = runtime(node_pool_placement(
        env,
        &["--set", "placement.nodePools.runtimeClassName=gvisor"],
    )?);
    let first_listed = runtime(node_pool_placement(
        env,
        &[
            "--set-json",
            r#"placement.sandboxRuntimeClasses=["kata-fc","kata-clh"]"#,
        ],
    )?);
    kubectl_ok(
        &env.admin,
        &["delete", "runtimeclass", "kata-clh", "kata"],
        None,
    )?;
    ensure!(
        found.as_deref() == Some("kata"),
        "default sandbox: {found:?}"
    );
    ensure!(
        chosen.as_deref() == Some("gvisor"),
        "the platform's own: {chosen:?}"
    );
    ensure!(
        first_listed.as_deref() == Some("kata-clh"),
        "the first listed the host has: {first_listed:?}"
    );
    Ok(())
}
