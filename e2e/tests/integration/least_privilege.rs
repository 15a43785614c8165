//! Least privilege on the host: the chart's admission policy lets the
//! operator's ServiceAccount write only objects labelled as Nestor's, and a
//! namespaced install (Roles in the listed namespaces only) runs clusters
//! there and can read nothing elsewhere.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use nestor_e2e::harness::integration::Env;
use nestor_e2e::operator::OperatorOptions;
use nestor_e2e::support::{kind_of, rbac_documents, vc_yaml, wait_for};
use nestor_e2e::tools::{helm, kubectl, kubectl_ok};
use nestor_e2e::{Operator, paths};
use std::time::Duration;

const POLICY: &str = "ValidatingAdmissionPolicy 'nestor-writes-managed-objects-only'";

pub(crate) async fn operator_writes_only_objects_labelled_as_its_own(env: &Env) -> Result<()> {
    let ns = "t-least-privilege";
    kubectl_ok(&env.admin, &["create", "namespace", ns], None)?;
    let as_operator = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        kubectl(&env.operator_kubeconfig, &all, stdin)
    };
    let config_map = |name: &str, labelled: bool| {
        let labels = if labelled {
            "\n  labels: {app.kubernetes.io/managed-by: nestor-operator}"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{labels}\ndata: {{a: b}}\n"
        )
    };
    // Creating an object that is not labelled as Nestor's.
    let out = as_operator(&["create", "-f", "-"], Some(&config_map("foreign", false)))?;
    ensure!(
        !out.ok && out.stderr.contains(POLICY) && out.stderr.contains("may create or keep only"),
        "an unlabelled create by the operator: {}{}",
        out.stdout,
        out.stderr
    );
    // Taking over someone else's object by labelling it.
    kubectl_ok(
        &env.admin,
        &["create", "-n", ns, "-f", "-"],
        Some(&config_map("theirs", false)),
    )?;
    let out = as_operator(
        &[
            "label",
            "configmap",
            "theirs",
            "app.kubernetes.io/managed-by=nestor-operator",
        ],
        None,
    )?;
    ensure!(
        !out.ok && out.stderr.contains("may change or delete only"),
        "the operator labelled a foreign object: {}{}",
        out.stdout,
        out.stderr
    );
    // Its own objects: created and changed, but never unlabelled.
    let out = as_operator(&["create", "-f", "-"], Some(&config_map("ours", true)))?;
    ensure!(out.ok, "a labelled create by the operator: {}", out.stderr);
    let out = as_operator(
        &[
            "label",
            "configmap",
            "ours",
            "app.kubernetes.io/managed-by-",
        ],
        None,
    )?;
    ensure!(
        !out.ok && out.stderr.contains("may create or keep only"),
        "the operator removed its own label: {}{}",
        out.stdout,
        out.stderr
    );
    kubectl_ok(
        &env.admin,
        &["delete", "namespace", ns, "--wait=false"],
        None,
    )?;
    Ok(())
}

pub(crate) async fn namespaced_install_runs_clusters_in_its_namespaces_only(
    env: &Env,
) -> Result<()> {
    let (release, home) = ("scoped", "nestor-scoped");
    let (watched, also_watched) = ("t-scoped", "t-scoped-b");
    for ns in [home, watched, also_watched] {
        kubectl_ok(&env.admin, &["create", "namespace", ns], None)?;
    }
    let chart = paths::repo_root()
        .join("charts/nestor")
        .display()
        .to_string();
    let rendered = helm(&[
        "template",
        release,
        &chart,
        "--namespace",
        home,
        "--set",
        &format!("rbac.namespaces={{{watched},{also_watched}}}"),
    ])?;
    ensure!(rendered.ok, "helm template: {}", rendered.stderr);
    let rbac = rbac_documents(&rendered.stdout, false);
    // Only cluster-scoped reads are cluster-wide; the rest are Roles.
    let cluster_role = rbac
        .iter()
        .find(|d| kind_of(d) == "ClusterRole")
        .context("no ClusterRole")?;
    ensure!(
        !cluster_role.contains("secrets") && !cluster_role.contains("deployments"),
        "a namespaced install's ClusterRole grants namespaced kinds:\n{cluster_role}"
    );
    // Every rendered object names its namespace.
    kubectl_ok(
        &env.admin,
        &["apply", "-f", "-"],
        Some(&rbac.join("\n---\n")),
    )?;
    let who = format!("system:serviceaccount:{home}:{release}-nestor");
    let can = |verb: &str, resource: &str, ns: &str| -> Result<bool> {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", who.as_str()];
        if ns.is_empty() {
            args.push("--all-namespaces");
        } else {
            args.extend(["-n", ns]);
        }
        Ok(kubectl(&env.admin, &args, None)?.stdout.trim() == "yes")
    };
    ensure!(
        can("list", "secrets", watched)?,
        "no access to its own namespace"
    );
    for (verb, resource, ns) in [
        ("list", "secrets", ""),
        ("list", "secrets", "default"),
        ("create", "deployments.apps", "default"),
        ("watch", "virtualclusters.nestor.dev", ""),
    ] {
        ensure!(
            !can(verb, resource, ns)?,
            "a namespaced install may {verb} {resource} in {ns:?}"
        );
    }
    let token = kubectl_ok(
        &env.admin,
        &[
            "create",
            "token",
            &format!("{release}-nestor"),
            "-n",
            home,
            "--duration=1h",
        ],
        None,
    )?;
    let kubeconfig = env.bed.dir.join("scoped-operator.kubeconfig");
    let server = format!("https://{}:{}", env.bed.api_host, env.bed.api_port);
    let ca = std::fs::read_to_string(env.bed.dir.join("pki/ca.crt"))?;
    std::fs::write(
        &kubeconfig,
        nestor_controllers::build::kubeconfig::render(
            "nestor-testbed",
            &server,
            &ca,
            "scoped",
            nestor_controllers::build::kubeconfig::Credentials::Token(token.trim()),
        ),
    )?;
    let mut operator = Operator::start(&OperatorOptions {
        name: "scoped",
        kubeconfig: &kubeconfig,
        watch_namespace: &format!("{watched},{also_watched}"),
        lease: ("nestor-scoped", home),
        lease_duration: 6,
        log_dir: &env.bed.dir.join("logs"),
        env: &[],
    })?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    // One operator, a cluster in each watched namespace.
    for ns in [watched, also_watched] {
        kubectl_ok(
            &env.admin,
            &["apply", "-n", ns, "-f", "-"],
            Some(&vc_yaml("scoped", "{}")),
        )?;
    }
    for ns in [watched, also_watched] {
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
        wait_for(
            &format!("a cluster's children in {ns}"),
            Duration::from_secs(60),
            || {
                let deployments = deployments.clone();
                Box::pin(
                    async move { Ok(deployments.get_opt("scoped-apiserver").await?.is_some()) },
                )
            },
        )
        .await?;
    }
    operator.stop();
    for ns in [home, watched, also_watched] {
        kubectl_ok(
            &env.admin,
            &["delete", "namespace", ns, "--wait=false"],
            None,
        )?;
    }
    Ok(())
}
