//! The end-to-end tests' harness: Nestor installed with Helm on a test bed
//! with a real node (containerd, kubelet, kube-proxy, CoreDNS), and what
//! the tests do with it: a namespace of their own ([`TestNamespace`]),
//! virtual clusters that turn Ready, their admin kubeconfigs, and the two
//! tenants the attack suite shares ([`Tenants`]).

use super::nested::default_service_account;
use crate::TestBed;
use crate::process::Lifetime;
use crate::s3::S3Store;
use crate::support::{OPERATOR_NAMESPACE, vc_yaml};
use crate::testbed::TestBedOptions;
use crate::tools::{kubectl, kubectl_ok};
use anyhow::{Context as _, Result, bail};
use kube::api::Api;
use nestor_crds::VirtualCluster;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The host namespace of the Conformance cluster. The suite's Helm values
/// opt it in to privileged nested pods: Conformance tests expect a cluster
/// that runs them (host networking, privileged containers), and the
/// platform admin's opt-in is how a Nestor cluster offers one.
pub const CONFORMANCE_NAMESPACE: &str = "conformance";

/// The host namespace whose clusters may run privileged (and so
/// host-network) pods in the network attacks: the suite's Helm values opt
/// it in.
pub const NETWORK_PRIVILEGED_NAMESPACE: &str = "net-privileged";

/// What every test shares: the test bed, its node, and Nestor installed on
/// it with Helm.
pub struct Env {
    /// The test bed, with its node.
    pub bed: TestBed,
    /// The test bed's admin kubeconfig.
    pub admin: PathBuf,
    /// A client with the test bed's admin credentials.
    pub client: kube::Client,
    /// An S3-compatible store the host's pods reach, whose endpoint the
    /// Helm values allow for backups.
    pub s3: S3Store,
    /// The attack suite's two tenants, set up by the first attack (or why
    /// they did not come up).
    tenants: tokio::sync::OnceCell<std::result::Result<Tenants, String>>,
}

impl Env {
    /// Starts the test bed in `dir` with a node, run by `node` (the
    /// `nestor-testbed` binary).
    async fn start(dir: &Path, node: PathBuf) -> Result<Self> {
        let options = TestBedOptions {
            node: Some(node),
            ..Default::default()
        };
        let bed = TestBed::start(dir, Lifetime::Tied, &options).await?;
        let admin = bed.kubeconfig.clone();
        let client = bed.client().await?;
        let s3 = S3Store::start_on(dir, crate::node::host_ip(), Lifetime::Tied)?;
        Ok(Self {
            bed,
            admin,
            client,
            s3,
            tenants: Default::default(),
        })
    }

    /// Starts the test bed in `dir` with a node, run by `node` (the
    /// `nestor-testbed` binary), and installs Nestor on it with Helm.
    pub async fn setup(dir: &Path, node: PathBuf) -> Result<Self> {
        let env = Self::start(dir, node).await?;
        let privileged = format!(
            "security.privilegedNamespaces=[\"{}\",\"{}\"]",
            CONFORMANCE_NAMESPACE, NETWORK_PRIVILEGED_NAMESPACE
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
            "--set-json".into(),
            format!("backup.allowedEndpoints=[\"{}\"]", env.s3.endpoint),
        ];
        args.extend(crate::node::platform_helm_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::helm_install(&env.admin, &args)?;
        Ok(env)
    }

    /// Keeps the logs of a failed run, with the operator pod's log, what the
    /// host ran and every node pod's log, and says where they are.
    pub fn keep_logs(mut self) {
        let logs = kubectl(
            &self.admin,
            &[
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                "deploy/nestor",
                "--tail=200",
            ],
            None,
        );
        let _ = logs.map(|o| std::fs::write(self.bed.dir.join("logs/operator-pod.log"), o.stdout));
        // What the host ran, and what every node pod said.
        let pods = kubectl(&self.admin, &["get", "pods", "-A", "-o", "wide"], None);
        let events = kubectl(&self.admin, &["get", "events", "-A"], None);
        let text = [pods, events]
            .into_iter()
            .flatten()
            .map(|o| o.stdout)
            .collect::<Vec<_>>()
            .join("\n");
        let _ = std::fs::write(self.bed.dir.join("logs/host-pods.txt"), text);
        let nodes = kubectl(
            &self.admin,
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
            if let Ok(out) = kubectl(&self.admin, &["logs", "-n", ns, name, "--tail=300"], None) {
                let file = self.bed.dir.join(format!("logs/node-{ns}-{name}.log"));
                let _ = std::fs::write(file, out.stdout);
            }
        }
        eprintln!(
            "logs of the failed run are kept in {}",
            self.bed.dir.join("logs").display()
        );
        self.bed.keep_logs();
    }

    /// The API of a namespaced kind in `namespace`, as admin.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates a test's namespace; see [`TestNamespace`].
    pub fn namespace(&self, name: &str) -> Result<TestNamespace<'_>> {
        kubectl_ok(&self.admin, &["create", "namespace", name], None)?;
        Ok(TestNamespace {
            env: self,
            name: name.to_string(),
            settled: false,
        })
    }

