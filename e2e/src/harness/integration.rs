//! The integration tests' harness: the real operator binary against a real
//! control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler), under the RBAC identity the Helm chart grants.
//!
//! One test bed serves every test ([`Env`]); each test has its own
//! namespace and its own operator process watching only that namespace
//! ([`Scenario`]), so tests run in parallel without seeing each other.

use crate::operator::OperatorOptions;
use crate::process::Lifetime;
use crate::support::{
    OPERATOR_NAMESPACE, documents, kind_of, rbac_documents, render_chart, wait_for,
};
use crate::tools::{Run, kubectl, kubectl_ok};
use crate::{Operator, TestBed, paths};
use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::{Api, ListParams};
use nestor_crds::VirtualCluster;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CRDs as the chart ships them, relative to the repository's root.
pub const CRDS: &str = "charts/nestor/crds/nestor.dev_crds.yaml";

/// What every test shares: the test bed and the operator's credentials.
pub struct Env {
    /// The test bed, with the chart's CRDs, identity and RBAC installed.
    pub bed: TestBed,
    /// The test bed's admin kubeconfig.
    pub admin: PathBuf,
    /// A kubeconfig holding a token of the chart's ServiceAccount.
    pub operator_kubeconfig: PathBuf,
    /// The name of the chart's ServiceAccount, in [`OPERATOR_NAMESPACE`].
    pub service_account: String,
    /// A client with the test bed's admin credentials.
    pub client: kube::Client,
}

impl Env {
    /// Starts the test bed in `dir` and installs the chart's CRDs, identity
    /// and RBAC; returns once the chart's write policy is in force.
    pub async fn setup(dir: &Path) -> Result<Self> {
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

    /// Where the test bed's processes and the operators write their logs.
    pub fn log_dir(&self) -> PathBuf {
        self.bed.dir.join("logs")
    }

    /// Keeps the logs of a failed run and says where they are.
    pub fn keep_logs(mut self) {
        eprintln!(
            "logs of the failed run are kept in {}",
            self.log_dir().display()
        );
        self.bed.keep_logs();
    }

    /// A namespace of the test's own and an operator that watches it.
    pub async fn scenario(&self, name: &str) -> Result<Scenario<'_>> {
        self.scenario_with(name, &[]).await
    }

    /// A scenario whose operator has settings beyond the defaults
    /// (environment variables, as the chart sets them).
    pub async fn scenario_with(&self, name: &str, env: &[(&str, &str)]) -> Result<Scenario<'_>> {
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

    /// An operator process watching `namespace`, leading with the Lease
    /// `lease` in [`OPERATOR_NAMESPACE`].
    pub fn operator(&self, name: &str, namespace: &str, lease: &str) -> Result<Operator> {
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

/// One test's namespace and the operator process that watches it.
pub struct Scenario<'a> {
    /// The shared environment.
    pub env: &'a Env,
    /// The test's namespace.
    pub namespace: String,
    /// The operator watching the namespace; `None` while a test has it
    /// stopped.
    pub operator: Option<Operator>,
}

impl Scenario<'_> {
    /// The running operator.
    pub fn operator_mut(&mut self) -> &mut Operator {
        self.operator
            .as_mut()
            .expect("the scenario's operator runs")
    }
    fn operator(&self) -> &Operator {
        self.operator
            .as_ref()
            .expect("the scenario's operator runs")
    }
    /// The API of a namespaced kind in the test's namespace, as admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.env.client.clone(), &self.namespace)
    }
    /// `kubectl apply` of `yaml` in the test's namespace, as admin.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        kubectl_ok(
            &self.env.admin,
            &["apply", "-n", &self.namespace, "-f", "-"],
            Some(yaml),
        )
    }
    /// `kubectl` in the test's namespace, as admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<Run> {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.env.admin, &all, None)
    }
    /// Restarts the operator (graceful stop, then a new process).
    pub async fn restart_operator(&mut self, name: &str) -> Result<()> {
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
    pub async fn writes(&self) -> Result<f64> {
        self.operator()
            .metric_sum("nestor_api_writes_total", "")
            .await
    }
    /// The total of reconciles this operator process has run.
    pub async fn reconciles(&self) -> Result<f64> {
        self.operator()
            .metric_sum("nestor_reconciles_total", "")
            .await
    }
    /// Waits until the operator has sent no write for `quiet`.
    pub async fn settle(&self, quiet: Duration, timeout: Duration) -> Result<f64> {
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
pub fn expected_children(vc: &str) -> Vec<(&'static str, String)> {
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
pub async fn children(
    s: &Scenario<'_>,
    vc: &str,
) -> Result<BTreeMap<(String, String), Vec<String>>> {
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
pub async fn converged(s: &Scenario<'_>, vc: &str, timeout: Duration) -> Result<VirtualCluster> {
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

/// The condition of type `type_` in the cluster's status.
pub fn condition<'a>(
    vc: &'a VirtualCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    vc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The data of every Secret of the cluster, by Secret name and key.
pub async fn secret_data(
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
