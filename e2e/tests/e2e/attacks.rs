//! The attack suite: tenant A's admin, holding A's admin kubeconfig, tries
//! to get out of A's cluster, and every attempt must be refused with a
//! clear reason. Two tenants, A and B, share the test bed; each attack is
//! a test of its own. The run ends with `N attacks tried, 0 succeeded`.
//!
//! Longer than most files: one scenario per attack, each read top to
//! bottom.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use nestor_crds::VirtualCluster;
use nestor_e2e::harness::attacks::{LABELS, count_attempt, count_success, pod, refused};
use nestor_e2e::harness::e2e::{Env, TENANTS_NAMESPACE as NS, Tenants, tenants};
use nestor_e2e::support::{vc_yaml, wait_for};
use nestor_e2e::tools::{Run, helm, kubectl, kubectl_ok};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `kubectl create` of `yaml` as A's admin (or `config`'s holder).
fn create(config: &Path, yaml: &str) -> Result<Run> {
    kubectl(config, &["create", "-f", "-"], Some(yaml))
}

async fn pod_refused(env: &Env, what: &str, yaml: &str, reason: &str) -> Result<()> {
    let t = tenants(env).await?;
    refused(what, create(t.kubeconfig(), yaml)?, reason)
}

const BASELINE: &str = "violates PodSecurity \"baseline:latest\"";
const GUARDED: &str = "are managed by the platform";

pub(crate) async fn attack_privileged_pod(env: &Env) -> Result<()> {
    pod_refused(
        env,
        "a privileged pod",
        &pod("privileged", "", "    securityContext: {privileged: true}"),
        "privileged: Forbidden: disallowed by cluster policy",
    )
    .await
}

async fn capability(env: &Env, cap: &str) -> Result<()> {
    let name = cap.to_lowercase().replace('_', "-");
    pod_refused(
        env,
        &format!("a pod adding {cap}"),
        &pod(
            &name,
            "",
            &format!("    securityContext: {{capabilities: {{add: [{cap}]}}}}"),
        ),
        &format!("{BASELINE}: non-default capabilities"),
    )
    .await
}

pub(crate) async fn attack_capability_sys_admin(env: &Env) -> Result<()> {
    capability(env, "SYS_ADMIN").await
}
pub(crate) async fn attack_capability_net_admin(env: &Env) -> Result<()> {
    capability(env, "NET_ADMIN").await
}
pub(crate) async fn attack_capability_sys_ptrace(env: &Env) -> Result<()> {
    capability(env, "SYS_PTRACE").await
}
pub(crate) async fn attack_capability_sys_module(env: &Env) -> Result<()> {
    capability(env, "SYS_MODULE").await
}

pub(crate) async fn attack_host_path_root(env: &Env) -> Result<()> {
    pod_refused(
        env,
        "a pod mounting the node's /",
        &format!(
            "{}    volumeMounts: [{{name: root, mountPath: /host}}]\n",
            pod(
                "host-root",
                "  volumes: [{name: root, hostPath: {path: /}}]",
                ""
            )
        ),
        &format!("{BASELINE}: hostPath volumes"),
    )
    .await
}

async fn host_namespace(env: &Env, field: &str) -> Result<()> {
    pod_refused(
        env,
        &format!("a pod with {field}"),
        &pod(&field.to_lowercase(), &format!("  {field}: true"), ""),
        &format!("{BASELINE}: host namespaces ({field}=true)"),
    )
    .await
}

pub(crate) async fn attack_host_network(env: &Env) -> Result<()> {
    host_namespace(env, "hostNetwork").await
}
pub(crate) async fn attack_host_pid(env: &Env) -> Result<()> {
    host_namespace(env, "hostPID").await
}
pub(crate) async fn attack_host_ipc(env: &Env) -> Result<()> {
    host_namespace(env, "hostIPC").await
}

