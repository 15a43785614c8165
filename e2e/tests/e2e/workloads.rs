//! Workloads inside virtual clusters, on node pods of their own.
//!
//! Longer than most files: each workload scenario is one function that
//! reads top to bottom.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use nestor_e2e::harness::e2e::Env;
use nestor_e2e::harness::host::{host_pod_ip, pool_ready, recreate_node_pod};
use nestor_e2e::harness::nested::{
    BUSYBOX, connects, default_service_account, exec, get, nested, nested_apply, pool_yaml,
    wait_nested, web_yaml,
};
use nestor_e2e::support::vc_yaml;
use nestor_e2e::tools::{kubectl, kubectl_ok};
use std::path::Path;
use std::time::{Duration, Instant};

/// An HTTP GET with busybox `nc` (busybox-static's own resolver serves
/// `nslookup`; its libc lookups cannot, so calls go to addresses).
fn http_get(ip: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}")
}

/// Two pools of one cluster (different labels, taints and sizes) join as
/// Ready Nodes with certificates of their own; a Deployment runs on them;
/// logs, exec, DNS, Services and pod-to-pod traffic across nodes work;
/// nested pods reach neither the host's pods nor another tenant's nodes;
/// and the tenant's own NetworkPolicies are enforced.
pub(crate) async fn workloads_run_on_nested_nodes(env: &Env) -> Result<()> {
    let ns = env.namespace("workloads")?;
    let applied = Instant::now();
    env.apply(
        &ns,
        &[
            vc_yaml("work", "{}"),
            pool_yaml("big", "work", 2, "  labels: {tier: big}\n"),
            pool_yaml(
                "small",
                "work",
                1,
                "  labels: {tier: small}\n  taints: [{key: dedicated, value: small, effect: NoSchedule}]\n",
            ),
            vc_yaml("other", "{}"),
            pool_yaml("other-nodes", "other", 1, ""),
        ]
        .join("---\n"),
    )?;
    env.ready(&ns, "work", applied, Duration::from_secs(180))
        .await?;
    let config = env.nested_kubeconfig(&ns, "work").await?;
    default_service_account(&config).await?;
    nested_apply(&config, &web_yaml(3, "{tier: big}"))?;
    nested_apply(
        &config,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: probe
spec:
  nodeSelector: {{tier: small}}
  tolerations: [{{key: dedicated, operator: Equal, value: small, effect: NoSchedule}}]
  terminationGracePeriodSeconds: 1
  containers:
  - name: probe
    image: {BUSYBOX}
    command: ["sleep", "3600"]
"#
        ),
    )?;
    wait_nested("a nested pod Running", Duration::from_secs(180), || {
        let phases = get(&config, &["pods"], "{.items[*].status.phase}")?;
        Ok(phases.split_whitespace().any(|p| p == "Running"))
    })
    .await?;
    eprintln!(
        "figure: apply to first nested pod Running: {:.1}s",
        applied.elapsed().as_secs_f64()
    );
    pool_ready(env, &ns, "big", 2, Duration::from_secs(120)).await?;
    pool_ready(env, &ns, "small", 1, Duration::from_secs(120)).await?;

    // Nodes: Ready, labelled and tainted as their pool says (the not-ready
    // taint goes shortly after Ready), and without DiskPressure however full
    // the host's shared disk is.
    let expected = [
        "big-node-0 big =: True False",
        "big-node-1 big =: True False",
        "small-node-0 small dedicated=small:NoSchedule True False",
    ];
    let mut seen = String::new();
    let nodes_ok = wait_nested("nodes labelled and tainted", Duration::from_secs(60), || {
        seen = get(
            &config,
            &["nodes"],
            r#"{range .items[*]}{.metadata.name} {.metadata.labels.tier} {.spec.taints[*].key}={.spec.taints[*].value}:{.spec.taints[*].effect} {.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="DiskPressure")].status}{"\n"}{end}"#,
        )?;
        let mut lines: Vec<&str> = seen.lines().collect();
        lines.sort();
        Ok(lines == expected)
    })
    .await;
    ensure!(nodes_ok.is_ok(), "nested nodes: {seen}");
    // Each node holds a client certificate of its own (TLS bootstrap), and
    // its serving certificate was approved for its own name only.
    let csrs = || {
        get(
            &config,
            &["csr"],
            r#"{range .items[*]}{.spec.signerName} {.spec.username} {.status.conditions[*].type} {.status.certificate}{"\n"}{end}"#,
        )
    };
    // A request is approved a moment before its certificate is issued.
    let mut issued = String::new();
    let all_issued = wait_nested(
        "every CSR approved and issued",
        Duration::from_secs(60),
        || {
            issued = csrs()?;
            Ok(issued.lines().all(|l| l.split_whitespace().count() == 4))
        },
    )
    .await;
    ensure!(all_issued.is_ok(), "CSRs: {issued}");
    let mut client_subjects = Vec::new();
    let mut serving_nodes = Vec::new();
    for line in issued.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [
                "kubernetes.io/kube-apiserver-client-kubelet",
                user,
                "Approved",
                cert,
            ] => {
                ensure!(
                    user.starts_with("system:bootstrap:"),
                    "client CSR by {user}"
                );
                client_subjects.push(certificate_subject(cert)?);
            }
            ["kubernetes.io/kubelet-serving", user, "Approved", _cert] => {
                serving_nodes.push(user.to_string());
            }
            _ => bail!("a CSR is not approved and issued: {line}"),
        }
    }
    client_subjects.sort();
    client_subjects.dedup();
    ensure!(
        client_subjects
            == [
                "system:node:big-node-0",
                "system:node:big-node-1",
                "system:node:small-node-0"
            ],
        "client certificates: {client_subjects:?}"
    );
    serving_nodes.sort();
    serving_nodes.dedup();
    ensure!(
        serving_nodes
            == [
                "system:node:big-node-0",
                "system:node:big-node-1",
                "system:node:small-node-0"
            ],
        "approved serving CSRs: {serving_nodes:?}"
    );
    // The Node authorizer confines a node to what its pods need.
    let can = |args: &[&str]| -> Result<String> {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--as",
            "system:node:big-node-0",
            "--as-group",
            "system:nodes",
        ]);
        let out = kubectl(&config, &all, None)?;
        Ok(format!("{}{}", out.stdout.trim(), out.stderr.trim()))
    };
    let secrets = can(&["get", "secrets", "-n", "default"])?;
    ensure!(
        secrets.starts_with("no"),
        "a node may read secrets: {secrets}"
    );
    let nodes = can(&["get", "nodes"])?;
    ensure!(
        nodes.starts_with("yes"),
        "a node may not read nodes: {nodes}"
    );

    // The Deployment becomes Available on the big pool's two nodes.
    wait_nested("web Available", Duration::from_secs(120), || {
        Ok(get(&config, &["deploy", "web"], "{.status.availableReplicas}")? == "3")
    })
    .await?;
    let pods = get(
        &config,
        &["pods", "-l", "app=web"],
        r#"{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}"#,
    )?;
    let web: Vec<(String, String, String)> = pods
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].into(), f[1].into(), f[2].into()))
        })
        .collect();
    let mut used: Vec<&str> = web.iter().map(|w| w.1.as_str()).collect();
    used.sort();
    used.dedup();
    ensure!(used == ["big-node-0", "big-node-1"], "web pods: {pods}");

    nested(
        &config,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/probe",
            "--timeout=120s",
        ],
    )?;

    // Logs and exec go through the nested API server to the kubelets.
    let logs = nested(&config, &["logs", &web[0].0])?;
    ensure!(logs.contains("serving"), "logs: {logs}");
    ensure!(exec(&config, &web[0].0, "hostname")?.trim() == web[0].0);
    // A nested container runs under the runtime's default seccomp filter
    // (mode 2) with the default capabilities, not the node pod's.
    let status = exec(
        &config,
        "probe",
        "grep -E '^(Seccomp|CapEff):' /proc/self/status",
    )?;
    ensure!(
        status.contains("Seccomp:\t2") && status.contains("CapEff:\t00000000a80425fb"),
        "a nested container's confinement: {status}"
    );

    // DNS: the API server's Service and a Service by its short name.
    let kubernetes_ip = get(&config, &["svc", "kubernetes"], "{.spec.clusterIP}")?;
    let web_ip = get(&config, &["svc", "web"], "{.spec.clusterIP}")?;
    // (busybox's nslookup tries every search domain and fails when one
    // does, so only its answers count.)
    let lookup = exec(
        &config,
        "probe",
        "nslookup kubernetes.default.svc.cluster.local; true",
    )?;
    ensure!(lookup.contains(&kubernetes_ip), "lookup: {lookup}");
    let lookup = exec(&config, "probe", "nslookup web; true")?;
    ensure!(
        lookup.contains("web.default.svc.cluster.local") && lookup.contains(&web_ip),
        "lookup: {lookup}"
    );
    let search = exec(&config, "probe", "cat /etc/resolv.conf")?;
    ensure!(
        !search.contains(&*ns),
        "the host's search domains reach nested pods: {search}"
    );

    // The probe (small pool) calls the Service (backed by pods on the big
    // pool's nodes) and every web pod by its IP on the other nodes.
    let answer = exec(&config, "probe", &http_get(&web_ip, 80))?;
    ensure!(
        answer.contains("200 OK") && web.iter().any(|w| answer.contains(&w.0)),
        "Service answer: {answer}"
    );
    for (name, _, ip) in &web {
        let answer = exec(&config, "probe", &http_get(ip, 8080))?;
        ensure!(answer.contains(name), "{name} at {ip} answered: {answer}");
    }

    // Isolation: neither the host's pods (this cluster's own etcd) nor
    // another tenant's node pod (its kubelet) can be reached.
    pool_ready(env, &ns, "other-nodes", 1, Duration::from_secs(120)).await?;
    let etcd = host_pod_ip(env, &ns, "work-etcd-0")?;
    ensure!(
        !connects(&config, "probe", &etcd, 2379)?,
        "the host's etcd pod is reachable"
    );
    let other_node = host_pod_ip(env, &ns, "other-nodes-node-0")?;
    ensure!(
        !connects(&config, "probe", &other_node, 10250)?,
        "another tenant's node is reachable"
    );
    // ... while this cluster's own nodes are, as in any cluster (e.g. a
    // metrics server scraping kubelets).
    let own_node = host_pod_ip(env, &ns, "big-node-0")?;
    ensure!(
        connects(&config, "probe", &own_node, 10250)?,
        "a node of the same cluster is not reachable"
    );

    tenant_network_policies_hold(&config, &web, &web_ip).await?;
    ns.done()
}

