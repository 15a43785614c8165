//! The nested API server reaches its cluster's network through Konnectivity:
//! the proxy subresources, an admission webhook and an aggregated API served
//! from nested pods, with two API server replicas and across a node pod's
//! restart.

use anyhow::{Result, ensure};
use base64::Engine as _;
use nestor_e2e::harness::e2e::Env;
use nestor_e2e::harness::host::{pool_ready, recreate_node_pod};
use nestor_e2e::harness::nested::{
    default_service_account, get, nested, nested_apply, pool_yaml, wait_nested, web_yaml,
};
use nestor_e2e::paths;
use nestor_e2e::support::vc_yaml;
use nestor_e2e::tools::kubectl;
use std::path::Path;
use std::time::{Duration, Instant};

/// Upstream's test image (`webhook`, `pause`), built by the test bed under
/// the tag upstream's tests ask for.
fn agnhost() -> Result<String> {
    let tag = std::fs::read_to_string(paths::kube_binary("agnhost.version")?)?;
    Ok(format!(
        "registry.k8s.io/e2e-test-images/agnhost:{}",
        tag.trim()
    ))
}

fn metrics_server() -> String {
    format!(
        "registry.k8s.io/metrics-server/metrics-server:v{}",
        paths::version("METRICS_SERVER_VERSION")
    )
}

/// The `pods/proxy` path of a web pod's port.
fn pod_proxy(pod: &str) -> String {
    format!("/api/v1/namespaces/default/pods/{pod}:8080/proxy/")
}

/// `kubectl get --raw PATH` against the nested cluster.
fn raw(config: &Path, path: &str) -> Result<String> {
    nested(config, &["get", "--raw", path])
}