pub(crate) async fn attack_unmasked_proc_mount(env: &Env) -> Result<()> {
    pod_refused(
        env,
        "a pod with an unmasked /proc",
        &pod(
            "unmasked-proc",
            "  hostUsers: false",
            "    securityContext: {procMount: Unmasked}",
        ),
        "ValidatingAdmissionPolicy 'nestor-proc-mount'",
    )
    .await
}

pub(crate) async fn attack_unsafe_sysctl(env: &Env) -> Result<()> {
    pod_refused(
        env,
        "a pod setting kernel.msgmax",
        &pod(
            "sysctl",
            "  securityContext: {sysctls: [{name: kernel.msgmax, value: '65536'}]}",
            "",
        ),
        &format!("{BASELINE}: forbidden sysctls"),
    )
    .await
}

pub(crate) async fn attack_host_path_persistent_volume(env: &Env) -> Result<()> {
    pod_refused(
        env,
        "a hostPath PersistentVolume",
        "apiVersion: v1
kind: PersistentVolume
metadata: {name: host-root}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /}}
",
        "ValidatingAdmissionPolicy 'nestor-host-volumes'",
    )
    .await
}

pub(crate) async fn attack_namespace_labelled_privileged(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    for ns in ["default", "kube-system"] {
        let run = kubectl(
            t.kubeconfig(),
            &[
                "label",
                "namespace",
                ns,
                "--overwrite",
                "pod-security.kubernetes.io/enforce=privileged",
            ],
            None,
        )?;
        refused(&format!("relabelling {ns} privileged"), run, LABELS)?;
    }
    let run = create(
        t.kubeconfig(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: loose\n  labels: {pod-security.kubernetes.io/enforce: privileged}\n",
    )?;
    refused("a new namespace labelled privileged", run, LABELS)?;
    let run = kubectl(
        t.kubeconfig(),
        &[
            "label",
            "namespace",
            "default",
            "pod-security.kubernetes.io/enforce-version=v1.0",
        ],
        None,
    )?;
    refused("pinning an old Pod Security version", run, LABELS)
}

const POLICIES: [&str; 3] = [
    "nestor-pod-security-labels",
    "nestor-host-volumes",
    "nestor-proc-mount",
];

pub(crate) async fn attack_delete_enforcing_objects(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    for kind in [
        "validatingadmissionpolicy",
        "validatingadmissionpolicybinding",
    ] {
        for name in POLICIES {
            let run = kubectl(t.kubeconfig(), &["delete", kind, name], None)?;
            refused(&format!("deleting {kind} {name}"), run, GUARDED)?;
        }
        let run = kubectl(t.kubeconfig(), &["delete", kind, "--all"], None)?;
        refused(&format!("deleting every {kind}"), run, GUARDED)?;
    }
    Ok(())
}

pub(crate) async fn attack_edit_enforcing_objects(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    for name in POLICIES {
        let run = kubectl(
            t.kubeconfig(),
            &[
                "patch",
                "validatingadmissionpolicybinding",
                name,
                "--type=merge",
                "-p",
                r#"{"spec":{"validationActions":["Warn"]}}"#,
            ],
            None,
        )?;
        refused(&format!("weakening binding {name} to Warn"), run, GUARDED)?;
        let run = kubectl(
            t.kubeconfig(),
            &[
                "patch",
                "validatingadmissionpolicy",
                name,
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/validations/0/expression","value":"true"}]"#,
            ],
            None,
        )?;
        refused(&format!("rewriting policy {name}"), run, GUARDED)?;
    }
    // Server-side apply is an update (or a create) like any other.
    let run = kubectl(
        t.kubeconfig(),
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: nestor-proc-mount}\nspec: {policyName: nestor-proc-mount, validationActions: [Audit]}\n",
        ),
    )?;
    refused("applying over a binding", run, GUARDED)
}

/// A ServiceAccount token of A's, in a kubeconfig of its own.
fn service_account_kubeconfig(t: &Tenants, name: &str) -> Result<PathBuf> {
    let token = kubectl_ok(t.kubeconfig(), &["create", "token", name], None)?;
    kubeconfig_with_user(
        t.kubeconfig(),
        &format!("{name}.kubeconfig"),
        serde_yaml::to_value(serde_json::json!({"token": token.trim()}))?,
    )
}

