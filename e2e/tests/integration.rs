//! Integration tests: the real operator binary against a real control plane
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) started
//! by this test binary, under the RBAC identity the Helm chart grants.
//!
//! One test bed serves every test; each test has its own namespace and its
//! own operator process watching only that namespace, so tests run in
//! parallel without seeing each other. Every process dies with this one.
//!
//! Longer than most files: every scenario shares one test bed and one
//! harness (`Env`, `Scenario`), and each scenario is one function that reads
//! top to bottom; splitting them would spread one harness over many files.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::{Api, ListParams};
use nestor_crds::{NodePool, VirtualCluster};
use nestor_e2e::operator::OperatorOptions;
use nestor_e2e::process::Lifetime;
use nestor_e2e::support::{
    OPERATOR_NAMESPACE, documents, kind_of, rbac_documents, render_chart, vc_yaml, wait_for,
};
use nestor_e2e::tools::{helm, kubectl, kubectl_ok};
use nestor_e2e::{Operator, TestBed, paths};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "integration/egress.rs"]
mod egress;
#[path = "integration/hostile.rs"]
mod hostile;
#[path = "integration/least_privilege.rs"]
mod least_privilege;
#[path = "integration/placement.rs"]
mod placement;

use egress::egress_allowances_are_the_platform_admins;
use hostile::{
    edited_secrets_are_repaired, hostile_inputs_are_refused_before_any_write,
    unreadable_objects_stop_nothing,
};
use least_privilege::{
    namespaced_install_runs_clusters_in_its_namespaces_only,
    operator_writes_only_objects_labelled_as_its_own,
};
use placement::{placement_reaches_every_pod, sandbox_runtime_class_is_the_default_where_present};

const CRDS: &str = "charts/nestor/crds/nestor.dev_crds.yaml";

/// What every test shares: the test bed and the operator's credentials.
struct Env {
    bed: TestBed,
    admin: PathBuf,
    /// A kubeconfig holding a token of the chart's ServiceAccount.
    operator_kubeconfig: PathBuf,
    service_account: String,
    client: kube::Client,
}

impl Env {
    async fn setup(dir: &Path) -> Result<Self> {
        let bed = TestBed::start(dir, Lifetime::Tied, &Default::default()).await?;
        let admin = bed.kubeconfig.clone();
        let client = bed.client().await?;
        let root = paths::repo_root();
        let crds = root.join(CRDS).display().to_string();
        kubectl_ok(&admin, &["apply", "--server-side", "-f", &crds], None)?;
        kubectl_ok(
            &admin,
            &[
                "wait",
                "--for=condition=Established",
                "crd/virtualclusters.nestor.dev",
                "crd/nodepools.nestor.dev",
                "--timeout=60s",
            ],
            None,
        )?;
        kubectl_ok(&admin, &["create", "namespace", OPERATOR_NAMESPACE], None)?;

        // Install the chart's identity and RBAC for real, exactly as
        // rendered, serving every namespace the tests create.
        let rendered = render_chart(&["--set", "rbac.clusterWide=true"])?;
        let rbac = rbac_documents(&rendered, true);
        kubectl_ok(&admin, &["apply", "-f", "-"], Some(&rbac.join("\n---\n")))?;
        let service_account = documents(&rendered)
            .into_iter()
            .find(|d| kind_of(d) == "ServiceAccount")
            .and_then(|d| serde_yaml::from_str::<serde_yaml::Value>(d).ok())
            .and_then(|v| v["metadata"]["name"].as_str().map(String::from))
            .context("the chart renders no ServiceAccount")?;
        let token = kubectl_ok(
            &admin,
            &[
                "create",
                "token",
                &service_account,
                "-n",
                OPERATOR_NAMESPACE,
                "--duration=4h",
            ],
            None,
        )?;
        let server = format!("https://{}:{}", bed.api_host, bed.api_port);
        let ca = std::fs::read_to_string(bed.dir.join("pki/ca.crt"))?;
        let operator_kubeconfig = bed.dir.join("operator.kubeconfig");
        std::fs::write(
            &operator_kubeconfig,
            nestor_controllers::build::kubeconfig::render(
                "nestor-testbed",
                &server,
                &ca,
                &service_account,
                nestor_controllers::build::kubeconfig::Credentials::Token(token.trim()),
            ),
        )?;
        // The chart's write policy takes effect once the API server has
        // loaded it; every test runs under it, so wait for it here.
        let unlabelled = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: policy-probe}\n";
        wait_for(
            "the chart's write policy in force",
            Duration::from_secs(30),
            || {
                let config = operator_kubeconfig.clone();
                Box::pin(async move {
                    let out = kubectl(
                        &config,
                        &[
                            "create",
                            "--dry-run=server",
                            "-n",
                            OPERATOR_NAMESPACE,
                            "-f",
                            "-",
                        ],
                        Some(unlabelled),
                    )?;
                    Ok(!out.ok && out.stderr.contains("may create or keep only"))
                })
            },
        )
        .await?;
        Ok(Self {
            bed,
            admin,
            operator_kubeconfig,
            service_account,
            client,
        })
    }

    fn log_dir(&self) -> PathBuf {
        self.bed.dir.join("logs")
    }

    /// A namespace of the test's own and an operator that watches it.
    async fn scenario(&self, name: &str) -> Result<Scenario<'_>> {
        self.scenario_with(name, &[]).await
    }

    /// A scenario whose operator has settings beyond the defaults
    /// (environment variables, as the chart sets them).
    async fn scenario_with(&self, name: &str, env: &[(&str, &str)]) -> Result<Scenario<'_>> {
        let namespace = format!("t-{name}");
        kubectl_ok(&self.admin, &["create", "namespace", &namespace], None)?;
        let operator = self.operator_with(name, &namespace, &format!("nestor-{name}"), env)?;
        let mut scenario = Scenario {
            env: self,
            namespace,
            operator: Some(operator),
        };
        scenario
            .operator_mut()
            .wait_ready(Duration::from_secs(60))
            .await?;
        Ok(scenario)
    }

    fn operator(&self, name: &str, namespace: &str, lease: &str) -> Result<Operator> {
        self.operator_with(name, namespace, lease, &[])
    }

    fn operator_with(
        &self,
        name: &str,
        namespace: &str,
        lease: &str,
        env: &[(&str, &str)],
    ) -> Result<Operator> {
        Operator::start(&OperatorOptions {
            name,
            kubeconfig: &self.operator_kubeconfig,
            watch_namespace: namespace,
            lease: (lease, OPERATOR_NAMESPACE),
            lease_duration: 6,
            log_dir: &self.log_dir(),
            env,
        })
    }
}

