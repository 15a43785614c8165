//! The ways out that rest on what a tenant admin can write: namespace
//! labels through any subresource, webhooks by URL, the API server's own
//! client identities through the proxy subresources, the API server pod's
//! network, and confining objects removed by a superuser. Each attempt
//! counts in the attack suite's summary.
//!
//! Longer than most files: one scenario per class of attack, each read
//! top to bottom.

use anyhow::{Context as _, Result, ensure};
use nestor_e2e::harness::attacks::{LABELS, record, refused};
use nestor_e2e::harness::e2e::{Env, tenants};
use nestor_e2e::harness::host::{
    component_ip, host_pod_ip, host_targets, node_connects, pool_ready, service_ip,
};
use nestor_e2e::harness::nested::{
    BUSYBOX, connect_script, default_service_account, pool_yaml, wait_nested,
};
use nestor_e2e::node::setting;
use nestor_e2e::support::vc_yaml;
use nestor_e2e::tools::{Run, kubectl, kubectl_ok};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const BASELINE_POLICY: &str = "ValidatingAdmissionPolicy 'nestor-pod-baseline'";
const WEBHOOK_URLS: &str = "ValidatingAdmissionPolicy 'nestor-webhook-urls'";
const GUARDED: &str = "are managed by the platform";

/// Every subresource of namespaces that takes a write, from the API
/// server's own discovery: each carries a whole namespace, labels
/// included, and each must refuse a label that lowers Pod Security.
pub(crate) async fn attack_namespace_labels_through_subresources(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let a = t.kubeconfig();
    kubectl_ok(a, &["create", "namespace", "relabel"], None)?;
    let discovery: Value =
        serde_json::from_str(&kubectl_ok(a, &["get", "--raw", "/api/v1"], None)?)?;
    let writable: Vec<(String, Vec<String>)> = discovery["resources"]
        .as_array()
        .context("no resources in discovery")?
        .iter()
        .filter_map(|r| {
            let name = r["name"].as_str()?;
            let sub = name.strip_prefix("namespaces/")?;
            let verbs: Vec<String> = r["verbs"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .filter(|v| v == "update" || v == "patch")
                .collect();
            (!verbs.is_empty()).then(|| (sub.to_string(), verbs))
        })
        .collect();
    let names: Vec<&str> = writable.iter().map(|(s, _)| s.as_str()).collect();
    ensure!(
        names.contains(&"status") && names.contains(&"finalize"),
        "discovery lists no status or finalize subresource of namespaces: {names:?}"
    );
    let label = "pod-security.kubernetes.io/enforce";
    for (sub, verbs) in &writable {
        if verbs.iter().any(|v| v == "update") {
            let mut ns: Value = serde_json::from_str(&kubectl_ok(
                a,
                &["get", "namespace", "relabel", "-o", "json"],
                None,
            )?)?;
            ns["metadata"]["labels"][label] = json!("privileged");
            let run = kubectl(
                a,
                &[
                    "replace",
                    "--raw",
                    &format!("/api/v1/namespaces/relabel/{sub}"),
                    "-f",
                    "-",
                ],
                Some(&ns.to_string()),
            )?;
            refused(
                &format!("relabelling a namespace privileged through namespaces/{sub} (update)"),
                run,
                LABELS,
            )?;
        }
        if verbs.iter().any(|v| v == "patch") {
            let run = kubectl(
                a,
                &[
                    "patch",
                    "namespace",
                    "relabel",
                    &format!("--subresource={sub}"),
                    "--type=merge",
                    "-p",
                    &json!({"metadata": {"labels": {label: "privileged"}}}).to_string(),
                ],
                None,
            )?;
            refused(
                &format!("relabelling a namespace privileged through namespaces/{sub} (patch)"),
                run,
                LABELS,
            )?;
        }
    }
    let labels = kubectl_ok(
        a,
        &[
            "get",
            "namespace",
            "relabel",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
        None,
    )?;
    ensure!(!labels.contains("privileged"), "the label stuck: {labels}");
    kubectl_ok(a, &["delete", "namespace", "relabel", "--wait=false"], None)?;
    Ok(())
}

/// Admission and conversion webhooks by URL, or naming the API server's
/// own Service: refused, created or edited.
pub(crate) async fn attack_webhook_by_url(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let a = t.kubeconfig();
    let host_api = format!("https://{}:{}/", setting("HOST_IP"), env.bed.api_port);
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let yaml = format!(
            "apiVersion: admissionregistration.k8s.io/v1
kind: {kind}
metadata: {{name: by-url}}
webhooks:
- name: by-url.example.com
  clientConfig: {{url: '{host_api}'}}
  rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [configmaps]}}]
  sideEffects: None
  admissionReviewVersions: [v1]
  failurePolicy: Ignore
"
        );
        let run = kubectl(a, &["create", "-f", "-"], Some(&yaml))?;
        refused(
            &format!("a {kind} calling the host's API server by URL"),
            run,
            WEBHOOK_URLS,
        )?;
        // The same, named by a Service, is the tenant's to create; then
        // turned to a URL, it is refused again.
        let by_service = yaml.replace(
            &format!("{{url: '{host_api}'}}"),
            "{service: {name: nowhere, namespace: default}}",
        );
        kubectl_ok(a, &["create", "-f", "-"], Some(&by_service))?;
        let plural = format!("{}s", kind.to_lowercase());
        let run = kubectl(
            a,
            &[
                "patch",
                &plural,
                "by-url",
                "--type=json",
                "-p",
                &json!([{"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": host_api}}]).to_string(),
            ],
            None,
        )?;
        refused(&format!("a {kind} turned to a URL"), run, WEBHOOK_URLS)?;
        kubectl_ok(a, &["delete", &plural, "by-url"], None)?;
        // The API server's own Service: upstream would call it with its
        // loopback superuser credential.
        let itself = yaml.replace(
            &format!("{{url: '{host_api}'}}"),
            "{service: {name: kubernetes, namespace: default, path: /api/v1/namespaces}}",
        );
        let run = kubectl(a, &["create", "-f", "-"], Some(&itself))?;
        refused(
            &format!("a {kind} calling the API server as its own superuser"),
            run,
            WEBHOOK_URLS,
        )?;
    }
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.example.com}}
spec:
  group: example.com
  names: {{kind: Widget, plural: widgets}}
  scope: Namespaced
  versions:
  - {{name: v1, served: true, storage: true, schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}
  - {{name: v2, served: true, storage: false, schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1]
      clientConfig: {{url: '{host_api}'}}
"
    );
    let run = kubectl(a, &["create", "-f", "-"], Some(&crd))?;
    refused(
        "a CRD converting through the host's API server by URL",
        run,
        WEBHOOK_URLS,
    )?;
    let itself = crd.replace(
        &format!("{{url: '{host_api}'}}"),
        "{service: {name: kubernetes, namespace: default}}",
    );
    let run = kubectl(a, &["create", "-f", "-"], Some(&itself))?;
    refused(
        "a CRD converting through the API server as its own superuser",
        run,
        WEBHOOK_URLS,
    )
}