/// `config` with its user's credentials replaced by `user`.
fn kubeconfig_with_user(config: &Path, file: &str, user: serde_yaml::Value) -> Result<PathBuf> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(config)?)?;
    value["users"][0]["user"] = user;
    let path = config.with_file_name(file);
    std::fs::write(&path, serde_yaml::to_string(&value)?)?;
    Ok(path)
}

/// What a newly granted identity still cannot do.
fn still_confined(what: &str, config: &Path) -> Result<()> {
    let run = kubectl(
        config,
        &["delete", "validatingadmissionpolicy", "nestor-proc-mount"],
        None,
    )?;
    refused(&format!("{what}: deleting a policy"), run, GUARDED)?;
    let run = create(
        config,
        &pod("granted", "", "    securityContext: {privileged: true}"),
    )?;
    refused(
        &format!("{what}: a privileged pod"),
        run,
        "disallowed by cluster policy",
    )
}

pub(crate) async fn attack_grant_through_cluster_role_binding(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    kubectl_ok(
        t.kubeconfig(),
        &["create", "serviceaccount", "escalator"],
        None,
    )?;
    kubectl_ok(
        t.kubeconfig(),
        &[
            "create",
            "clusterrolebinding",
            "escalator",
            "--clusterrole=cluster-admin",
            "--serviceaccount=default:escalator",
        ],
        None,
    )?;
    let config = service_account_kubeconfig(t, "escalator")?;
    still_confined("a new cluster-admin binding", &config)
}

pub(crate) async fn attack_grant_through_aggregated_cluster_role(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    kubectl_ok(
        t.kubeconfig(),
        &["apply", "-f", "-"],
        Some(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: everything-admission
  labels: {rbac.authorization.k8s.io/aggregate-to-admin: 'true'}
rules:
- apiGroups: [admissionregistration.k8s.io]
  resources: ['*']
  verbs: ['*']
- apiGroups: ['']
  resources: [groups, users]
  verbs: [impersonate]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: aggregated, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: aggregated}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: ServiceAccount, name: aggregated, namespace: default}]
",
        ),
    )?;
    let config = service_account_kubeconfig(t, "aggregated")?;
    // The aggregation controller fills `admin` in a moment.
    wait_for("the aggregated rule", Duration::from_secs(30), || {
        let config = config.clone();
        Box::pin(async move {
            Ok(kubectl_ok(
                &config,
                &["auth", "can-i", "delete", "validatingadmissionpolicies"],
                None,
            )
            .is_ok_and(|o| o.trim() == "yes"))
        })
    })
    .await?;
    still_confined("an aggregated ClusterRole", &config)?;
    let run = kubectl(
        &config,
        &["get", "namespaces", "--as=x", "--as-group=system:masters"],
        None,
    )?;
    refused(
        "an aggregated ClusterRole: impersonating system:masters",
        run,
        "impersonating system:masters",
    )
}

pub(crate) async fn attack_mutating_webhook(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    // A webhook that would rewrite every pod. Admission runs every
    // mutation before any validation, so Pod Security judges the pod as
    // the webhook left it; and the webhook's registration is no way around
    // the policies either.
    kubectl_ok(
        t.kubeconfig(),
        &["apply", "-f", "-"],
        Some(
            "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: rewrite-pods}
webhooks:
- name: rewrite.pods.example
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  reinvocationPolicy: IfNeeded
  clientConfig: {service: {name: nowhere, namespace: default, path: /mutate}}
  rules: [{apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}]
",
        ),
    )?;
    let run = create(
        t.kubeconfig(),
        &pod("mutated", "", "    securityContext: {privileged: true}"),
    )?;
    let result = refused(
        "a privileged pod behind a mutating webhook",
        run,
        "disallowed by cluster policy",
    );
    kubectl_ok(
        t.kubeconfig(),
        &["delete", "mutatingwebhookconfiguration", "rewrite-pods"],
        None,
    )?;
    result
}