struct Scenario<'a> {
    env: &'a Env,
    namespace: String,
    operator: Option<Operator>,
}

impl Scenario<'_> {
    fn operator_mut(&mut self) -> &mut Operator {
        self.operator
            .as_mut()
            .expect("the scenario's operator runs")
    }
    fn operator(&self) -> &Operator {
        self.operator
            .as_ref()
            .expect("the scenario's operator runs")
    }
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.env.client.clone(), &self.namespace)
    }
    fn apply(&self, yaml: &str) -> Result<String> {
        kubectl_ok(
            &self.env.admin,
            &["apply", "-n", &self.namespace, "-f", "-"],
            Some(yaml),
        )
    }
    fn kubectl(&self, args: &[&str]) -> Result<nestor_e2e::tools::Run> {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.env.admin, &all, None)
    }
    /// Restarts the operator (graceful stop, then a new process).
    async fn restart_operator(&mut self, name: &str) -> Result<()> {
        if let Some(mut op) = self.operator.take() {
            op.stop();
        }
        let op = self
            .env
            .operator(name, &self.namespace, &format!("nestor-{}", self.namespace))?;
        self.operator = Some(op);
        self.operator_mut()
            .wait_ready(Duration::from_secs(60))
            .await
    }
    /// The total of writes this operator process has sent.
    async fn writes(&self) -> Result<f64> {
        self.operator()
            .metric_sum("nestor_api_writes_total", "")
            .await
    }
    async fn reconciles(&self) -> Result<f64> {
        self.operator()
            .metric_sum("nestor_reconciles_total", "")
            .await
    }
    /// Waits until the operator has sent no write for `quiet`.
    async fn settle(&self, quiet: Duration, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        let mut last = self.writes().await?;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.writes().await?;
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Ok(last);
            }
            ensure!(
                Instant::now() < deadline,
                "the operator kept writing for {timeout:?}"
            );
        }
    }
}

/// Every child a virtual cluster owns, as (kind, name).
fn expected_children(vc: &str) -> Vec<(&'static str, String)> {
    let mut v = vec![];
    for s in [
        "ca",
        "client-signer",
        "etcd-certs",
        "apiserver-certs",
        "controller-manager-kubeconfig",
        "scheduler-kubeconfig",
        "coredns-kubeconfig",
        "admin-kubeconfig",
        "break-glass-kubeconfig",
        "encryption",
    ] {
        v.push(("Secret", format!("{vc}-{s}")));
    }
    for s in ["etcd", "etcd-peer", "apiserver", "dns"] {
        v.push(("Service", format!("{vc}-{s}")));
    }
    for s in ["coredns", "kube-proxy", "apiserver-config"] {
        v.push(("ConfigMap", format!("{vc}-{s}")));
    }
    for s in [
        "etcd",
        "apiserver",
        "controller-manager",
        "scheduler",
        "coredns",
        "node",
    ] {
        v.push(("NetworkPolicy", format!("{vc}-{s}")));
    }
    v.push(("StatefulSet", format!("{vc}-etcd")));
    for s in ["apiserver", "controller-manager", "scheduler", "coredns"] {
        v.push(("Deployment", format!("{vc}-{s}")));
    }
    v
}

/// The owner UIDs of the named children that exist, by (kind, name).
async fn children(s: &Scenario<'_>, vc: &str) -> Result<BTreeMap<(String, String), Vec<String>>> {
    // The cluster's own children; a pool's children carry the pool label.
    let selector = format!("nestor.dev/cluster={vc},!nestor.dev/node-pool");
    let lp = ListParams::default().labels(&selector);
    let mut found = BTreeMap::new();
    fn owners(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
        meta.owner_references
            .iter()
            .flatten()
            .filter(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.uid))
            .collect()
    }
    macro_rules! collect {
        ($kind:ty, $label:expr) => {
            for o in s.api::<$kind>().list_metadata(&lp).await?.items {
                found.insert(
                    (
                        $label.to_string(),
                        o.metadata.name.clone().unwrap_or_default(),
                    ),
                    owners(&o.metadata),
                );
            }
        };
    }
    collect!(Secret, "Secret");
    collect!(Service, "Service");
    collect!(ConfigMap, "ConfigMap");
    collect!(NetworkPolicy, "NetworkPolicy");
    collect!(StatefulSet, "StatefulSet");
    collect!(Deployment, "Deployment");
    Ok(found)
}