/// A pod of the attack the issue tracker recorded: every way to the node
/// pod's root at once.
const ESCAPE_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: escape}
spec:
  hostPID: true
  hostNetwork: true
  nodeName: parking
  securityContext: {seccompProfile: {type: Unconfined}}
  containers:
  - name: main
    image: images.nestor.test/busybox:1.35
    command: [sleep, '3600']
    securityContext: {capabilities: {add: [SYS_ADMIN]}}
    volumeMounts: [{name: root, mountPath: /host}]
  volumes: [{name: root, hostPath: {path: /}}]
";

/// A pod bound to `parking`, a Node with no kubelet behind it (so that
/// nothing runs it and the pod garbage collector keeps it), with extra pod
/// and container fields.
fn pod(name: &str, pod_fields: &str, container_fields: &str) -> String {
    nestor_e2e::harness::attacks::pod(
        name,
        &format!("  nodeName: parking\n{pod_fields}"),
        container_fields,
    )
}

/// With the label lock gone (a superuser removed its binding), a tenant
/// labels a namespace `privileged`: Pod Security admission lets every pod
/// in; Nestor's baseline policy, which reads no label, still refuses each
/// field of baseline, in every list of containers, ephemeral ones added
/// later included.
async fn no_label_decides(x: &Path, glass: &Path) -> Result<()> {
    kubectl_ok(x, &["create", "namespace", "loose"], None)?;
    // Admission sees the binding gone within moments; Nestor puts it back
    // within its recheck, so it is taken away again until the label is in.
    wait_nested("the label lock to be gone", Duration::from_secs(60), || {
        kubectl(
            glass,
            &[
                "delete",
                "validatingadmissionpolicybinding",
                "nestor-pod-security-labels",
                "--ignore-not-found",
            ],
            None,
        )?;
        Ok(kubectl(
            x,
            &[
                "label",
                "namespace",
                "loose",
                "--overwrite",
                "pod-security.kubernetes.io/enforce=privileged",
            ],
            None,
        )?
        .ok)
    })
    .await?;
    let in_loose = |yaml: &str| kubectl(x, &["create", "-n", "loose", "-f", "-"], Some(yaml));
    refused(
        "the escape pod (host PID and network, SYS_ADMIN, no seccomp, the node's /) in a namespace labelled privileged",
        in_loose(ESCAPE_POD)?,
        BASELINE_POLICY,
    )?;
    let sc = |fields: &str| format!("    securityContext: {{{fields}}}");
    let cases: Vec<(&str, String)> = vec![
        ("host network", pod("f1", "  hostNetwork: true", "")),
        ("host PID", pod("f2", "  hostPID: true", "")),
        ("host IPC", pod("f3", "  hostIPC: true", "")),
        (
            "a hostPath volume",
            pod("f4", "  volumes: [{name: root, hostPath: {path: /}}]", ""),
        ),
        (
            "SYS_ADMIN",
            pod("f5", "", &sc("capabilities: {add: [SYS_ADMIN]}")),
        ),
        (
            "NET_ADMIN",
            pod("f6", "", &sc("capabilities: {add: [NET_ADMIN]}")),
        ),
        (
            "a host port",
            pod("f7", "", "    ports: [{containerPort: 80, hostPort: 80}]"),
        ),
        (
            "an unconfined seccomp profile (pod)",
            pod(
                "f8",
                "  securityContext: {seccompProfile: {type: Unconfined}}",
                "",
            ),
        ),
        (
            "an unconfined seccomp profile (container)",
            pod("f9", "", &sc("seccompProfile: {type: Unconfined}")),
        ),
        (
            "an unconfined AppArmor profile",
            pod("f10", "", &sc("appArmorProfile: {type: Unconfined}")),
        ),
        (
            "an AppArmor annotation",
            pod("f11", "", "").replace(
                "  name: f11\n",
                "  name: f11\n  annotations: {container.apparmor.security.beta.kubernetes.io/main: unconfined}\n",
            ),
        ),
        (
            "an SELinux user",
            pod("f12", "", &sc("seLinuxOptions: {user: system_u}")),
        ),
        (
            "an SELinux type",
            pod(
                "f13",
                "  securityContext: {seLinuxOptions: {type: spc_t}}",
                "",
            ),
        ),
        (
            "an unsafe sysctl",
            pod(
                "f14",
                "  securityContext: {sysctls: [{name: kernel.msgmax, value: '65536'}]}",
                "",
            ),
        ),
        (
            "SYS_ADMIN in an init container",
            pod(
                "f15",
                "  initContainers: [{name: init, image: images.nestor.test/busybox:1.35, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]",
                "",
            ),
        ),
    ];
    for (what, yaml) in &cases {
        refused(
            &format!("a pod with {what} in a namespace labelled privileged"),
            in_loose(yaml)?,
            BASELINE_POLICY,
        )?;
    }
    // An ephemeral container is added through a subresource of a pod
    // that was admitted.
    in_loose(&pod("plain", "", ""))?;
    let mut plain: Value = serde_json::from_str(&kubectl_ok(
        x,
        &["get", "-n", "loose", "pod", "plain", "-o", "json"],
        None,
    )?)?;
    plain["spec"]["ephemeralContainers"] = json!([{
        "name": "debugger",
        "image": BUSYBOX,
        "command": ["sleep", "3600"],
        "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
    }]);
    let run = kubectl(
        x,
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/loose/pods/plain/ephemeralcontainers",
            "-f",
            "-",
        ],
        Some(&plain.to_string()),
    )?;
    refused(
        "an ephemeral container with SYS_ADMIN in a namespace labelled privileged",
        run,
        BASELINE_POLICY,
    )
}