pub(crate) async fn attack_impersonate_system_masters(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let run = kubectl(
        t.kubeconfig(),
        &[
            "get",
            "namespaces",
            "--as=nestor:operator",
            "--as-group=system:masters",
        ],
        None,
    )?;
    refused(
        "impersonating system:masters",
        run,
        "impersonating system:masters",
    )
}

/// A request to the nested CSR API's client signer for a certificate of
/// `user` in `group`: the CertificateSigningRequest's YAML and the key.
fn client_csr(name: &str, user: &str, group: &str) -> Result<(String, rcgen::KeyPair)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, group);
    let csr = params.serialize_request(&key)?.pem()?;
    use base64::Engine as _;
    let request = base64::engine::general_purpose::STANDARD.encode(csr);
    let yaml = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec: {{signerName: kubernetes.io/kube-apiserver-client, usages: [client auth], request: {request}}}\n"
    );
    Ok((yaml, key))
}

/// A client certificate `config`'s holder mints itself through the nested
/// CSR API (request, approve, collect), as a kubeconfig beside `config`.
async fn mint_client_certificate(config: &Path, name: &str, group: &str) -> Result<PathBuf> {
    let (yaml, key) = client_csr(name, name, group)?;
    kubectl_ok(config, &["create", "-f", "-"], Some(&yaml))?;
    kubectl_ok(config, &["certificate", "approve", name], None)?;
    let path = config.with_file_name(format!("{name}.kubeconfig"));
    let (from, to) = (config.to_path_buf(), path.clone());
    let (name, key) = (name.to_string(), key.serialize_pem());
    wait_for(
        "the minted certificate",
        Duration::from_secs(60),
        move || {
            let (from, to, name, key) = (from.clone(), to.clone(), name.clone(), key.clone());
            Box::pin(async move {
                let jsonpath = "jsonpath={.status.certificate}";
                let cert = kubectl_ok(&from, &["get", "csr", &name, "-o", jsonpath], None)?;
                if cert.trim().is_empty() {
                    return Ok(false);
                }
                use base64::Engine as _;
                let mut config: serde_json::Value =
                    serde_yaml::from_str(&std::fs::read_to_string(&from)?)?;
                let user = &mut config["users"][0]["user"];
                user["client-certificate-data"] = cert.trim().into();
                user["client-key-data"] = base64::engine::general_purpose::STANDARD
                    .encode(&key)
                    .into();
                std::fs::write(&to, serde_yaml::to_string(&config)?)?;
                Ok(true)
            })
        },
    )
    .await?;
    Ok(path)
}

pub(crate) async fn attack_certificate_for_system_masters(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let (yaml, _) = client_csr("masters", "mallory", "system:masters")?;
    let run = create(t.kubeconfig(), &yaml)?;
    refused(
        "a certificate request for system:masters",
        run,
        "system:masters group is not allowed",
    )
}

pub(crate) async fn attack_reach_tenant_b_and_the_host(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let text = std::fs::read_to_string(t.kubeconfig())?;
    let mut value: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let host = format!("https://{}:{}", env.bed.api_host, env.bed.api_port);
    for (target, what) in [(t.b_endpoint(), "b"), (host.as_str(), "host")] {
        value["clusters"][0]["cluster"]["server"] = target.into();
        let path = t
            .kubeconfig()
            .with_file_name(format!("a-to-{what}.kubeconfig"));
        std::fs::write(&path, serde_yaml::to_string(&value)?)?;
        let run = kubectl(
            &path,
            &["--insecure-skip-tls-verify", "get", "secrets", "-A"],
            None,
        )?;
        refused(
            &format!("A's credentials reading the secrets of {what}"),
            run,
            "You must be logged in to the server",
        )?;
    }
    Ok(())
}