/// The API server's way into the cluster: two API server replicas, two
/// nodes; pods/proxy and services/proxy reach nested pods through every
/// replica; a validating webhook served by a nested pod is called; an
/// aggregated API (metrics-server) serves `kubectl top nodes`; and after a
/// node pod restarts, its pods are reached again.
pub(crate) async fn api_server_reaches_its_cluster(env: &Env) -> Result<()> {
    let ns = env.namespace("reach")?;
    let applied = Instant::now();
    env.apply(
        &ns,
        &[
            vc_yaml("reach", "{apiServer: {replicas: 2}}"),
            pool_yaml("nodes", "reach", 2, ""),
        ]
        .join("---\n"),
    )?;
    env.ready(&ns, "reach", applied, Duration::from_secs(180))
        .await?;
    let config = env.nested_kubeconfig(&ns, "reach").await?;
    default_service_account(&config).await?;
    nested_apply(&config, &web_yaml(2, "{}"))?;
    pool_ready(env, &ns, "nodes", 2, Duration::from_secs(180)).await?;
    wait_nested("two web pods ready", Duration::from_secs(180), || {
        let ready = get(
            &config,
            &["pods", "-l", "app=web"],
            r#"{.items[*].status.conditions[?(@.type=="Ready")].status}"#,
        )?;
        Ok(ready.split_whitespace().filter(|s| *s == "True").count() == 2)
    })
    .await?;
    let pods: Vec<String> = get(
        &config,
        &["pods", "-l", "app=web"],
        "{.items[*].metadata.name}",
    )?
    .split_whitespace()
    .map(String::from)
    .collect();

    // pods/proxy and services/proxy, each several times: requests land on
    // either API server replica, and each must find an agent.
    let first = Instant::now();
    wait_nested("pods/proxy to answer", Duration::from_secs(60), || {
        Ok(raw(&config, &pod_proxy(&pods[0])).is_ok())
    })
    .await?;
    eprintln!(
        "figure: first pods/proxy answer after the pods were ready: {:.1}s",
        first.elapsed().as_secs_f64()
    );
    let mut latencies = Vec::new();
    for round in 0..5 {
        for pod in &pods {
            let start = Instant::now();
            let body = raw(&config, &pod_proxy(pod))?;
            latencies.push(start.elapsed());
            ensure!(
                body.trim() == pod,
                "round {round}: pods/proxy to {pod} answered {body:?}"
            );
        }
        let body = raw(&config, "/api/v1/namespaces/default/services/web:80/proxy/")?;
        ensure!(
            pods.contains(&body.trim().to_string()),
            "round {round}: services/proxy answered {body:?}"
        );
    }
    // The same request shape to a resource the API server serves itself:
    // the difference is what Konnectivity, the node and the pod add.
    let mut direct = Vec::new();
    for _ in 0..latencies.len() {
        let start = Instant::now();
        raw(
            &config,
            "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
        )?;
        direct.push(start.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    eprintln!(
        "figure: kubectl get --raw, median of {}: pods/proxy {:.0} ms, a ConfigMap {:.0} ms",
        latencies.len(),
        median(&mut latencies),
        median(&mut direct)
    );

    admission_webhook_is_called(&config).await?;
    aggregated_api_serves_node_metrics(&config).await?;

    // A node pod restarts: its agent dials in again, and its pods are
    // reached through it.
    let node = get(&config, &["pod", &pods[0]], "{.spec.nodeName}")?;
    let deleted = Instant::now();
    recreate_node_pod(env, &ns, &node).await?;
    let recreated = deleted.elapsed();
    pool_ready(env, &ns, "nodes", 2, Duration::from_secs(180)).await?;
    let pool_ready_after = deleted.elapsed();
    wait_nested(
        "logs and pods/proxy of a pod on the restarted node",
        Duration::from_secs(120),
        || {
            let logs = kubectl(&config, &["logs", &pods[0]], None)?;
            let proxied = raw(&config, &pod_proxy(&pods[0]));
            Ok(logs.ok && proxied.is_ok_and(|b| b.trim() == pods[0]))
        },
    )
    .await?;
    eprintln!(
        "figure: node pod deleted; recreated after {:.1}s, pool Ready after {:.1}s, logs and pods/proxy to it back after {:.1}s",
        recreated.as_secs_f64(),
        pool_ready_after.as_secs_f64(),
        deleted.elapsed().as_secs_f64()
    );
    ns.done()
}

/// A validating webhook served by agnhost in a nested pod, behind a
/// Service: the API server calls it (it denies every labelled ConfigMap).
/// `failurePolicy: Ignore`, so that a webhook the API server cannot reach
/// shows as an accepted ConfigMap, not as a timeout.
async fn admission_webhook_is_called(config: &Path) -> Result<()> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "webhook-ca");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["deny.default.svc".to_string()])?
        .signed_by(&key, &ca)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let image = agnhost()?;
    nested_apply(
        config,
        &format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: deny-tls}}
type: kubernetes.io/tls
data:
  tls.crt: {crt}
  tls.key: {key}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: deny}}
