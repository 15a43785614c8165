//! The chart and its CRDs: they install, `kubectl explain` shows their
//! docs, and the chart's RBAC grants the operator what it needs and no more.

use anyhow::{Result, ensure};
use nestor_e2e::harness::integration::{CRDS, Env};
use nestor_e2e::paths;
use nestor_e2e::support::{OPERATOR_NAMESPACE, documents, kind_of, rbac_documents, render_chart};
use nestor_e2e::tools::{helm, kubectl, kubectl_ok};
use std::time::{Duration, Instant};

/// Test 1: The CRDs install from the chart's generated YAML and `kubectl
/// explain` shows the field documentation.
pub(crate) async fn crds_install_and_explain(env: &Env) -> Result<()> {
    // The OpenAPI document is published shortly after the CRD is established.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = kubectl(&env.admin, &["explain", "virtualcluster.spec"], None)?;
        if out.ok {
            break out.stdout;
        }
        ensure!(
            Instant::now() < deadline,
            "kubectl explain failed: {}",
            out.stderr
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        out.contains("Kubernetes version of the nested control plane"),
        "explain lacks the version doc:\n{out}"
    );
    ensure!(
        out.contains("etcd") && out.contains("networking") && out.contains("apiServer"),
        "explain lacks fields:\n{out}"
    );
    let out = kubectl_ok(
        &env.admin,
        &["explain", "virtualcluster.spec.etcd.replicas"],
        None,
    )?;
    ensure!(
        out.contains("Raft"),
        "explain lacks the etcd replicas doc:\n{out}"
    );
    let out = kubectl_ok(&env.admin, &["explain", "nodepool.spec.replicas"], None)?;
    ensure!(
        out.contains("cordons and drains"),
        "explain lacks the pool replicas doc:\n{out}"
    );
    let generated = nestor_crds::crds_yaml();
    let shipped = std::fs::read_to_string(paths::repo_root().join(CRDS))?;
    ensure!(
        generated == shipped,
        "the chart's CRDs differ from the Rust types; run crdgen"
    );
    Ok(())
}

/// Test 2: The chart renders, the real apiserver accepts every object (server
/// dry run), and its RBAC refuses what the operator does not need.
pub(crate) async fn chart_renders_and_rbac_is_least_privilege(env: &Env) -> Result<()> {
    let lint = helm(&[
        "lint",
        &paths::repo_root()
            .join("charts/nestor")
            .display()
            .to_string(),
    ])?;
    ensure!(lint.ok, "helm lint failed: {}{}", lint.stdout, lint.stderr);
    for values in [vec![], vec!["--set", "replicaCount=2"]] {
        let rendered = render_chart(&values)?;
        let kinds: Vec<String> = documents(&rendered).iter().map(|d| kind_of(d)).collect();
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
        ] {
            ensure!(
                kinds.iter().any(|k| k == kind),
                "chart renders no {kind}: {kinds:?}"
            );
        }
        let out = kubectl(
            &env.admin,
            &[
                "apply",
                "--dry-run=server",
                "-n",
                OPERATOR_NAMESPACE,
                "-f",
                "-",
            ],
            Some(&rendered),
        )?;
        ensure!(
            out.ok,
            "the apiserver refused the chart ({values:?}): {}",
            out.stderr
        );
        ensure!(
            !rendered.contains("\"*\"")
                && !rendered.contains("- '*'")
                && !rendered.contains("- \"*\""),
            "wildcard in the chart"
        );
    }
    // By default the operator serves its release's namespace only: the
    // ClusterRole holds no namespaced kind, a Role there holds them, and
    // the operator watches that namespace alone.
    let rendered = render_chart(&[])?;
    let rbac = rbac_documents(&rendered, false);
    let of_kind = |kind: &'static str| rbac.iter().filter(move |d| kind_of(d) == kind);
    ensure!(
        of_kind("ClusterRole").all(|d| !d.contains("secrets")),
        "the default install's ClusterRole grants Secrets in every namespace"
    );
    ensure!(
        of_kind("Role")
            .any(|d| d.contains("secrets")
                && d.contains(&format!("namespace: {OPERATOR_NAMESPACE}"))),
        "the default install has no Role for Secrets in its own namespace"
    );
    ensure!(
        rendered.contains(&format!(
            "name: NESTOR_WATCH_NAMESPACE\n              value: \"{OPERATOR_NAMESPACE}\""
        )),
        "the default install does not watch its own namespace alone"
    );
    let who = format!(
        "system:serviceaccount:{OPERATOR_NAMESPACE}:{}",
        env.service_account
    );
    let can = |verb: &str, resource: &str, ns: Option<&str>| -> Result<bool> {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", who.as_str()];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        Ok(kubectl(&env.admin, &args, None)?.stdout.trim() == "yes")
    };
    for (verb, resource, ns) in [
        ("create", "virtualclusters.nestor.dev", None),
        ("create", "pods", Some("default")),
        ("delete", "nodes", None),
        ("create", "clusterroles", None),
        ("create", "clusterrolebindings", None),
        ("patch", "customresourcedefinitions", None),
        ("create", "namespaces", None),
        ("update", "leases.coordination.k8s.io", Some("kube-system")),
        ("create", "serviceaccounts/token", Some("default")),
        ("delete", "virtualclusters.nestor.dev", Some("default")),
        ("escalate", "clusterroles", None),
        ("update", "jobs.batch", Some("default")),
    ] {
        ensure!(
            !can(verb, resource, ns)?,
            "the operator may {verb} {resource} in {ns:?}; it must not"
        );
    }
    for (verb, resource, ns) in [
        (
            "patch",
            "virtualclusters.nestor.dev/status",
            Some("default"),
        ),
        ("delete", "nodepools.nestor.dev", Some("default")),
        ("patch", "statefulsets.apps", Some("default")),
        ("watch", "secrets", None),
        (
            "update",
            "leases.coordination.k8s.io",
            Some(OPERATOR_NAMESPACE),
        ),
        ("delete", "persistentvolumeclaims", Some("default")),
        ("create", "jobs.batch", Some("default")),
    ] {
        ensure!(
            can(verb, resource, ns)?,
            "the operator may not {verb} {resource} in {ns:?}; it needs to"
        );
    }
    Ok(())
}