pub(crate) async fn attack_anonymous_requests(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    // A client that trusts A's CA and presents no credential at all.
    let anonymous = kubeconfig_with_user(
        t.kubeconfig(),
        "anonymous.kubeconfig",
        serde_yaml::Mapping::new().into(),
    )?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&anonymous)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let get = |path: &str| {
        let client = client.clone();
        let request = http::Request::get(path).body(Vec::new());
        async move {
            client
                .request_text(request?)
                .await
                .map_err(anyhow::Error::from)
        }
    };
    for path in ["/api", "/version", "/apis", "/metrics"] {
        let run = match get(path).await {
            Ok(body) => Run {
                ok: true,
                stdout: body,
                stderr: String::new(),
            },
            Err(e) => Run {
                ok: false,
                stdout: String::new(),
                stderr: format!("{e:#}"),
            },
        };
        refused(&format!("an anonymous GET {path}"), run, "Unauthorized")?;
    }
    // Health endpoints answer anyone (probes and load balancers).
    let live = get("/livez").await?;
    ensure!(live.trim() == "ok", "/livez: {live}");
    Ok(())
}

pub(crate) async fn attack_expired_bootstrap_token(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let token = |id: &str, expiration: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bootstrap-token-{id}, namespace: kube-system}}\ntype: bootstrap.kubernetes.io/token\nstringData: {{token-id: {id}, token-secret: 0123456789abcdef, usage-bootstrap-authentication: 'true', expiration: '{expiration}'}}\n"
        )
    };
    kubectl_ok(
        t.kubeconfig(),
        &["apply", "-f", "-"],
        Some(&format!(
            "{}---\n{}",
            token("expird", "2020-01-01T00:00:00Z"),
            token("future", "2099-01-01T00:00:00Z")
        )),
    )?;
    let as_token = |id: &str| {
        kubeconfig_with_user(
            t.kubeconfig(),
            &format!("token-{id}.kubeconfig"),
            serde_yaml::to_value(serde_json::json!({"token": format!("{id}.0123456789abcdef")}))?,
        )
    };
    // The same kind of token, not expired, does authenticate.
    let whoami = kubectl_ok(&as_token("future")?, &["auth", "whoami"], None)?;
    ensure!(whoami.contains("system:bootstrap:future"), "{whoami}");
    let run = kubectl(&as_token("expird")?, &["auth", "whoami"], None)?;
    refused("an expired bootstrap token", run, "Unauthorized")?;

    // Nestor's own pool token expires within hours.
    let expirations = kubectl_ok(
        t.kubeconfig(),
        &[
            "get",
            "secrets",
            "-n",
            "kube-system",
            "-l",
            "app.kubernetes.io/managed-by=nestor-operator",
            "--field-selector",
            "type=bootstrap.kubernetes.io/token",
            "-o",
            "jsonpath={.items[*].data.expiration}",
        ],
        None,
    )?;
    let expirations: Vec<&str> = expirations.split_whitespace().collect();
    ensure!(expirations.len() == 1, "pool tokens: {expirations:?}");
    use base64::Engine as _;
    let at = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(expirations[0])?)?;
    let at: k8s_openapi::jiff::Timestamp = at.parse()?;
    let left = at.duration_since(k8s_openapi::jiff::Timestamp::now());
    ensure!(
        left.as_secs() > 0 && left.as_secs() <= 4 * 3600,
        "the pool token expires at {at}"
    );
    Ok(())
}

