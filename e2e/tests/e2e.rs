//! End-to-end tests: Nestor installed with Helm on a test bed with a real
//! node (containerd, kubelet, kube-proxy, CoreDNS), virtual clusters whose
//! pods really run, and clients that use them. Needs root (the node) and
//! the images of `e2e/testbed/build-images.sh`.
//!
//! One test bed serves every test; each test has its own namespace.
//!
//! Longer than most files: the harness of every end-to-end test (`Env`,
//! its test bed and its helpers) and the tests of the control plane.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use nestor_crds::VirtualCluster;
use nestor_e2e::TestBed;
use nestor_e2e::process::Lifetime;
use nestor_e2e::support::{OPERATOR_NAMESPACE, vc_yaml, wait_for};
use nestor_e2e::testbed::{TestBedOptions, client_for};
use nestor_e2e::tools::{kubectl, kubectl_ok};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "e2e/at_rest.rs"]
mod at_rest;
#[path = "e2e/attacks.rs"]
mod attacks;
#[path = "e2e/conformance.rs"]
mod conformance;
#[path = "e2e/escapes.rs"]
mod escapes;
#[path = "e2e/network.rs"]
mod network;
#[path = "e2e/reach.rs"]
mod reach;
#[path = "e2e/upgrade.rs"]
mod upgrade;
#[path = "e2e/workloads.rs"]
mod workloads;
use at_rest::secrets_are_encrypted_at_rest_and_requests_audited;
use attacks::*;
use conformance::upstream_conformance;
use escapes::{
    attack_namespace_labels_through_subresources, attack_webhook_by_url, escape_attacks,
};
use network::network_attacks;
use reach::api_server_reaches_its_cluster;
use upgrade::{failed_upgrade_rolls_back, upgrade_follows_the_skew_policy};
use workloads::{node_pools_scale_drain_and_restart, workloads_run_on_nested_nodes};

struct Env {
    bed: TestBed,
    admin: PathBuf,
    client: kube::Client,
    /// The attack suite's two tenants, set up by the first attack (or why
    /// they did not come up).
    tenants: tokio::sync::OnceCell<std::result::Result<attacks::Tenants, String>>,
}

impl Env {
    async fn setup(dir: &Path) -> Result<Self> {
        let options = TestBedOptions {
            node: Some(PathBuf::from(env!("CARGO_BIN_EXE_nestor-testbed"))),
            ..Default::default()
        };
        let bed = TestBed::start(dir, Lifetime::Tied, &options).await?;
        let admin = bed.kubeconfig.clone();
        let client = bed.client().await?;
        Ok(Self {
            bed,
            admin,
            client,
            tenants: Default::default(),
        })
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates a test's namespace; see [`TestNamespace`].
    fn namespace(&self, name: &str) -> Result<TestNamespace<'_>> {
        kubectl_ok(&self.admin, &["create", "namespace", name], None)?;
        Ok(TestNamespace {
            env: self,
            name: name.to_string(),
            settled: false,
        })
    }

    fn apply(&self, namespace: &str, yaml: &str) -> Result<()> {
        kubectl_ok(
            &self.admin,
            &["apply", "-n", namespace, "-f", "-"],
            Some(yaml),
        )
        .map(|_| ())
    }