/// What a superuser removes or weakens comes back within the recheck (15 s
/// in this suite's Helm values), with a Warning Event on the host.
async fn confining_objects_are_repaired(env: &Env, ns: &str, x: &Path, glass: &Path) -> Result<()> {
    kubectl_ok(
        glass,
        &["delete", "validatingadmissionpolicy", "nestor-pod-baseline"],
        None,
    )?;
    kubectl_ok(
        glass,
        &[
            "patch",
            "validatingadmissionpolicybinding",
            "nestor-proc-mount",
            "--type=merge",
            "-p",
            r#"{"spec":{"validationActions":["Audit"]}}"#,
        ],
        None,
    )?;
    let start = Instant::now();
    wait_nested(
        "the confining objects to be written again",
        Duration::from_secs(90),
        || {
            let get = |what: &str, name: &str, path: &str| {
                kubectl(
                    glass,
                    &["get", what, name, "-o", &format!("jsonpath={path}")],
                    None,
                )
            };
            let labels = get(
                "validatingadmissionpolicybinding",
                "nestor-pod-security-labels",
                "{.spec.validationActions}",
            )?;
            let baseline = get(
                "validatingadmissionpolicy",
                "nestor-pod-baseline",
                "{.metadata.name}",
            )?;
            let proc_mount = get(
                "validatingadmissionpolicybinding",
                "nestor-proc-mount",
                "{.spec.validationActions}",
            )?;
            Ok(labels.ok
                && labels.stdout.contains("Deny")
                && baseline.ok
                && proc_mount.stdout.contains("Deny")
                && !proc_mount.stdout.contains("Audit"))
        },
    )
    .await?;
    println!(
        "figure: confining objects deleted or weakened by a superuser, written again after {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let events = kubectl_ok(
        &env.admin,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector=reason=AddonsRepaired",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        None,
    )?;
    // Repeated repairs of one cluster are one Event's series (its note is
    // the first repair's): this test's first was the label lock's binding.
    ensure!(
        events.contains("ValidatingAdmission"),
        "no AddonsRepaired event names a policy or binding: {events:?}"
    );
    // And the lock holds again, once admission has seen the binding back
    // (a label that got through meanwhile is taken off and tried again).
    let label = || {
        kubectl(
            x,
            &[
                "label",
                "namespace",
                "default",
                "--overwrite",
                "pod-security.kubernetes.io/enforce=privileged",
            ],
            None,
        )
    };
    wait_nested(
        "admission to see the label lock again",
        Duration::from_secs(30),
        || {
            if !label()?.ok {
                return Ok(true);
            }
            kubectl_ok(
                glass,
                &[
                    "label",
                    "namespace",
                    "default",
                    "pod-security.kubernetes.io/enforce-",
                ],
                None,
            )?;
            Ok(false)
        },
    )
    .await?;
    let run = label()?;
    refused(
        "relabelling default privileged after the repair",
        run,
        LABELS,
    )
}