/// The tenant's own NetworkPolicies, enforced by kube-router in its node
/// pods: a default-deny closes the web pods to the probe (on another node)
/// and to each other (on the same node, across the bridge), Service and
/// pod IPs alike; an allow rule then opens port 8080 to pods labelled
/// `role: client`, and to no other pod.
async fn tenant_network_policies_hold(
    config: &Path,
    web: &[(String, String, String)],
    web_ip: &str,
) -> Result<()> {
    let same_node = web
        .iter()
        .enumerate()
        .find_map(|(i, a)| web[i + 1..].iter().find(|b| b.1 == a.1).map(|b| (a, b)))
        .context("two web pods on one node")?;
    // A refused or dropped connection is an answer too (kube-router
    // rejects what a policy denies).
    let reaches = |pod: &str, ip: &str, port: u16| -> Result<bool> {
        let script = format!("{} 2>&1; true", http_get(ip, port));
        Ok(exec(config, pod, &script)?.contains("200 OK"))
    };
    ensure!(
        reaches(&same_node.0.0, &same_node.1.2, 8080)?,
        "web pods on one node do not reach each other before any policy"
    );
    nested_apply(
        config,
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#,
    )?;
    wait_nested(
        "the default-deny policy enforced",
        Duration::from_secs(60),
        || Ok(!reaches("probe", &web[0].2, 8080)?),
    )
    .await?;
    for (name, _, ip) in web {
        ensure!(
            !reaches("probe", ip, 8080)?,
            "{name} answers the probe across nodes despite a default-deny"
        );
    }
    ensure!(
        !reaches("probe", web_ip, 80)?,
        "the web Service answers despite a default-deny"
    );
    ensure!(
        !reaches(&same_node.0.0, &same_node.1.2, 8080)?,
        "{} reaches {} on its node despite a default-deny",
        same_node.0.0,
        same_node.1.0
    );
    nested_apply(
        config,
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: 8080, protocol: TCP}]
"#,
    )?;
    nested(config, &["label", "pod", "probe", "role=client"])?;
    wait_nested("the allow rule enforced", Duration::from_secs(60), || {
        reaches("probe", &web[0].2, 8080)
    })
    .await?;
    for (name, _, ip) in web {
        ensure!(
            reaches("probe", ip, 8080)?,
            "{name} refuses a client the allow rule admits"
        );
    }
    ensure!(
        reaches("probe", web_ip, 80)?,
        "the web Service refuses a client the allow rule admits"
    );
    ensure!(
        !reaches(&same_node.0.0, &same_node.1.2, 8080)?,
        "the allow rule admits a pod without the client label"
    );
    nested(
        config,
        &[
            "delete",
            "networkpolicy",
            "default-deny",
            "web-from-clients",
        ],
    )?;
    Ok(())
}