    /// Waits for `Ready=True`; returns the time it took from `since`.
    async fn ready(
        &self,
        namespace: &str,
        name: &str,
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration> {
        let api = self.api::<VirtualCluster>(namespace);
        let deadline = Instant::now() + timeout;
        loop {
            let vc = api.get(name).await?;
            let ready = vc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if ready {
                return Ok(since.elapsed());
            }
            if Instant::now() > deadline {
                let pods = kubectl(
                    &self.admin,
                    &["get", "pods", "-n", namespace, "-o", "wide"],
                    None,
                )?
                .stdout;
                bail!(
                    "{namespace}/{name} not Ready within {timeout:?}: {:?}\n{pods}",
                    vc.status
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin kubeconfig of a virtual cluster, written to a file.
    async fn nested_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.kubeconfig_from_secret(namespace, &format!("{name}-admin-kubeconfig"))
            .await
    }

    /// The kubeconfig in a host Secret (an admin or break-glass one).
    async fn kubeconfig_from_secret(&self, namespace: &str, secret: &str) -> Result<PathBuf> {
        let name = secret
            .trim_end_matches("-kubeconfig")
            .trim_end_matches("-admin");
        let secret = self
            .api::<k8s_openapi::api::core::v1::Secret>(namespace)
            .get(secret)
            .await?;
        let data = secret
            .data
            .and_then(|d| d.get("kubeconfig").cloned())
            .context("no kubeconfig key")?;
        let path = self.bed.dir.join(format!("{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, data.0)?;
        Ok(path)
    }
}

/// A test's namespace. The test ends it with [`TestNamespace::done`]; a
/// test that fails before that leaves what its namespace held (pods,
/// events) on stderr and in the logs, and its namespace is deleted all the
/// same, so that its clusters do not starve the tests after it of the
/// node's CPU.
struct TestNamespace<'a> {
    env: &'a Env,
    name: String,
    settled: bool,
}

impl TestNamespace<'_> {
    /// Deletes the namespace (and with it its clusters) without waiting,
    /// so that the next tests have the node's CPU.
    fn done(mut self) -> Result<()> {
        self.settled = true;
        delete_namespace(self.env, &self.name)
    }

    /// Keeps the namespace for as long as the test bed runs.
    fn keep(mut self) {
        self.settled = true;
    }
}

fn delete_namespace(env: &Env, name: &str) -> Result<()> {
    kubectl_ok(
        &env.admin,
        &["delete", "namespace", name, "--wait=false"],
        None,
    )
    .map(|_| ())
}

impl std::ops::Deref for TestNamespace<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (env, ns) = (self.env, self.name.as_str());
        let run = |args: &[&str]| {
            kubectl(&env.admin, args, None)
                .map(|o| o.stdout + &o.stderr)
                .unwrap_or_else(|e| format!("{e:#}"))
        };
        let pods = run(&["get", "pods", "-n", ns, "-o", "wide"]);
        let events = run(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]);
        let last: Vec<&str> = events.lines().rev().take(30).collect();
        eprintln!(
            "namespace {ns} of a failed test:\n{pods}\nits last events:\n{}",
            last.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        let described = run(&["describe", "pods", "-n", ns]);
        let file = env.bed.dir.join(format!("logs/namespace-{ns}.txt"));
        let _ = std::fs::write(file, [pods, events, described].join("\n"));
        if let Err(e) = delete_namespace(env, ns) {
            eprintln!("deleting the namespace {ns} of a failed test: {e:#}");
        }
    }
}

/// Test 1: `helm install` with the locally built image; the operator pod is
/// Ready and is the one that reconciles (it holds the Lease).
async fn helm_install_runs_the_operator(env: &Env) -> Result<()> {
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
async fn empty_spec_becomes_ready(env: &Env) -> Result<()> {
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
async fn nested_cluster_serves_clients(env: &Env) -> Result<()> {
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
async fn three_member_etcd_survives_member_loss(env: &Env) -> Result<()> {
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
async fn tenants_are_isolated(env: &Env) -> Result<()> {
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
async fn delete_leaves_the_host_clean(env: &Env) -> Result<()> {
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

async fn setup(dir: &Path) -> Result<Env> {
    let env = Env::setup(dir).await?;
    let privileged = format!(
        "security.privilegedNamespaces=[\"{}\",\"{}\"]",
        conformance::NAMESPACE,
        network::PRIVILEGED_NAMESPACE
    );
    let mut args: Vec<String> = vec![
        "--set".into(),
        "logFormat=text".into(),
        // What confines each cluster is read back every 15 s, so that the
        // repair of a removed policy is seen within a test.
        "--set".into(),
        "security.addonsRecheckSeconds=15".into(),
        "--set-json".into(),
        privileged,
    ];
    args.extend(nestor_e2e::node::platform_helm_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nestor_e2e::support::helm_install(&env.admin, &args)?;
    Ok(env)
}

fn main() -> std::process::ExitCode {
    let dir = std::env::temp_dir().join(format!("nestor-e2e-{}", std::process::id()));
    let code = nestor_e2e::suite::run_with(
        nestor_e2e::tests![
            helm_install_runs_the_operator,
            empty_spec_becomes_ready,
            nested_cluster_serves_clients,
            three_member_etcd_survives_member_loss,
            tenants_are_isolated,
            delete_leaves_the_host_clean,
            workloads_run_on_nested_nodes,
            node_pools_scale_drain_and_restart,
            upgrade_follows_the_skew_policy,
            failed_upgrade_rolls_back,
            api_server_reaches_its_cluster,
            secrets_are_encrypted_at_rest_and_requests_audited,
            network_attacks,
            escape_attacks,
            attack_namespace_labels_through_subresources,
            attack_webhook_by_url,
            attack_privileged_pod,
            attack_capability_sys_admin,
            attack_capability_net_admin,
            attack_capability_sys_ptrace,
            attack_capability_sys_module,
            attack_host_path_root,
            attack_host_network,
            attack_host_pid,
            attack_host_ipc,
            attack_unmasked_proc_mount,
            attack_unsafe_sysctl,
            attack_host_path_persistent_volume,
            attack_namespace_labelled_privileged,
            attack_delete_enforcing_objects,
            attack_edit_enforcing_objects,
            attack_grant_through_cluster_role_binding,
            attack_grant_through_aggregated_cluster_role,
            attack_mutating_webhook,
            attack_impersonate_system_masters,
            attack_certificate_for_system_masters,
            attack_reach_tenant_b_and_the_host,
            attack_anonymous_requests,
            attack_expired_bootstrap_token,
            attack_token_file_in_the_admin_kubeconfig,
            attack_image_from_an_unlisted_registry,
            attack_revoked_admin_credential,
            tenant_admin_installs_a_chart,
            upstream_conformance,
        ],
        // Four ginkgo processes on two cores would starve other tests'
        // waits.
        &["upstream_conformance"],
        || setup(&dir),
        |mut env| {
            let logs = kubectl(
                &env.admin,
                &[
                    "logs",
                    "-n",
                    OPERATOR_NAMESPACE,
                    "deploy/nestor",
                    "--tail=200",
                ],
                None,
            );
            let _ =
                logs.map(|o| std::fs::write(env.bed.dir.join("logs/operator-pod.log"), o.stdout));
            // What the host ran, and what every node pod said.
            let pods = kubectl(&env.admin, &["get", "pods", "-A", "-o", "wide"], None);
            let events = kubectl(&env.admin, &["get", "events", "-A"], None);
            let text = [pods, events]
                .into_iter()
                .flatten()
                .map(|o| o.stdout)
                .collect::<Vec<_>>()
                .join("\n");
            let _ = std::fs::write(env.bed.dir.join("logs/host-pods.txt"), text);
            let nodes = kubectl(
                &env.admin,
                &[
                    "get",
                    "pods",
                    "-A",
                    "-l",
                    "app.kubernetes.io/component=node",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}",
                ],
                None,
            );
            for pod in nodes
                .map(|o| o.stdout)
                .unwrap_or_default()
                .split_whitespace()
            {
                let (ns, name) = pod.split_once('/').unwrap_or_default();
                if let Ok(out) = kubectl(&env.admin, &["logs", "-n", ns, name, "--tail=300"], None)
                {
                    let file = env.bed.dir.join(format!("logs/node-{ns}-{name}.log"));
                    let _ = std::fs::write(file, out.stdout);
                }
            }
            eprintln!(
                "logs of the failed run are kept in {}",
                env.bed.dir.join("logs").display()
            );
            env.bed.keep_logs();
        },
    );
    if let Some(summary) = attacks::summary() {
        println!("{summary}");
    }
    code
}