/// A Node of the tenant's making whose address and kubelet port are
/// `ip:port`.
fn decoy_node(x: &Path, name: &str, ip: &str, port: u16) -> Result<()> {
    kubectl_ok(
        x,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"
        )),
    )?;
    set_status(
        x,
        "node",
        name,
        json!({"status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }}),
    )
}

/// Merges `status` into the status of `kind/name`, as the tenant may.
fn set_status(x: &Path, kind: &str, name: &str, status: Value) -> Result<()> {
    kubectl_ok(
        x,
        &[
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    )?;
    Ok(())
}

/// A pod bound to no running node whose status claims the address `ip`.
fn decoy_pod(x: &Path, name: &str, ip: &str) -> Result<()> {
    kubectl_ok(x, &["create", "-f", "-"], Some(&pod(name, "", "")))?;
    set_status(
        x,
        "pod",
        name,
        json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}}),
    )
}

/// A Service of the tenant's whose only endpoint is `ip:port`. The
/// Service proxy reads the Endpoints and goes only to an address of a pod
/// the endpoint names, so the endpoint names a decoy pod claiming `ip`.
/// Returns the API server's refusal of such Endpoints, if it refused them.
fn decoy_service(x: &Path, name: &str, ip: &str, port: u16) -> Result<Option<Run>> {
    let pod = format!("{name}-pod");
    decoy_pod(x, &pod, ip)?;
    let yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{ports: [{{name: https, port: {port}, protocol: TCP}}]}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: {name}}}