pub(crate) async fn attack_token_file_in_the_admin_kubeconfig(env: &Env) -> Result<()> {
    let _ = tenants(env).await?;
    // A listener where the tampered kubeconfig points: any connection is
    // the operator following it.
    let listener = tokio::net::TcpListener::bind((env.bed.api_host.as_str(), 0)).await?;
    let port = listener.local_addr()?.port();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let accepting = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let tampered = format!(
        "apiVersion: v1
kind: Config
clusters: [{{name: x, cluster: {{server: 'https://{}:{port}', insecure-skip-tls-verify: true}}}}]
users: [{{name: x, user: {{tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}}}]
contexts: [{{name: x, context: {{cluster: x, user: x}}}}]
current-context: x
",
        env.bed.api_host
    );
    use base64::Engine as _;
    let patch = serde_json::json!({"data": {"kubeconfig": base64::engine::general_purpose::STANDARD.encode(&tampered)}});
    let secrets = env.api::<Secret>(NS);
    secrets
        .patch(
            "tenant-a-admin-kubeconfig",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    count_attempt();
    let repaired = wait_for(
        "the admin kubeconfig repaired",
        Duration::from_secs(120),
        || {
            let secrets = secrets.clone();
            Box::pin(async move {
                let secret = secrets.get("tenant-a-admin-kubeconfig").await?;
                let text = secret
                    .data
                    .and_then(|d| {
                        d.get("kubeconfig")
                            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    })
                    .unwrap_or_default();
                Ok(!text.contains("tokenFile") && text.contains("client-certificate-data"))
            })
        },
    )
    .await;
    // The reconcile that repaired the Secret is the one that would have
    // followed it; a call it made has been accepted by now.
    accepting.abort();
    let called = connections.load(Ordering::SeqCst);
    if called > 0 {
        count_success();
        bail!(
            "ATTACK SUCCEEDED: the operator followed a tampered kubeconfig ({called} connections)"
        );
    }
    repaired
}

pub(crate) async fn attack_image_from_an_unlisted_registry(env: &Env) -> Result<()> {
    let _ = tenants(env).await?;
    env.apply(
        NS,
        &vc_yaml(
            "tenant-c",
            "{images: {apiServer: 'evil.example/kube-apiserver:v1.35.4'}}",
        ),
    )?;
    count_attempt();
    let api = env.api::<VirtualCluster>(NS);
    let mut message = String::new();
    let reported = wait_for("tenant-c refused", Duration::from_secs(60), || {
        let api = api.clone();
        Box::pin(async move {
            let vc = api.get("tenant-c").await?;
            Ok(vc.status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidSpec")
            }))
        })
    })
    .await;
    if let Ok(vc) = api.get("tenant-c").await {
        message = vc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message)
            .unwrap_or_default();
    }
    let deployments = kubectl_ok(
        &env.admin,
        &["get", "deployments", "-n", NS, "-o", "name"],
        None,
    )?;
    if deployments.contains("tenant-c") {
        count_success();
        bail!("ATTACK SUCCEEDED: tenant-c's control plane was written: {deployments}");
    }
    reported?;
    ensure!(
        message.contains("spec.images.apiServer: 'evil.example/kube-apiserver:v1.35.4' is not from a registry this platform allows (allowed: registry.k8s.io, ghcr.io/nestor-dev)"),
        "{message}"
    );
    Ok(())
}