/// Waits until every child exists and the status reports the current
/// generation; returns the VirtualCluster.
async fn converged(s: &Scenario<'_>, vc: &str, timeout: Duration) -> Result<VirtualCluster> {
    let api = s.api::<VirtualCluster>();
    let expected = expected_children(vc);
    let deadline = Instant::now() + timeout;
    loop {
        let obj = api.get(vc).await?;
        let found = children(s, vc).await?;
        let all_there = expected
            .iter()
            .all(|(k, n)| found.contains_key(&(k.to_string(), n.clone())));
        let status_current =
            obj.status.as_ref().and_then(|st| st.observed_generation) == obj.metadata.generation;
        if all_there && status_current {
            return Ok(obj);
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = expected
                .iter()
                .filter(|(k, n)| !found.contains_key(&(k.to_string(), n.clone())))
                .collect();
            bail!(
                "{vc} did not converge in {timeout:?}: missing {missing:?}, status {:?}",
                obj.status
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each merge patch of `object` refused by the API server with its message.
fn refused_edits(s: &Scenario<'_>, object: &str, cases: &[(&str, &str)]) -> Result<()> {
    for (patch, message) in cases {
        let out = s.kubectl(&["patch", object, "--type=merge", "-p", patch])?;
        ensure!(!out.ok, "{patch} was accepted");
        ensure!(
            out.stderr.contains(message),
            "{patch}: expected '{message}' in: {}",
            out.stderr
        );
    }
    Ok(())
}

fn condition<'a>(
    vc: &'a VirtualCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    vc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

async fn secret_data(
    s: &Scenario<'_>,
    vc: &str,
) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>> {
    let lp = ListParams::default().labels(&format!("nestor.dev/cluster={vc}"));
    Ok(s.api::<Secret>()
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|sec| {
            let data = sec
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            (sec.metadata.name.unwrap_or_default(), data)
        })
        .collect())
}

// ---------------------------------------------------------------- tests --

/// Test 1: The CRDs install from the chart's generated YAML and `kubectl
/// explain` shows the field documentation.
async fn crds_install_and_explain(env: &Env) -> Result<()> {
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
async fn chart_renders_and_rbac_is_least_privilege(env: &Env) -> Result<()> {
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

/// Test 3: An empty spec and a NodePool give every child, owned; scaling the
/// pool reaches its StatefulSet; the scheduler sees the etcd pod; status
/// says honestly that nothing is ready.
async fn empty_spec_creates_every_child(env: &Env) -> Result<()> {
    let s = env.scenario("children").await?;
    s.apply(&vc_yaml("demo", "{}"))?;
    s.apply("apiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: workers\nspec:\n  clusterRef:\n    name: demo\n")?;
    let vc = converged(&s, "demo", Duration::from_secs(60)).await?;
    let uid = vc.metadata.uid.clone().unwrap_or_default();
    for ((kind, name), owners) in children(&s, "demo").await? {
        ensure!(
            owners == vec![format!("VirtualCluster/{uid}")],
            "{kind} {name} is owned by {owners:?}"
        );
    }
    let np_api = s.api::<NodePool>();
    let sts_api = s.api::<StatefulSet>();
    wait_for("the pool's StatefulSet", Duration::from_secs(30), || {
        let sts_api = sts_api.clone();
        Box::pin(async move { Ok(sts_api.get_opt("workers-node").await?.is_some()) })
    })
    .await?;
    let sts = sts_api.get("workers-node").await?;
    ensure!(
        sts.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "NodePool"),
        "node StatefulSet not owned by its pool"
    );
    for secret in ["workers-bootstrap"] {
        ensure!(
            s.api::<Secret>().get_opt(secret).await?.is_some(),
            "missing {secret}"
        );
    }
    let out = s.kubectl(&["scale", "np/workers", "--replicas=3"])?;
    ensure!(out.ok, "kubectl scale failed: {}", out.stderr);
    wait_for(
        "the scale to reach the StatefulSet and the pool's status",
        Duration::from_secs(30),
        || {
            let (sts_api, np_api) = (sts_api.clone(), np_api.clone());
            Box::pin(async move {
                let sts = sts_api.get("workers-node").await?;
                let np = np_api.get("workers").await?;
                let status = np.status.unwrap_or_default();
                Ok(sts.spec.and_then(|s| s.replicas) == Some(3)
                    && status.desired_replicas == 3
                    && status.replicas == 3)
            })
        },
    )
    .await?;
    let pods = s.api::<Pod>();
    wait_for(
        "the scheduler to see the etcd pod",
        Duration::from_secs(30),
        || {
            let pods = pods.clone();
            Box::pin(async move {
                let Some(pod) = pods.get_opt("demo-etcd-0").await? else {
                    return Ok(false);
                };
                Ok(pod
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    }))
            })
        },
    )
    .await?;
    let vc = s.api::<VirtualCluster>().get("demo").await?;
    let ready = condition(&vc, "Ready").context("no Ready condition")?;
    ensure!(
        ready.status == "False"
            && ready.reason == "ComponentsNotReady"
            && ready.message.contains("EtcdReady"),
        "Ready: {ready:?}"
    );
    let etcd = condition(&vc, "EtcdReady").context("no EtcdReady")?;
    ensure!(
        etcd.status == "False" && etcd.message == "0/1 members ready",
        "EtcdReady: {etcd:?}"
    );
    let status = vc.status.clone().unwrap_or_default();
    ensure!(
        status.admin_kubeconfig_secret.as_deref() == Some("demo-admin-kubeconfig"),
        "status: {status:?}"
    );
    ensure!(
        status
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("https://10.0.")),
        "endpoint: {:?}",
        status.endpoint
    );
    let np = np_api.get("workers").await?;
    let np_ready = np
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .context("pool Ready")?;
    ensure!(
        np_ready.status == "False" && np_ready.message.contains("waiting for VirtualCluster demo"),
        "pool Ready: {np_ready:?}"
    );
    Ok(())
}

/// Test 4: A reconcile of an unchanged object sends no write; a restarted
/// operator sends none either, and keys are byte-identical.
async fn unchanged_object_sends_no_write(env: &Env) -> Result<()> {
    let mut s = env.scenario("idle").await?;
    s.apply(&vc_yaml("quiet", "{}"))?;
    converged(&s, "quiet", Duration::from_secs(60)).await?;
    let before = s
        .settle(Duration::from_secs(3), Duration::from_secs(60))
        .await?;
    let reconciles = s.reconciles().await?;
    // Touch the object without changing its spec: a reconcile runs.
    s.kubectl(&["annotate", "vc/quiet", "test.nestor.dev/poke=1"])?;
    let op_reconciles = || async { s.reconciles().await };
    let deadline = Instant::now() + Duration::from_secs(20);
    while op_reconciles().await? <= reconciles {
        ensure!(
            Instant::now() < deadline,
            "no reconcile after the annotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = s
        .settle(Duration::from_secs(2), Duration::from_secs(30))
        .await?;
    ensure!(
        after == before,
        "an unchanged object caused {} writes",
        after - before
    );

    let keys_before = secret_data(&s, "quiet").await?;
    s.restart_operator("idle-2").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.reconciles().await? < 1.0 {
        ensure!(
            Instant::now() < deadline,
            "the restarted operator did not reconcile"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = s
        .settle(Duration::from_secs(3), Duration::from_secs(30))
        .await?;
    ensure!(
        writes == 0.0,
        "the restarted operator sent {writes} writes for an unchanged cluster"
    );
    let keys_after = secret_data(&s, "quiet").await?;
    ensure!(
        keys_before == keys_after,
        "certificates or keys changed across a restart"
    );
    Ok(())
}

/// A child deleted by hand is noticed and repaired at once, not at the next
/// resync.
async fn deleted_child_is_repaired(env: &Env) -> Result<()> {
    let s = env.scenario("repair").await?;
    s.apply(&vc_yaml("fix", "{}"))?;
    converged(&s, "fix", Duration::from_secs(60)).await?;
    let deployments = s.api::<Deployment>();
    let services = s.api::<Service>();
    let old_deployment = deployments.get("fix-scheduler").await?.metadata.uid;
    let old_service = services.get("fix-etcd").await?.metadata.uid;
    let deleted = Instant::now();
    deployments
        .delete("fix-scheduler", &Default::default())
        .await?;
    services.delete("fix-etcd", &Default::default()).await?;
    wait_for(
        "the deleted children to come back",
        Duration::from_secs(30),
        || {
            let (deployments, services) = (deployments.clone(), services.clone());
            let (old_deployment, old_service) = (old_deployment.clone(), old_service.clone());
            Box::pin(async move {
                let d = deployments
                    .get_opt("fix-scheduler")
                    .await?
                    .and_then(|d| d.metadata.uid);
                let s = services
                    .get_opt("fix-etcd")
                    .await?
                    .and_then(|s| s.metadata.uid);
                Ok(d.is_some() && d != old_deployment && s.is_some() && s != old_service)
            })
        },
    )
    .await?;
    eprintln!(
        "deleted_child_is_repaired: repaired in {:.2}s",
        deleted.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Test 5: Spec edits roll out to the children; an immutable field is refused.
async fn spec_edits_roll_out(env: &Env) -> Result<()> {
    let s = env.scenario("edits").await?;
    s.apply(&vc_yaml("edit", "{}"))?;
    converged(&s, "edit", Duration::from_secs(60)).await?;
    // Leaves are created with the roots; their first renewal (the new SAN
    // below) is an apply, which must take over every field the create gave
    // Nestor, so that later applies prune what they no longer send.
    let secrets = s.api::<Secret>();
    let serving = "edit-apiserver-certs";
    // Who wrote the object, and how: (manager, operation).
    let writers = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| -> Vec<(String, String)> {
        meta.managed_fields
            .iter()
            .flatten()
            .map(|e| {
                (
                    e.manager.clone().unwrap_or_default(),
                    e.operation.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let created = secrets.get(serving).await?;
    ensure!(
        writers(&created.metadata) == [("nestor-operator".to_string(), "Update".to_string())],
        "a new leaf is created by Nestor alone: {:?}",
        writers(&created.metadata)
    );
    // So is the API server's Deployment; the edit below is applied, and
    // takes over what the create gave Nestor in the same way.
    let deployments = s.api::<Deployment>();
    let nestor_entries = move |d: &Deployment| -> Vec<String> {
        writers(&d.metadata)
            .into_iter()
            .filter(|(manager, _)| manager == "nestor-operator")
            .map(|(_, operation)| operation)
            .collect()
    };
    let apiserver = deployments.get("edit-apiserver").await?;
    ensure!(
        nestor_entries(&apiserver) == ["Update"],
        "the API server's Deployment is created: {:?}",
        nestor_entries(&apiserver)
    );
    s.apply(&vc_yaml(
        "edit",
        "{apiServer: {certSANs: [edit.example.test], replicas: 2, extraArgs: {v: \"2\"}, resources: {requests: {cpu: 200m, memory: 256Mi}}}, controllerManager: {replicas: 2, extraArgs: {node-monitor-grace-period: 20s}}, scheduler: {extraArgs: {v: \"3\"}}}",
    ))?;
    wait_for(
        "the edits to reach the Deployments",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            Box::pin(async move {
                let api = deployments.get("edit-apiserver").await?;
                let cm = deployments.get("edit-controller-manager").await?;
                let sched = deployments.get("edit-scheduler").await?;
                let container = |d: &Deployment| {
                    d.spec
                        .as_ref()
                        .and_then(|s| s.template.spec.as_ref())
                        .map(|p| p.containers[0].clone())
                };
                let Some(api_c) = container(&api) else {
                    return Ok(false);
                };
                let cpu = api_c
                    .resources
                    .and_then(|r| r.requests)
                    .and_then(|r| r.get("cpu").cloned())
                    .map(|q| q.0);
                // (The controller-manager has no replicas before the API server
                // serves, which it never does without a kubelet.)
                Ok(api.spec.as_ref().and_then(|s| s.replicas) == Some(2)
                    && nestor_entries(&api) == ["Apply"]
                    && api_c
                        .command
                        .unwrap_or_default()
                        .contains(&"--v=2".to_string())
                    && cpu.as_deref() == Some("200m")
                    && container(&cm)
                        .and_then(|c| c.command)
                        .unwrap_or_default()
                        .contains(&"--node-monitor-grace-period=20s".to_string())
                    && container(&sched)
                        .and_then(|c| c.command)
                        .unwrap_or_default()
                        .contains(&"--v=3".to_string()))
            })
        },
    )
    .await?;
    wait_for(
        "the serving certificate's renewal",
        Duration::from_secs(30),
        || {
            let (secrets, created) = (secrets.clone(), created.clone());
            Box::pin(async move {
                let renewed = secrets.get(serving).await?;
                Ok(renewed.data != created.data
                    && writers(&renewed.metadata)
                        == [("nestor-operator".to_string(), "Apply".to_string())])
            })
        },
    )
    .await?;
    let out = s.kubectl(&[
        "patch",
        "vc/edit",
        "--type=merge",
        "-p",
        r#"{"spec":{"networking":{"podCIDR":"10.128.0.0/16"}}}"#,
    ])?;
    ensure!(
        !out.ok
            && out
                .stderr
                .contains("networking is immutable after creation"),
        "immutable networking: {}",
        out.stderr
    );
    Ok(())
}

/// Test 6: Invalid specs are refused with a message a person understands, and
/// nothing already running changes.
async fn invalid_specs_are_refused(env: &Env) -> Result<()> {
    let s = env.scenario("invalid").await?;
    s.apply(&vc_yaml("base", "{}"))?;
    converged(&s, "base", Duration::from_secs(60)).await?;
    s.settle(Duration::from_secs(2), Duration::from_secs(30))
        .await?;
    let snapshot = || async {
        let mut rv = BTreeMap::new();
        let lp = ListParams::default().labels("nestor.dev/cluster=base");
        for d in s.api::<Deployment>().list(&lp).await?.items {
            rv.insert(
                d.metadata.name.clone().unwrap_or_default(),
                (d.metadata.generation, serde_json::to_string(&d.spec)?),
            );
        }
        for d in s.api::<StatefulSet>().list(&lp).await?.items {
            rv.insert(
                d.metadata.name.clone().unwrap_or_default(),
                (d.metadata.generation, serde_json::to_string(&d.spec)?),
            );
        }
        anyhow::Ok((rv, secret_data(&s, "base").await?))
    };
    let before = snapshot().await?;

    // Refused by the apiserver (schema and CEL rules), on create.
    let long = "x".repeat(41);
    let create_cases: Vec<(String, &str, &str)> = vec![
        ("bad-1".into(), "{version: v1.35.4}", "no leading 'v'"),
        ("bad-2".into(), "{version: \"1.35\"}", "MAJOR.MINOR.PATCH"),
        ("bad-3".into(), "{version: banana}", "MAJOR.MINOR.PATCH"),
        (
            "bad-4".into(),
            "{etcd: {replicas: 2}}",
            "etcd replicas must be 1, 3 or 5",
        ),
        (
            "bad-5".into(),
            "{etcd: {replicas: 4}}",
            "etcd replicas must be 1, 3 or 5",
        ),
        (
            "bad-6".into(),
            "{networking: {podCIDR: 10.0.0.0/33}}",
            "podCIDR must be a CIDR",
        ),
        (
            "bad-7".into(),
            "{networking: {podCIDR: 10.96.0.0/16}}",
            "podCIDR and serviceCIDR must not overlap",
        ),
        (
            "bad-8".into(),
            "{networking: {dnsServiceIP: 10.200.0.10}}",
            "dnsServiceIP must lie inside serviceCIDR",
        ),
        (
            "bad-9".into(),
            "{networking: {dnsServiceIP: not-an-ip}}",
            "dnsServiceIP must be an IP address",
        ),
        (
            "bad-10".into(),
            "{apiServer: {replicas: -1}}",
            "should be greater than or equal to 1",
        ),
        (
            "bad-11".into(),
            "{apiServer: {exposure: Ingress}}",
            "supported values: \"ClusterIP\", \"NodePort\", \"LoadBalancer\"",
        ),
        (
            "bad-12".into(),
            "{controllerManager: {replicas: 0}}",
            "should be greater than or equal to 1",
        ),
        (
            "bad-13".into(),
            "{etcd: {storage: lots}}",
            "etcd storage must be a quantity of at least 64Mi",
        ),
        (
            "bad-14".into(),
            "{networking: {clusterDomain: Bad_Domain}}",
            "should match",
        ),
        (long, "{}", "at most 40 characters"),
    ];
    for (name, spec, message) in &create_cases {
        let out = kubectl(
            &env.admin,
            &["apply", "-n", &s.namespace, "-f", "-"],
            Some(&vc_yaml(name, spec)),
        )?;
        ensure!(!out.ok, "{name} {spec} was accepted");
        ensure!(
            out.stderr.contains(message),
            "{name} {spec}: expected '{message}' in: {}",
            out.stderr
        );
        ensure!(
            s.api::<VirtualCluster>().get_opt(name).await?.is_none(),
            "{name} exists"
        );
    }

    // Refused by the apiserver, as edits of a running cluster.
    let update_cases = [
        (
            r#"{"spec":{"version":"1.34.0"}}"#,
            "version cannot be downgraded",
        ),
        (
            r#"{"spec":{"version":"1.37.0"}}"#,
            "one minor version at a time",
        ),
        (
            r#"{"spec":{"etcd":{"replicas":3}}}"#,
            "etcd replicas cannot change after creation",
        ),
        (
            r#"{"spec":{"networking":{"serviceCIDR":"10.100.0.0/16","dnsServiceIP":"10.100.0.10"}}}"#,
            "networking is immutable",
        ),
        (
            r#"{"spec":{"etcd":{"storageClassName":"fast"}}}"#,
            "storageClassName cannot be added or removed",
        ),
        (r#"{"spec":{"version":"1.035.0"}}"#, "no leading zeros"),
    ];
    refused_edits(&s, "vc/base", &update_cases)?;

    // Generations only rise: lowered, or dropped (which reads as 0).
    s.apply(&vc_yaml(
        "generations",
        "{apiServer: {adminCredentialGeneration: 3, encryptionKeyGeneration: 2}}",
    ))?;
    let generation_cases = [
        (
            r#"{"spec":{"apiServer":{"adminCredentialGeneration":2}}}"#,
            "adminCredentialGeneration can only be raised",
        ),
        (
            r#"{"spec":{"apiServer":{"adminCredentialGeneration":null}}}"#,
            "adminCredentialGeneration can only be raised",
        ),
        (
            r#"{"spec":{"apiServer":null}}"#,
            "adminCredentialGeneration can only be raised",
        ),
        (
            r#"{"spec":{"apiServer":{"encryptionKeyGeneration":1}}}"#,
            "encryptionKeyGeneration can only be raised",
        ),
    ];
    refused_edits(&s, "vc/generations", &generation_cases)?;
    let deleted = s.kubectl(&["delete", "vc/generations", "--wait=false"])?;
    ensure!(deleted.ok, "deleting vc/generations: {}", deleted.stderr);

    // Accepted by the schema, refused by the operator's own validation:
    // reported in status and an Event, nothing touched.
    let vcs = s.api::<VirtualCluster>();
    let operator_cases = [
        (
            r#"{"spec":{"apiServer":{"extraArgs":{"etcd-servers":"https://evil:2379"}}}}"#,
            "'etcd-servers' is set by Nestor and cannot be overridden",
        ),
        (
            r#"{"spec":{"apiServer":{"extraArgs":{"authorization-mode":"AlwaysAllow"}}}}"#,
            "apiServer.extraArgs: 'authorization-mode' is set by Nestor and cannot be overridden",
        ),
        (
            r#"{"spec":{"controllerManager":{"extraArgs":{"controllers":"*"}}}}"#,
            "controllerManager.extraArgs: 'controllers' is set by Nestor and cannot be overridden",
        ),
        (
            r#"{"spec":{"scheduler":{"extraArgs":{"--v":"4"}}}}"#,
            "write 'v' without leading dashes",
        ),
        (
            r#"{"spec":{"apiServer":{"certSANs":["not a name!"]}}}"#,
            "neither an IP address nor a DNS name",
        ),
    ];
    for (patch, message) in operator_cases {
        let out = s.kubectl(&["patch", "vc/base", "--type=merge", "-p", patch])?;
        ensure!(
            out.ok,
            "{patch} was refused by the apiserver: {}",
            out.stderr
        );
        wait_for(
            &format!("InvalidSpec for {patch}"),
            Duration::from_secs(20),
            || {
                let vcs = vcs.clone();
                let message = message.to_string();
                Box::pin(async move {
                    let vc = vcs.get("base").await?;
                    let phase = vc.status.as_ref().and_then(|s| s.phase);
                    Ok(condition(&vc, "Ready")
                        .is_some_and(|c| c.reason == "InvalidSpec" && c.message.contains(&message))
                        && phase == Some(nestor_crds::VirtualClusterPhase::Invalid))
                })
            },
        )
        .await?;
        let events = kubectl_ok(
            &env.admin,
            &[
                "get",
                "events.events.k8s.io",
                "-n",
                &s.namespace,
                "-o",
                "json",
            ],
            None,
        )?;
        ensure!(events.contains("InvalidSpec"), "no InvalidSpec event");
        // Undo the edit (drop the offending field).
        let undo = if patch.contains("extraArgs") && patch.contains("apiServer") {
            r#"{"spec":{"apiServer":{"extraArgs":null}}}"#
        } else if patch.contains("controllerManager") {
            r#"{"spec":{"controllerManager":{"extraArgs":null}}}"#
        } else if patch.contains("scheduler") {
            r#"{"spec":{"scheduler":{"extraArgs":null}}}"#
        } else {
            r#"{"spec":{"apiServer":{"certSANs":null}}}"#
        };
        s.kubectl(&["patch", "vc/base", "--type=merge", "-p", undo])?;
        wait_for(
            "the cluster to be valid again",
            Duration::from_secs(20),
            || {
                let vcs = vcs.clone();
                Box::pin(async move {
                    Ok(condition(&vcs.get("base").await?, "Ready")
                        .is_some_and(|c| c.reason != "InvalidSpec"))
                })
            },
        )
        .await?;
    }
    s.settle(Duration::from_secs(2), Duration::from_secs(30))
        .await?;
    let after = snapshot().await?;
    ensure!(before == after, "an invalid spec changed what was running");
    Ok(())
}

/// Test 7: Deleting a cluster removes every child, pod, volume claim and
/// pool through the garbage collector: no finalizer, so also while the
/// operator is down.
async fn delete_removes_everything(env: &Env) -> Result<()> {
    let mut s = env.scenario("delete").await?;
    s.apply(&vc_yaml("gone", "{}"))?;
    s.apply(&pool_yaml("gone"))?;
    converged(&s, "gone", Duration::from_secs(60)).await?;
    let vcs = s.api::<VirtualCluster>();
    let pools = s.api::<NodePool>();
    let uid = vcs.get("gone").await?.metadata.uid;
    ensure!(
        vcs.get("gone").await?.metadata.finalizers.is_none(),
        "a cluster has no finalizer"
    );
    wait_for(
        "the pool owned by its cluster",
        Duration::from_secs(30),
        || {
            let (pools, uid) = (pools.clone(), uid.clone());
            Box::pin(async move { owned_by(&pools, "gone-pool", uid.as_deref()).await })
        },
    )
    .await?;
    // The etcd volume claim exists (made by the StatefulSet controller), so
    // that its deletion below is seen, not assumed.
    let claims = s.api::<PersistentVolumeClaim>();
    wait_for("the etcd volume claim", Duration::from_secs(30), || {
        let claims = claims.clone();
        Box::pin(async move {
            let selected = ListParams::default().labels("nestor.dev/cluster=gone");
            Ok(!claims.list_metadata(&selected).await?.items.is_empty())
        })
    })
    .await?;
    ensure!(
        s.kubectl(&["delete", "vc/gone", "--wait=false"])?.ok,
        "delete failed"
    );
    gone_within(&s, "gone", "children left after deleting the cluster").await?;

    // Deleted while the operator is down: nothing waits for it but the
    // pool, whose finalizer tidies the nested cluster.
    s.apply(&vc_yaml("later", "{}"))?;
    s.apply(&pool_yaml("later"))?;
    converged(&s, "later", Duration::from_secs(60)).await?;
    let uid = vcs.get("later").await?.metadata.uid;
    wait_for(
        "the pool owned by its cluster",
        Duration::from_secs(30),
        || {
            let (pools, uid) = (pools.clone(), uid.clone());
            Box::pin(async move { owned_by(&pools, "later-pool", uid.as_deref()).await })
        },
    )
    .await?;
    if let Some(mut op) = s.operator.take() {
        op.stop();
    }
    ensure!(
        s.kubectl(&["delete", "vc/later", "--wait=false"])?.ok,
        "delete failed"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cluster_gone = vcs.get_opt("later").await?.is_none();
        let left = children(&s, "later").await?;
        // Gone already would mean its finalizer did not wait for the operator.
        let pool_deleting = pools
            .get_opt("later-pool")
            .await?
            .context("the pool went without its finalizer")?
            .metadata
            .deletion_timestamp
            .is_some();
        if cluster_gone && left.is_empty() && pool_deleting {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "with the operator down, the cluster was not deleted: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.restart_operator("delete-2").await?;
    gone_within(
        &s,
        "later",
        "the pool of the cluster deleted while the operator was down stayed",
    )
    .await?;
    Ok(())
}

/// Whether the pool has the cluster of `uid` as an owner, not as its
/// controller.
async fn owned_by(pools: &Api<NodePool>, pool: &str, uid: Option<&str>) -> Result<bool> {
    let pool = pools.get(pool).await?;
    Ok(pool
        .metadata
        .owner_references
        .unwrap_or_default()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid && o.controller.is_none()))
}

fn pool_yaml(cluster: &str) -> String {
    format!(
        "apiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: {cluster}-pool\nspec:\n  clusterRef:\n    name: {cluster}\n"
    )
}

async fn gone_within(s: &Scenario<'_>, vc: &str, failure: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_gone(s, vc).await? {
        ensure!(
            Instant::now() < deadline,
            "{failure}: {:?}",
            children(s, vc).await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Nothing of the cluster is left: the object, its children, its pods, its
/// etcd volume claims, its pools.
async fn all_gone(s: &Scenario<'_>, vc: &str) -> Result<bool> {
    let vc_left = s.api::<VirtualCluster>().get_opt(vc).await?.is_some();
    let children = children(s, vc).await?;
    let selected = ListParams::default().labels(&format!("nestor.dev/cluster={vc}"));
    let pods = s.api::<Pod>().list_metadata(&selected).await?.items.len();
    let claims = s
        .api::<PersistentVolumeClaim>()
        .list_metadata(&selected)
        .await?
        .items
        .len();
    let pools = s
        .api::<NodePool>()
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    Ok(!vc_left && children.is_empty() && pods == 0 && claims == 0 && pools == 0)
}

/// Test 8: Killing the operator in the middle of creating a cluster and
/// starting it again converges with no duplicate or orphan, and the CA
/// made before the crash is kept.
async fn crash_mid_creation_converges(env: &Env) -> Result<()> {
    let mut s = env.scenario("crash").await?;
    s.apply(&vc_yaml("crashy", "{}"))?;
    let secrets = s.api::<Secret>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while secrets.get_opt("crashy-ca").await?.is_none() {
        ensure!(Instant::now() < deadline, "the CA was never written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.operator_mut().kill();
    let partial = children(&s, "crashy").await?.len();
    let ca_before = secrets.get("crashy-ca").await?.data;
    s.restart_operator("crash-2").await?;
    let vc = converged(&s, "crashy", Duration::from_secs(60)).await?;
    let uid = vc.metadata.uid.unwrap_or_default();
    let found = children(&s, "crashy").await?;
    let expected: Vec<(String, String)> = expected_children("crashy")
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    let found_keys: Vec<(String, String)> = found.keys().cloned().collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    ensure!(
        found_keys == expected_sorted,
        "children after the crash: {found_keys:?}"
    );
    for ((kind, name), owners) in &found {
        ensure!(
            owners == &vec![format!("VirtualCluster/{uid}")],
            "{kind} {name} is owned by {owners:?}"
        );
    }
    ensure!(
        secrets.get("crashy-ca").await?.data == ca_before,
        "the CA was regenerated after the crash"
    );
    eprintln!(
        "crash_mid_creation_converges: {partial} of {} children existed at the crash",
        expected.len()
    );
    Ok(())
}

/// Test 9: Two replicas: only the leader reconciles; when it dies the other
/// takes over within the lease duration.
async fn leader_election_fails_over(env: &Env) -> Result<()> {
    let namespace = "t-leader";
    kubectl_ok(&env.admin, &["create", "namespace", namespace], None)?;
    let mut a = env.operator("leader-a", namespace, "nestor-leader")?;
    let mut b = env.operator("leader-b", namespace, "nestor-leader")?;
    a.wait_ready(Duration::from_secs(60)).await?;
    b.wait_ready(Duration::from_secs(60)).await?;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), OPERATOR_NAMESPACE);
    let holder = || async {
        anyhow::Ok(
            leases
                .get_opt("nestor-leader")
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut leader = holder().await?;
    while leader.is_empty() {
        ensure!(Instant::now() < deadline, "nobody took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
        leader = holder().await?;
    }
    kubectl_ok(
        &env.admin,
        &["apply", "-n", namespace, "-f", "-"],
        Some(&vc_yaml("led", "{}")),
    )?;
    let vcs: Api<VirtualCluster> = Api::namespaced(env.client.clone(), namespace);
    wait_for("the leader to reconcile", Duration::from_secs(30), || {
        let vcs = vcs.clone();
        Box::pin(async move { Ok(vcs.get("led").await?.status.is_some()) })
    })
    .await?;
    let (mut winner, mut follower) = if leader == "leader-a" { (a, b) } else { (b, a) };
    ensure!(
        winner.metric_sum("nestor_reconciles_total", "").await? > 0.0,
        "the leader did not reconcile"
    );
    ensure!(
        follower.metric_sum("nestor_reconciles_total", "").await? == 0.0,
        "the follower reconciled"
    );
    ensure!(
        follower.metric_sum("nestor_api_writes_total", "").await? == 0.0,
        "the follower wrote"
    );

    let killed = Instant::now();
    winner.kill();
    kubectl_ok(
        &env.admin,
        &["apply", "-n", namespace, "-f", "-"],
        Some(&vc_yaml("after", "{}")),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now_leader = holder().await?;
        let took_over = now_leader == follower.name
            && follower.metric_sum("nestor_reconciles_total", "").await? > 0.0;
        if took_over && vcs.get("after").await?.status.is_some() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the follower did not take over (holder: {now_leader})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    eprintln!(
        "leader_election_fails_over: the follower took over {:.1}s after the leader died (lease 6s)",
        took.as_secs_f64()
    );
    ensure!(
        took < Duration::from_secs(6 * 3),
        "take-over took {took:?}, far beyond the 6s lease"
    );
    follower.stop();
    Ok(())
}

/// Test 10: Fifty virtual clusters applied together all converge.
async fn fifty_clusters_converge(env: &Env) -> Result<()> {
    let s = env.scenario("many").await?;
    let yaml: Vec<String> = (0..50)
        .map(|i| vc_yaml(&format!("vc-{i:02}"), "{}"))
        .collect();
    let started = Instant::now();
    s.apply(&yaml.join("---\n"))?;
    for i in 0..50 {
        converged(&s, &format!("vc-{i:02}"), Duration::from_secs(300)).await?;
    }
    let took = started.elapsed();
    let writes = s
        .settle(Duration::from_secs(3), Duration::from_secs(120))
        .await?;
    eprintln!(
        "fifty_clusters_converge: 50 clusters ({} children) converged in {:.1}s with {writes} writes",
        50 * expected_children("x").len(),
        took.as_secs_f64()
    );
    Ok(())
}

// ----------------------------------------------------------------- main --

fn main() -> std::process::ExitCode {
    let dir = std::env::temp_dir().join(format!("nestor-it-{}", std::process::id()));
    nestor_e2e::suite::run(
        nestor_e2e::tests![
            crds_install_and_explain,
            chart_renders_and_rbac_is_least_privilege,
            operator_writes_only_objects_labelled_as_its_own,
            namespaced_install_runs_clusters_in_its_namespaces_only,
            empty_spec_creates_every_child,
            unchanged_object_sends_no_write,
            deleted_child_is_repaired,
            spec_edits_roll_out,
            invalid_specs_are_refused,
            hostile_inputs_are_refused_before_any_write,
            egress_allowances_are_the_platform_admins,
            unreadable_objects_stop_nothing,
            edited_secrets_are_repaired,
            placement_reaches_every_pod,
            sandbox_runtime_class_is_the_default_where_present,
            delete_removes_everything,
            crash_mid_creation_converges,
            leader_election_fails_over,
            fifty_clusters_converge,
        ],
        || Env::setup(&dir),
        |mut env| {
            eprintln!(
                "logs of the failed run are kept in {}",
                env.log_dir().display()
            );
            env.bed.keep_logs();
        },
    )
}