subsets:
- addresses: [{{ip: '{ip}', targetRef: {{kind: Pod, name: {pod}, namespace: default}}}}]
  ports: [{{name: https, port: {port}, protocol: TCP}}]
"
    );
    let run = kubectl(x, &["create", "-f", "-"], Some(&yaml))?;
    if run.ok {
        return Ok(None);
    }
    ensure!(
        run.stderr.contains("Endpoints"),
        "creating the decoy Service {name}: {}",
        run.stderr
    );
    Ok(Some(run))
}

/// A decoy of `kind` (`node`, `pod` or `service`) whose proxy goes to
/// `ip:port`, and that proxy's base path; or the API server's refusal of
/// the decoy itself.
fn decoy(
    x: &Path,
    kind: &str,
    name: &str,
    ip: &str,
    port: u16,
) -> Result<std::result::Result<String, Run>> {
    Ok(Ok(match kind {
        "node" => {
            decoy_node(x, name, ip, port)?;
            format!("/api/v1/nodes/https:{name}:{port}/proxy")
        }
        "pod" => {
            decoy_pod(x, name, ip)?;
            format!("/api/v1/namespaces/default/pods/https:{name}:{port}/proxy")
        }
        _ => {
            if let Some(refusal) = decoy_service(x, name, ip, port)? {
                return Ok(Err(refusal));
            }
            format!("/api/v1/namespaces/default/services/https:{name}:https/proxy")
        }
    }))
}

/// Whether a proxied request's answer came from the target: any answer
/// but the proxy's own failure to connect.
fn reached(run: &Run) -> bool {
    if run.ok {
        return true;
    }
    let text = run.stderr.to_lowercase();
    let not_reached = [
        "error dialing backend",
        "error trying to reach",
        "dial tcp",
        "timeout",
        "deadline exceeded",
        "no agent available",
        "address not allowed",
    ];
    !not_reached.iter().any(|m| text.contains(m))
}

/// The admin kubeconfig's client certificate and key, as files for curl.
fn client_files(config: &Path) -> Result<(String, std::path::PathBuf, std::path::PathBuf)> {
    use base64::Engine as _;
    let value: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(config)?)?;
    let server = value["clusters"][0]["cluster"]["server"]
        .as_str()
        .context("no server")?
        .to_string();
    let user = &value["users"][0]["user"];
    let decode = |key: &str| -> Result<Vec<u8>> {
        Ok(base64::engine::general_purpose::STANDARD
            .decode(user[key].as_str().context("no client certificate")?)?)
    };
    let cert = config.with_extension("crt");
    let key = config.with_extension("key");
    std::fs::write(&cert, decode("client-certificate-data")?)?;
    std::fs::write(&key, decode("client-key-data")?)?;
    Ok((server, cert, key))
}