spec:
  selector: {{matchLabels: {{app: deny}}}}
  template:
    metadata: {{labels: {{app: deny}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: webhook
        image: {image}
        args: [webhook, --tls-cert-file=/tls/tls.crt, --tls-private-key-file=/tls/tls.key, --port=8443]
        ports: [{{containerPort: 8443}}]
        readinessProbe: {{tcpSocket: {{port: 8443}}, periodSeconds: 1}}
        volumeMounts: [{{name: tls, mountPath: /tls, readOnly: true}}]
      volumes: [{{name: tls, secret: {{secretName: deny-tls}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: deny}}
spec:
  selector: {{app: deny}}
  ports: [{{port: 443, targetPort: 8443}}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: deny-labelled}}
webhooks:
- name: deny.nestor.test
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 5
  objectSelector: {{matchLabels: {{webhook: deny}}}}
  clientConfig:
    service: {{name: deny, namespace: default, path: /always-deny, port: 443}}
    caBundle: {ca}
  rules: [{{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}]
"#,
            crt = b64(&cert.pem()),
            key = b64(&key.serialize_pem()),
            ca = b64(&ca.pem()),
        ),
    )?;
    wait_nested("the webhook pod ready", Duration::from_secs(120), || {
        Ok(get(
            config,
            &["pods", "-l", "app=deny"],
            r#"{.items[*].status.conditions[?(@.type=="Ready")].status}"#,
        )? == "True")
    })
    .await?;
    let mut attempt = 0;
    let mut last = String::new();
    let denied = wait_nested(
        "a labelled ConfigMap denied by the webhook",
        Duration::from_secs(60),
        || {
            attempt += 1;
            let name = format!("probe-{attempt}");
            let run = kubectl(
                config,
                &["create", "-f", "-"],
                Some(&format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{webhook: deny}}}}\n"
                )),
            )?;
            last = format!("{}{}", run.stdout, run.stderr);
            Ok(!run.ok && run.stderr.contains("this webhook denies all requests"))
        },
    )
    .await;
    ensure!(denied.is_ok(), "the webhook was not called: {last}");
    // Objects it does not select are untouched.
    nested(config, &["create", "configmap", "unlabelled"])?;
    nested(
        config,
        &["delete", "validatingwebhookconfiguration", "deny-labelled"],
    )?;
    Ok(())
}

/// metrics-server, built from its Go module, registered as the aggregated
/// API `metrics.k8s.io`: the API server proxies `kubectl top nodes` to it,
/// and it scrapes both kubelets.
async fn aggregated_api_serves_node_metrics(config: &Path) -> Result<()> {
    let image = metrics_server();
    nested_apply(
        config,
        &format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: metrics-server, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:metrics-server"}}
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:metrics-server"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:metrics-server"}}
subjects: [{{kind: ServiceAccount, name: metrics-server, namespace: kube-system}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "metrics-server:system:auth-delegator"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}}
subjects: [{{kind: ServiceAccount, name: metrics-server, namespace: kube-system}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: "metrics-server-auth-reader", namespace: kube-system}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}}
subjects: [{{kind: ServiceAccount, name: metrics-server, namespace: kube-system}}]
---
apiVersion: v1
kind: Service
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  selector: {{app: metrics-server}}
  ports: [{{name: https, port: 443, targetPort: 10250}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{app: metrics-server}}}}
  template:
    metadata: {{labels: {{app: metrics-server}}}}
    spec:
      serviceAccountName: metrics-server
      terminationGracePeriodSeconds: 1
      containers:
      - name: metrics-server
        image: {image}
        args:
        - --cert-dir=/tmp
        - --secure-port=10250
        - --kubelet-preferred-address-types=InternalIP
        - --kubelet-use-node-status-port
        - --kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt
        - --metric-resolution=15s
        ports: [{{containerPort: 10250}}]
        securityContext:
          runAsNonRoot: true
          runAsUser: 65534
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL]}}
        volumeMounts: [{{name: tmp, mountPath: /tmp}}]
      volumes: [{{name: tmp, emptyDir: {{}}}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  service: {{name: metrics-server, namespace: kube-system, port: 443}}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"#
        ),
    )?;
    let mut last = String::new();
    let served = wait_nested(
        "kubectl top nodes to list both nodes",
        Duration::from_secs(180),
        || {
            let run = kubectl(config, &["top", "nodes", "--no-headers"], None)?;
            last = format!("{}{}", run.stdout, run.stderr);
            Ok(run.ok
                && run
                    .stdout
                    .lines()
                    .filter(|l| l.contains("nodes-node-"))
                    .count()
                    == 2)
        },
    )
    .await;
    let available = get(
        config,
        &["apiservice", "v1beta1.metrics.k8s.io"],
        r#"{.status.conditions[?(@.type=="Available")].message}"#,
    )
    .unwrap_or_default();
    ensure!(
        served.is_ok(),
        "kubectl top nodes: {last} (APIService: {available})"
    );
    Ok(())
}