    /// `kubectl apply` of `yaml` in `namespace`, as admin.
    pub fn apply(&self, namespace: &str, yaml: &str) -> Result<()> {
        kubectl_ok(
            &self.admin,
            &["apply", "-n", namespace, "-f", "-"],
            Some(yaml),
        )
        .map(|_| ())
    }

    /// Waits for `Ready=True`; returns the time it took from `since`.
    pub async fn ready(
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
    pub async fn nested_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.kubeconfig_from_secret(namespace, &format!("{name}-admin-kubeconfig"))
            .await
    }

    /// The kubeconfig in a host Secret (an admin or break-glass one).
    pub async fn kubeconfig_from_secret(&self, namespace: &str, secret: &str) -> Result<PathBuf> {
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
pub struct TestNamespace<'a> {
    env: &'a Env,
    name: String,
    settled: bool,
}

impl TestNamespace<'_> {
    /// Deletes the namespace (and with it its clusters) without waiting,
    /// so that the next tests have the node's CPU.
    pub fn done(mut self) -> Result<()> {
        self.settled = true;
        delete_namespace(self.env, &self.name)
    }

    /// Keeps the namespace for as long as the test bed runs.
    pub fn keep(mut self) {
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

/// The host namespace of the attack suite's two tenants.
pub const TENANTS_NAMESPACE: &str = "attacks";

/// The two tenants every attack shares.
pub struct Tenants {
    /// A's admin kubeconfig, as the tenant holds it.
    a: PathBuf,
    /// B's API server endpoint.
    b_endpoint: String,
}

/// Sets the tenants up once, for every attack: should that fail, every
/// attack fails with the same reason (none of them tries again).
pub async fn tenants(env: &Env) -> Result<&Tenants> {
    env.tenants
        .get_or_init(|| async {
            set_up_tenants(env)
                .await
                .map_err(|e| format!("the attack suite's tenants did not come up: {e:#}"))
        })
        .await
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl Tenants {
    /// A's admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.a
    }
    /// B's API server endpoint.
    pub fn b_endpoint(&self) -> &str {
        &self.b_endpoint
    }
}

async fn set_up_tenants(env: &Env) -> Result<Tenants> {
    // Every attack shares it, until the test bed stops.
    env.namespace(TENANTS_NAMESPACE)?.keep();
    let start = Instant::now();
    let pool = "apiVersion: nestor.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: pool\nspec:\n  clusterRef: {name: tenant-a}\n  replicas: 0\n";
    env.apply(
        TENANTS_NAMESPACE,
        &[
            vc_yaml("tenant-a", "{}"),
            vc_yaml("tenant-b", "{}"),
            // No nodes: its bootstrap token is what matters.
            pool.into(),
        ]
        .join("---\n"),
    )?;
    env.ready(
        TENANTS_NAMESPACE,
        "tenant-a",
        start,
        Duration::from_secs(300),
    )
    .await?;
    env.ready(
        TENANTS_NAMESPACE,
        "tenant-b",
        start,
        Duration::from_secs(300),
    )
    .await?;
    let a = env.nested_kubeconfig(TENANTS_NAMESPACE, "tenant-a").await?;
    // The controller-manager creates the default ServiceAccount that pods
    // need.
    default_service_account(&a).await?;
    let b_endpoint = endpoint(env, "tenant-b").await?;
    Ok(Tenants { a, b_endpoint })
}

async fn endpoint(env: &Env, name: &str) -> Result<String> {
    env.api::<VirtualCluster>(TENANTS_NAMESPACE)
        .get(name)
        .await?
        .status
        .and_then(|s| s.endpoint)
        .context("no endpoint in status")
}