pub(crate) async fn attack_revoked_admin_credential(env: &Env) -> Result<()> {
    let _ = tenants(env).await?;
    let old = env.nested_kubeconfig(NS, "tenant-b").await?;
    let old_saved = old.with_file_name("tenant-b-old.kubeconfig");
    std::fs::copy(&old, &old_saved)?;
    kubectl_ok(&old_saved, &["get", "namespaces"], None)?;
    // Before the revocation, the admin mints itself a certificate for the
    // admin group the revocation will bind. It authenticates (and is
    // refused by RBAC for now).
    let later =
        mint_client_certificate(&old_saved, "later-admin", "nestor:cluster-admins:1").await?;
    let run = kubectl(&later, &["get", "namespaces"], None)?;
    ensure!(
        !run.ok && run.stderr.contains("Forbidden"),
        "a certificate minted through the CSR API should authenticate but not be bound yet: {}",
        run.stderr.trim()
    );
    kubectl_ok(
        &env.admin,
        &[
            "patch",
            "virtualcluster",
            "tenant-b",
            "-n",
            NS,
            "--type=merge",
            "-p",
            r#"{"spec":{"apiServer":{"adminCredentialGeneration":1}}}"#,
        ],
        None,
    )?;
    let before = std::fs::read_to_string(&old_saved)?;
    let secrets = env.api::<Secret>(NS);
    let new = old.with_file_name("tenant-b-new.kubeconfig");
    wait_for(
        "a new admin kubeconfig that works",
        Duration::from_secs(120),
        || {
            let (secrets, new, before) = (secrets.clone(), new.clone(), before.clone());
            Box::pin(async move {
                let secret = secrets.get("tenant-b-admin-kubeconfig").await?;
                let text = secret
                    .data
                    .and_then(|d| d.get("kubeconfig").map(|b| b.0.clone()))
                    .unwrap_or_default();
                std::fs::write(&new, &text)?;
                Ok(text != before.as_bytes() && kubectl(&new, &["get", "namespaces"], None)?.ok)
            })
        },
    )
    .await?;
    // The binding moved to the new group.
    let old = old_saved.clone();
    wait_for(
        "the old admin kubeconfig refused",
        Duration::from_secs(30),
        || {
            let old = old.clone();
            Box::pin(async move { Ok(!kubectl(&old, &["get", "namespaces"], None)?.ok) })
        },
    )
    .await?;
    let run = kubectl(&old_saved, &["get", "namespaces"], None)?;
    refused("a revoked admin kubeconfig", run, "Forbidden")?;
    // The revocation replaced the client signer: what the old admin
    // minted no longer authenticates, even for the group now bound. The
    // API server reads the new bundle from its Secret volume; the verdict
    // is the attempt after the wait, whether the wait saw it or not.
    let minted = later.clone();
    wait_for(
        "the minted certificate refused",
        Duration::from_secs(180),
        || {
            let minted = minted.clone();
            Box::pin(async move {
                let run = kubectl(&minted, &["get", "namespaces"], None)?;
                Ok(!run.ok && run.stderr.contains("Unauthorized"))
            })
        },
    )
    .await
    .ok();
    let run = kubectl(&later, &["get", "namespaces"], None)?;
    refused(
        "a certificate for a later admin group, minted before the revocation",
        run,
        "Unauthorized",
    )?;
    // Not an attack: the new admin still mints working certificates, once
    // the controller-manager signs with the new signer (it reads it from
    // its Secret volume too); one minted before that is retired.
    let mut attempt = 0;
    let started = Instant::now();
    loop {
        attempt += 1;
        let name = format!("current-admin-{attempt}");
        let current = mint_client_certificate(&new, &name, "nestor:cluster-admins:1").await?;
        let run = kubectl(&current, &["get", "namespaces"], None)?;
        if run.ok {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(180),
            "a certificate minted after the revocation does not work: {}",
            run.stderr.trim()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Not an attack: the tenant admin still does cluster-admin work, such as
/// installing a chart with CRDs, ClusterRoles and ClusterRoleBindings
/// (Nestor's own), and running ordinary pods.
pub(crate) async fn tenant_admin_installs_a_chart(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let chart = nestor_e2e::paths::repo_root().join("charts/nestor");
    let config = t.kubeconfig().display().to_string();
    let out = helm(&[
        "install",
        "nestor",
        &chart.display().to_string(),
        "--kubeconfig",
        &config,
        "--namespace",
        "nestor-system",
        "--create-namespace",
    ])?;
    ensure!(
        out.ok,
        "helm install as the tenant admin: {}{}",
        out.stdout,
        out.stderr
    );
    for (kind, name) in [
        ("crd", "virtualclusters.nestor.dev"),
        ("clusterrole", "nestor"),
        ("clusterrolebinding", "nestor"),
    ] {
        kubectl_ok(t.kubeconfig(), &["get", kind, name], None)
            .with_context(|| format!("{kind} {name} after the chart install"))?;
    }
    kubectl_ok(
        t.kubeconfig(),
        &["get", "deployment", "nestor", "-n", "nestor-system"],
        None,
    )?;
    let ordinary = create(
        t.kubeconfig(),
        &pod(
            "ordinary",
            "",
            "    securityContext: {capabilities: {add: [NET_BIND_SERVICE]}}",
        ),
    )?;
    ensure!(
        ordinary.ok,
        "an ordinary pod was refused: {}",
        ordinary.stderr
    );
    Ok(())
}
