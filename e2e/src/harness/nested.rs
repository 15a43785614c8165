//! Helpers for what the end-to-end tests do inside a virtual cluster,
//! with its admin kubeconfig: `kubectl` against it, its node pools, its
//! pods and what they reach.

use crate::tools::{kubectl, kubectl_ok};
use anyhow::{Result, bail, ensure};
use std::path::Path;
use std::time::{Duration, Instant};

/// The busybox image of the test bed's registry.
pub const BUSYBOX: &str = "images.nestor.test/busybox:1.35";

/// A `NodePool` manifest of `cluster`, with extra spec fields in `extra`.
pub fn pool_yaml(name: &str, cluster: &str, replicas: i32, extra: &str) -> String {
    format!(
        "apiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\nspec:\n  clusterRef: {{name: {cluster}}}\n  replicas: {replicas}\n{extra}"
    )
}

/// `kubectl` against a nested cluster.
pub fn nested(config: &Path, args: &[&str]) -> Result<String> {
    kubectl_ok(config, args, None)
}

/// `kubectl apply` of `yaml` against a nested cluster.
pub fn nested_apply(config: &Path, yaml: &str) -> Result<()> {
    kubectl_ok(config, &["apply", "-f", "-"], Some(yaml)).map(|_| ())
}

/// `sh -c script` in a nested pod; returns stdout, or the error's text.
pub fn exec(config: &Path, pod: &str, script: &str) -> Result<String> {
    let out = kubectl(config, &["exec", pod, "--", "sh", "-c", script], None)?;
    ensure!(
        out.ok,
        "exec in {pod} failed: {}{}",
        out.stdout,
        out.stderr.trim()
    );
    Ok(out.stdout)
}

/// `jsonpath` output of a nested `kubectl get`.
pub fn get(config: &Path, what: &[&str], path: &str) -> Result<String> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let jsonpath = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &jsonpath]);
    nested(config, &args)
}

/// Waits for `check` (usually `kubectl` against a nested cluster) to
/// return true.
pub async fn wait_nested<F>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Result<bool>,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last.map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for the nested `default` ServiceAccount (made by the nested
/// controller-manager just after the cluster is Ready); pods need it.
pub async fn default_service_account(config: &Path) -> Result<()> {
    wait_nested(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || Ok(kubectl(config, &["get", "serviceaccount", "default"], None)?.ok),
    )
    .await
}

/// A web Deployment spread over at least two nodes: `minDomains` keeps the
/// scheduler from placing every replica on the first node that registers
/// while its pool's other nodes are still joining (one replica per node
/// until two nodes exist).
pub fn web_yaml(replicas: i32, node_selector: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      nodeSelector: {node_selector}
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
      - maxSkew: 1
        minDomains: 2
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {{app: web}}
      containers:
      - name: web
        image: {BUSYBOX}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}
/// A shell line that prints `open` when a new TCP connection to
/// `ip:port` succeeds within 2 s, `closed` otherwise.
pub fn connect_script(ip: &str, port: u16) -> String {
    format!(
        "if printf x | nc -w 2 {ip} {port} >/dev/null 2>&1; then echo open; else echo closed; fi"
    )
}

/// Whether a new TCP connection from the pod to `ip:port` succeeds.
pub fn connects(config: &Path, pod: &str, ip: &str, port: u16) -> Result<bool> {
    Ok(exec(config, pod, &connect_script(ip, port))?.trim() == "open")
}