/// The subject CN of a base64 PEM certificate.
fn certificate_subject(b64: &str) -> Result<String> {
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).context("certificate PEM")?;
    let cert = pem.parse_x509().context("certificate")?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .context("no CN")?;
    Ok(cn.to_string())
}

/// Scaling a pool up adds Ready nodes; scaling down cordons and drains the
/// nodes that go (their pods are rescheduled, none lost) before their pods
/// and Nodes are removed; a node pod that restarts comes back as the same
/// Node; deleting the pool drains it, removes its Nodes and token from the
/// nested cluster and leaves nothing of its node pods on the host.
pub(crate) async fn node_pools_scale_drain_and_restart(env: &Env) -> Result<()> {
    let ns = env.namespace("elastic")?;
    let applied = Instant::now();
    env.apply(
        &ns,
        &[
            vc_yaml("elastic", "{}"),
            pool_yaml("pool", "elastic", 1, ""),
        ]
        .join("---\n"),
    )?;
    env.ready(&ns, "elastic", applied, Duration::from_secs(180))
        .await?;
    pool_ready(env, &ns, "pool", 1, Duration::from_secs(120)).await?;
    let config = env.nested_kubeconfig(&ns, "elastic").await?;
    default_service_account(&config).await?;

    kubectl_ok(
        &env.admin,
        &["scale", "-n", &ns, "np/pool", "--replicas=3"],
        None,
    )?;
    pool_ready(env, &ns, "pool", 3, Duration::from_secs(120)).await?;
    nested_apply(&config, &web_yaml(3, "{}"))?;
    wait_nested("web Available on 3 nodes", Duration::from_secs(120), || {
        Ok(get(&config, &["deploy", "web"], "{.status.availableReplicas}")? == "3")
    })
    .await?;
    let on_leaving = get(
        &config,
        &["pods", "--field-selector", "spec.nodeName=pool-node-2"],
        "{.items[*].metadata.name}",
    )?;
    ensure!(!on_leaving.trim().is_empty(), "no pod on pool-node-2");

    // Scale down: pool-node-2 is cordoned and drained before it goes.
    kubectl_ok(
        &env.admin,
        &["scale", "-n", &ns, "np/pool", "--replicas=2"],
        None,
    )?;
    let mut cordoned = false;
    wait_nested("pool-node-2 removed", Duration::from_secs(120), || {
        let node = kubectl(
            &config,
            &[
                "get",
                "node",
                "pool-node-2",
                "-o",
                "jsonpath={.spec.unschedulable}",
            ],
            None,
        )?;
        if node.ok && node.stdout.trim() == "true" {
            cordoned = true;
        }
        let pod = kubectl(&env.admin, &["get", "pod", "-n", &ns, "pool-node-2"], None)?;
        Ok(!node.ok && !pod.ok)
    })
    .await?;
    ensure!(cordoned, "pool-node-2 was never seen cordoned");
    wait_nested("web Available again", Duration::from_secs(120), || {
        let pods = get(
            &config,
            &["pods", "-l", "app=web"],
            r#"{range .items[*]}{.spec.nodeName}{"\n"}{end}"#,
        )?;
        Ok(
            get(&config, &["deploy", "web"], "{.status.availableReplicas}")? == "3"
                && pods.lines().count() == 3
                && pods
                    .lines()
                    .all(|n| n == "pool-node-0" || n == "pool-node-1"),
        )
    })
    .await?;
    for pod in on_leaving.split_whitespace() {
        let gone = kubectl(&config, &["get", "pod", pod], None)?;
        ensure!(!gone.ok, "{pod} is still there after the drain");
    }
    pool_ready(env, &ns, "pool", 2, Duration::from_secs(60)).await?;

    // A node pod that restarts comes back as the same Node.
    let node_uid = get(&config, &["node", "pool-node-0"], "{.metadata.uid}")?;
    let pods: Api<Pod> = env.api(&ns);
    recreate_node_pod(env, &ns, "pool-node-0").await?;
    pool_ready(env, &ns, "pool", 2, Duration::from_secs(120)).await?;
    ensure!(
        get(&config, &["node", "pool-node-0"], "{.metadata.uid}")? == node_uid,
        "pool-node-0 came back as another Node"
    );

    // Deleting the pool drains its nodes, removes their Node objects and
    // revokes its bootstrap token; the host keeps nothing of its node pods:
    // no pod, no cgroup, no mount.
    let uids: Vec<String> = pods
        .list(&ListParams::default().labels("nestor.dev/node-pool=pool"))
        .await?
        .items
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    ensure!(uids.len() == 2);
    // What must go is there first: each node pod's cgroup and mounts.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    for uid in &uids {
        ensure!(
            cgroup_exists(&format!("pod{uid}")),
            "no cgroup of node pod {uid} found"
        );
        ensure!(
            mounts.contains(uid.as_str()),
            "no mount of node pod {uid} found"
        );
    }
    let tokens = || {
        get(
            &config,
            &[
                "secrets",
                "-n",
                "kube-system",
                "--field-selector",
                "type=bootstrap.kubernetes.io/token",
            ],
            "{.items[*].metadata.name}",
        )
    };
    ensure!(
        !tokens()?.trim().is_empty(),
        "no bootstrap token in the nested cluster"
    );
    kubectl_ok(
        &env.admin,
        &["delete", "-n", &ns, "np/pool", "--wait=false"],
        None,
    )?;
    wait_nested(
        "the pool's Nodes and token gone",
        Duration::from_secs(180),
        || {
            Ok(get(&config, &["nodes"], "{.items[*].metadata.name}")?
                .trim()
                .is_empty()
                && tokens()?.trim().is_empty())
        },
    )
    .await?;
    wait_nested("the node pods gone", Duration::from_secs(120), || {
        let left = kubectl_ok(
            &env.admin,
            &[
                "get",
                "pods",
                "-n",
                &ns,
                "-l",
                "nestor.dev/node-pool=pool",
                "-o",
                "name",
            ],
            None,
        )?;
        Ok(left.trim().is_empty())
    })
    .await?;
    wait_nested(
        "the node pods' cgroups and mounts gone",
        Duration::from_secs(60),
        || {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
            Ok(uids
                .iter()
                .all(|uid| !mounts.contains(uid.as_str()) && !cgroup_exists(&format!("pod{uid}"))))
        },
    )
    .await?;
    kubectl_ok(
        &env.admin,
        &["delete", "-n", &ns, "vc/elastic", "--wait=false"],
        None,
    )?;
    ns.done()
}

/// Whether a cgroup directory named `name` exists under the host's
/// kubepods hierarchy (any controller).
fn cgroup_exists(name: &str) -> bool {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return false;
    };
    controllers.flatten().any(|c| {
        ["besteffort", "burstable", ""]
            .iter()
            .any(|qos| c.path().join("kubepods").join(qos).join(name).exists())
    })
}
