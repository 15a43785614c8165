//! What a nested cluster keeps: Secrets encrypted in its etcd with a key of
//! its own, rotated on request; every request in the API server's audit
//! log, without the content of Secrets.

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use nestor_e2e::harness::e2e::Env;
use nestor_e2e::support::{vc_yaml, wait_for};
use nestor_e2e::tools::PortForward;
use nestor_e2e::tools::kubectl_ok;
use std::time::{Duration, Instant};

const MARKER: &str = "plaintext-marker-4711";

/// The raw value etcd stores under `key`, read as the API server does
/// (with its etcd client certificate).
async fn etcd_value(env: &Env, ns: &str, vc: &str, key: &str) -> Result<Vec<u8>> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let certs = env
        .api::<Secret>(ns)
        .get(&format!("{vc}-apiserver-certs"))
        .await?
        .data
        .context("no data")?;
    let field = |k: &str| {
        certs
            .get(k)
            .map(|v| b64(&v.0))
            .with_context(|| format!("no {k}"))
    };
    // etcd's NetworkPolicy admits only the cluster's API servers; an
    // administrator comes in through the kubelet.
    let forward = PortForward::start(&env.admin, ns, &format!("{vc}-etcd-0"), 2379)?;
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters: [{{name: etcd, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority-data: {}, tls-server-name: localhost}}}}]
users: [{{name: apiserver, user: {{client-certificate-data: {}, client-key-data: {}}}}}]
contexts: [{{name: etcd, context: {{cluster: etcd, user: apiserver}}}}]
current-context: etcd
",
        forward.port,
        field("etcd-ca.crt")?,
        field("apiserver-etcd-client.crt")?,
        field("apiserver-etcd-client.key")?,
    );
    let config = kube::Config::from_custom_kubeconfig(
        serde_yaml::from_str(&kubeconfig)?,
        &Default::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let body = serde_json::json!({"key": b64(key.as_bytes())}).to_string();
    let request = http::Request::post("/v3/kv/range")
        .header("content-type", "application/json")
        .body(body.into_bytes())?;
    let answer: serde_json::Value = serde_json::from_str(&client.request_text(request).await?)?;
    let value = answer["kvs"][0]["value"]
        .as_str()
        .with_context(|| format!("{key} not in etcd: {answer}"))?;
    Ok(base64::engine::general_purpose::STANDARD.decode(value)?)
}

fn stored_with(value: &[u8], key: &str) -> bool {
    value.starts_with(format!("k8s:enc:secretbox:v1:{key}:").as_bytes())
        && !value.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
}

pub(crate) async fn secrets_are_encrypted_at_rest_and_requests_audited(env: &Env) -> Result<()> {
    let ns = env.namespace("at-rest")?;
    let start = Instant::now();
    env.apply(
        &ns,
        &vc_yaml("vault", "{apiServer: {audit: {level: RequestResponse}}}"),
    )?;
    env.ready(&ns, "vault", start, Duration::from_secs(300))
        .await?;
    let config = env.nested_kubeconfig(&ns, "vault").await?;
    kubectl_ok(
        &config,
        &[
            "create",
            "secret",
            "generic",
            "probe",
            &format!("--from-literal=word={MARKER}"),
        ],
        None,
    )?;
    kubectl_ok(&config, &["create", "namespace", "audited"], None)?;
    let stored = etcd_value(env, &ns, "vault", "/registry/secrets/default/probe").await?;
    ensure!(
        stored_with(&stored, "key-0"),
        "the Secret in etcd: {:?}",
        String::from_utf8_lossy(&stored[..stored.len().min(40)])
    );

    // The audit log: the tenant's requests, bodies at the chosen level,
    // never a Secret's.
    let logs = kubectl_ok(
        &env.admin,
        &[
            "logs",
            "-n",
            &ns,
            "deploy/vault-apiserver",
            "-c",
            "kube-apiserver",
        ],
        None,
    )?;
    let events: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["apiVersion"] == "audit.k8s.io/v1")
        .collect();
    let find = |resource: &str, name: &str| {
        events.iter().find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == resource
                && (e["objectRef"]["name"] == name
                    || e["responseObject"]["metadata"]["name"] == name)
                && e["user"]["username"] == "nestor:admin"
        })
    };
    let namespace = find("namespaces", "audited").context("no audit event for the namespace")?;
    ensure!(
        namespace.get("requestObject").is_some(),
        "RequestResponse records bodies: {namespace}"
    );
    let secret = find("secrets", "probe").context("no audit event for the Secret")?;
    ensure!(
        secret.get("requestObject").is_none() && !logs.contains(MARKER),
        "a Secret's content reached the audit log"
    );

    // A rotation: the new key encrypts the Secret, the old one is dropped.
    kubectl_ok(
        &env.admin,
        &[
            "patch",
            "virtualcluster",
            "vault",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"apiServer":{"encryptionKeyGeneration":1}}}"#,
        ],
        None,
    )?;
    let secrets = env.api::<Secret>(&ns);
    wait_for(
        "the key ring down to key 1",
        Duration::from_secs(240),
        || {
            let secrets = secrets.clone();
            Box::pin(async move {
                let ring = secrets.get("vault-encryption").await?;
                Ok(
                    ring.metadata.annotations.unwrap_or_default()["nestor.dev/key-generations"]
                        == "1",
                )
            })
        },
    )
    .await?;
    let stored = etcd_value(env, &ns, "vault", "/registry/secrets/default/probe").await?;
    ensure!(
        stored_with(&stored, "key-1"),
        "the Secret after the rotation: {:?}",
        String::from_utf8_lossy(&stored[..stored.len().min(40)])
    );
    // The API servers restart once more as the old key goes: read until
    // one answers.
    let expected = base64::engine::general_purpose::STANDARD.encode(MARKER);
    wait_for(
        "the Secret's content after the rotation",
        Duration::from_secs(120),
        || {
            let (config, expected) = (config.clone(), expected.clone());
            Box::pin(async move {
                Ok(kubectl_ok(
                    &config,
                    &["get", "secret", "probe", "-o", "jsonpath={.data.word}"],
                    None,
                )
                .is_ok_and(|w| w.trim() == expected))
            })
        },
    )
    .await?;
    ns.done()?;
    Ok(())
}