/// A POST of a SelfSubjectReview through `path` (a proxy subresource),
/// with headers that would name a superuser to a server that took the
/// caller for its front proxy. Returns the user and groups the far end
/// answered with, if it answered a review at all.
fn review_through(config: &Path, path: &str) -> Result<(Run, String, Vec<String>)> {
    let (server, cert, key) = client_files(config)?;
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "20",
            "--cert",
            &cert.display().to_string(),
            "--key",
            &key.display().to_string(),
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-Remote-User: system:admin",
            "-H",
            "X-Remote-Group: system:masters",
            "-X",
            "POST",
            "-d",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
            &format!("{server}{path}"),
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let answer = serde_json::from_str::<Value>(&stdout).unwrap_or_default();
    let user = answer["status"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let groups = answer["status"]["userInfo"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|g| g.as_str().map(String::from))
        .collect();
    let run = Run {
        ok: out.status.success() && stdout.contains("SelfSubjectReview"),
        stdout: stdout.clone(),
        stderr: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    };
    Ok((run, user, groups))
}

/// The node, pod and Service proxies, each aimed by the tenant at the
/// cluster's own API server: whatever identity the API server presents on
/// them, and whatever headers the tenant adds, the far end sees no
/// superuser, and the guard still holds. Aimed at the host's API server,
/// its kubelet, another tenant and a link-local address, they reach
/// nothing.
async fn proxies_lead_nowhere(env: &Env, ns: &str, x: &Path, b_endpoint: &str) -> Result<()> {
    let own_service = service_ip(env, ns, "x-apiserver")?;
    let own_pod = component_ip(env, ns, "x", "apiserver")?;
    let b = b_endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let (b_ip, b_port) = b.rsplit_once(':').context("B's endpoint has no port")?;
    let own: Vec<(&str, String, u16)> = vec![
        ("its own API server's host Service", own_service, 6443),
        ("its own API server's pod", own_pod, 6443),
    ];
    let elsewhere: Vec<(String, String, u16)> = host_targets(env)?
        .into_iter()
        .chain([(
            "tenant B's API server".into(),
            b_ip.to_string(),
            b_port.parse()?,
        )])
        .collect();
    kubectl_ok(
        x,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata: {name: parking}\n"),
    )?;
    let review = "apis/authentication.k8s.io/v1/selfsubjectreviews";
    let policy =
        "apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/nestor-pod-baseline";
    let mut n = 0;
    for (what, ip, port) in &own {
        for kind in ["node", "pod", "service"] {
            n += 1;
            let name = format!("decoy-{n}");
            let base = decoy(x, kind, &name, ip, *port)?.map_err(|refusal| {
                anyhow::anyhow!("the decoy {kind} at {what} was refused: {}", refusal.stderr)
            })?;
            let who = format!("a {kind} proxy aimed at {what} ({ip}:{port})");
            let (run, user, groups) = review_through(x, &format!("{base}/{review}"))?;
            let answer: String = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
            println!(
                "{who}: {} {groups:?} ({})",
                if user.is_empty() {
                    "no user"
                } else {
                    user.as_str()
                },
                answer.chars().take(160).collect::<String>()
            );
            if kind == "node" && n == 1 {
                // The path works: the API server answered itself, as the
                // kubelet client, through the tenant's Node.
                ensure!(
                    user == "kube-apiserver-kubelet-client",
                    "the node proxy at the API server's Service answered no review, so the test proves nothing: {answer}"
                );
            }
            record(
                &format!("{who}, asking who it is: {user} {groups:?}"),
                groups.iter().any(|g| g == "system:masters"),
            )?;
            let run = kubectl(x, &["delete", "--raw", &format!("{base}/{policy}")], None)?;
            refused_any(&format!("{who}, deleting a confining policy"), run)?;
            ensure!(
                kubectl(
                    x,
                    &["get", "validatingadmissionpolicy", "nestor-pod-baseline"],
                    None
                )?
                .ok,
                "{who}: the policy is gone"
            );
        }
    }
    for (what, ip, port) in &elsewhere {
        ensure!(
            node_connects(ip, *port)?,
            "{what} ({ip}:{port}) does not answer on the node: the test proves nothing"
        );
        for kind in ["node", "pod", "service"] {
            n += 1;
            let name = format!("decoy-{n}");
            let path = match decoy(x, kind, &name, ip, *port)? {
                Ok(base) => format!("{base}/"),
                Err(refusal) => {
                    // The API server takes no such decoy at all.
                    println!("a {kind} proxy aimed at {what}: {}", refusal.stderr.trim());
                    record(
                        &format!("a {kind} proxy aimed at {what} ({ip}:{port})"),
                        false,
                    )?;
                    continue;
                }
            };
            let run = kubectl(x, &["get", "--raw", &path, "--request-timeout=30s"], None)?;
            println!("a {kind} proxy aimed at {what}: {}", run.stderr.trim());
            record(
                &format!("a {kind} proxy aimed at {what} ({ip}:{port})"),
                reached(&run),
            )?;
        }
    }
    Ok(())
}

/// A refusal, whatever its words: the far end refused, or the proxy could
/// not connect.
fn refused_any(what: &str, run: Run) -> Result<()> {
    record(&format!("{what}: {}", run.stdout.trim()), run.ok)?;
    if !run.stderr.contains(GUARDED) {
        println!("{what}: refused with {}", run.stderr.trim());
    }
    Ok(())
}

/// The API server's pod (a debugging container in it, which shares its
/// network and its NetworkPolicy) reaches its own etcd and nothing else:
/// not the host's API server or kubelet, not tenant B, not the link-local
/// address, not the operator.
async fn api_server_pod_reaches_only_its_etcd(env: &Env, ns: &str, b_endpoint: &str) -> Result<()> {
    let pod = kubectl_ok(
        &env.admin,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "nestor.dev/cluster=x,app.kubernetes.io/component=apiserver",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    )?;
    kubectl_ok(
        &env.admin,
        &[
            "debug",
            "-n",
            ns,
            &pod,
            "-c",
            "probe",
            &format!("--image={BUSYBOX}"),
            "--image-pull-policy=Never",
            "--profile=restricted",
            "--",
            "sleep",
            "3600",
        ],
        None,
    )?;
    wait_nested(
        "the probe in the API server's pod",
        Duration::from_secs(60),
        || {
            let state = kubectl_ok(
                &env.admin,
                &[
                    "get",
                    "pod",
                    "-n",
                    ns,
                    &pod,
                    "-o",
                    "jsonpath={.status.ephemeralContainerStatuses[0].state.running}",
                ],
                None,
            )?;
            Ok(!state.trim().is_empty())
        },
    )
    .await?;
    let probe = |ip: &str, port: u16| -> Result<bool> {
        let out = kubectl_ok(
            &env.admin,
            &[
                "exec",
                "-n",
                ns,
                &pod,
                "-c",
                "probe",
                "--",
                "sh",
                "-c",
                &connect_script(ip, port),
            ],
            None,
        )?;
        Ok(out.trim() == "open")
    };
    let etcd = host_pod_ip(env, ns, "x-etcd-0")?;
    ensure!(
        probe(&etcd, 2379)?,
        "the API server's pod does not reach its own etcd: the test proves nothing"
    );
    let b = b_endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let (b_ip, b_port) = b.rsplit_once(':').context("B's endpoint has no port")?;
    let targets: Vec<(String, String, u16)> = host_targets(env)?
        .into_iter()
        .chain([
            ("tenant B's API server".into(), b_ip.into(), b_port.parse()?),
            ("its own etcd's metrics port".into(), etcd.clone(), 2381),
        ])
        .collect();
    for (what, ip, port) in &targets {
        record(
            &format!("the API server's pod reaching {what} ({ip}:{port})"),
            probe(ip, *port)?,
        )?;
    }
    Ok(())
}

/// One cluster with a node, attacked through its proxies, its API
/// server's network and its confining objects.
pub(crate) async fn escape_attacks(env: &Env) -> Result<()> {
    let t = tenants(env).await?;
    let b_endpoint = t.b_endpoint().to_string();
    let ns = env.namespace("escape")?;
    let start = Instant::now();
    env.apply(
        &ns,
        &[vc_yaml("x", "{}"), pool_yaml("nodes", "x", 1, "")].join("---\n"),
    )?;
    let timeout = Duration::from_secs(300);
    env.ready(&ns, "x", start, timeout).await?;
    pool_ready(env, &ns, "nodes", 1, timeout).await?;
    let x = env.nested_kubeconfig(&ns, "x").await?;
    let glass = env
        .kubeconfig_from_secret(&ns, "x-break-glass-kubeconfig")
        .await?;
    default_service_account(&x).await?;
    proxies_lead_nowhere(env, &ns, &x, &b_endpoint).await?;
    api_server_pod_reaches_only_its_etcd(env, &ns, &b_endpoint).await?;
    no_label_decides(&x, &glass).await?;
    confining_objects_are_repaired(env, &ns, &x, &glass).await?;
    ns.done()
}
