//! Helpers shared by the integration and end-to-end tests.

use crate::paths;
use crate::tools::{helm, kubectl};
use anyhow::{Result, bail, ensure};
use futures::future::BoxFuture;
use std::time::{Duration, Instant};

/// The namespace the operator's chart is installed or rendered into.
pub const OPERATOR_NAMESPACE: &str = "nestor-system";

/// Waits for `check` to return true.
pub async fn wait_for<F>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> BoxFuture<'static, Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `helm template` of the chart, with extra arguments.
pub fn render_chart(extra: &[&str]) -> Result<String> {
    let chart = paths::repo_root()
        .join("charts/nestor")
        .display()
        .to_string();
    let mut args = vec![
        "template",
        "nestor",
        chart.as_str(),
        "--namespace",
        OPERATOR_NAMESPACE,
    ];
    args.extend_from_slice(extra);
    let out = helm(&args)?;
    ensure!(out.ok, "helm template failed: {}", out.stderr);
    Ok(out.stdout)
}

/// The documents of a YAML stream that hold an object.
pub fn documents(yaml: &str) -> Vec<&str> {
    yaml.split("\n---")
        .map(str::trim)
        .filter(|d| d.lines().any(|l| l.starts_with("kind:")))
        .collect()
}

/// The chart's identity and RBAC among rendered documents (with its
/// admission policy when `policy`), as the integration tests install them.
pub fn rbac_documents(rendered: &str, policy: bool) -> Vec<&str> {
    let mut kinds = vec![
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    if policy {
        kinds.extend([
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]);
    }
    documents(rendered)
        .into_iter()
        .filter(|d| kinds.contains(&kind_of(d).as_str()))
        .collect()
}

/// The `kind:` of one YAML document.
pub fn kind_of(doc: &str) -> String {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A `VirtualCluster` manifest with a spec in YAML flow style.
pub fn vc_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: nestor.dev/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: {name}\nspec: {spec}\n"
    )
}

/// `helm install` of the chart into `nestor-system`, waiting for the
/// operator to be Ready. Helm waits only as long as that takes; the bound
/// is for a cold machine, whose first image pull and node start take
/// minutes. Should it not be Ready, the error carries what its pod and
/// its log say.
pub fn helm_install(kubeconfig: &std::path::Path, extra: &[&str]) -> Result<()> {
    let chart = paths::repo_root()
        .join("charts/nestor")
        .display()
        .to_string();
    let config = kubeconfig.display().to_string();
    let mut args = vec![
        "install",
        "nestor",
        chart.as_str(),
        "--kubeconfig",
        config.as_str(),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "300s",
    ];
    args.extend_from_slice(extra);
    let out = helm(&args)?;
    if out.ok {
        return Ok(());
    }
    let ask = |args: &[&str]| {
        let mut all = vec!["-n", OPERATOR_NAMESPACE];
        all.extend_from_slice(args);
        kubectl(kubeconfig, &all, None)
            .map(|o| o.stdout + &o.stderr)
            .unwrap_or_else(|e| format!("{e:#}"))
    };
    bail!(
        "helm install failed: {}{}\nthe operator's pods:\n{}\nits log:\n{}",
        out.stdout,
        out.stderr,
        ask(&["describe", "pods"]),
        ask(&["logs", "deploy/nestor", "--tail=40"]),
    )
}
