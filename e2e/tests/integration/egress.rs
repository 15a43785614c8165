//! A cluster's own egress allowances (`spec.allowedEgress`) are the
//! platform's to grant: the chart's admission policy refuses them to
//! everyone but `security.egressAdmins`, and what an admin grants reaches
//! the cluster's node policy.

use anyhow::{Result, ensure};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use nestor_crds::VirtualCluster;
use nestor_e2e::harness::integration::Env;
use nestor_e2e::support::{vc_yaml, wait_for};
use nestor_e2e::tools::{Run, kubectl};
use std::time::Duration;

const TENANT: &str = "tenant-egress";
const REFUSAL: &str =
    "spec.allowedEgress may be set or changed only by the platform's egress admins";

/// A tenant who may create and edit the VirtualClusters of its namespace
/// can neither set, widen nor drop `spec.allowedEgress`, and still edits
/// the rest of its cluster; the suite's administrator (an egress admin by
/// the chart's defaults: `system:masters`) sets it, and the cluster's
/// `<vc>-node` NetworkPolicy then opens exactly that destination.
pub(crate) async fn egress_allowances_are_the_platform_admins(env: &Env) -> Result<()> {
    let s = env.scenario("egress").await?;
    s.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: tenant-clusters}}
rules:
- apiGroups: [nestor.dev]
  resources: [virtualclusters]
  verbs: [get, list, watch, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tenant-clusters}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant-clusters}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {TENANT}}}]
"#
    ))?;
    let tenant = |args: &[&str], stdin: Option<&str>| -> Result<Run> {
        let mut all = vec!["-n", s.namespace.as_str(), "--as", TENANT];
        all.extend_from_slice(args);
        kubectl(&env.admin, &all, stdin)
    };
    let refused = |what: &str, run: Run| -> Result<()> {
        ensure!(
            !run.ok && run.stderr.contains(REFUSAL),
            "{what} was not refused by the egress policy: {}{}",
            run.stdout,
            run.stderr
        );
        Ok(())
    };
    let clusters = s.api::<VirtualCluster>();

    let wide = vc_yaml(
        "wide",
        "{allowedEgress: [{cidr: 10.0.9.0/24, ports: [443]}]}",
    );
    refused(
        "a tenant creating a cluster with allowances",
        tenant(&["apply", "-f", "-"], Some(&wide))?,
    )?;
    ensure!(
        clusters.get_opt("wide").await?.is_none(),
        "a refused cluster was stored"
    );
    let plain = tenant(&["apply", "-f", "-"], Some(&vc_yaml("wide", "{}")))?;
    ensure!(
        plain.ok,
        "a tenant may not create its cluster: {}",
        plain.stderr
    );

    let granted = s.kubectl(&[
        "patch",
        "virtualcluster",
        "wide",
        "--type=merge",
        "-p",
        r#"{"spec":{"allowedEgress":[{"cidr":"10.0.9.0/24","ports":[443]}]}}"#,
    ])?;
    ensure!(granted.ok, "the admin's grant failed: {}", granted.stderr);
    let policies = s.api::<NetworkPolicy>();
    wait_for(
        "the grant in the node policy",
        Duration::from_secs(60),
        || {
            let policies = policies.clone();
            Box::pin(async move {
                let Some(policy) = policies.get_opt("wide-node").await? else {
                    return Ok(false);
                };
                let egress = serde_json::to_value(policy.spec)?["egress"].clone();
                Ok(egress.as_array().is_some_and(|rules| {
                    rules.iter().any(|r| {
                        r["to"][0]["ipBlock"]["cidr"] == "10.0.9.0/24"
                            && r["ports"] == serde_json::json!([{"port": 443, "protocol": "TCP"}])
                    })
                }))
            })
        },
    )
    .await?;

    for (what, patch) in [
        (
            "a tenant widening its allowances",
            r#"{"spec":{"allowedEgress":[{"cidr":"10.0.0.0/8"}]}}"#,
        ),
        (
            "a tenant adding a port",
            r#"{"spec":{"allowedEgress":[{"cidr":"10.0.9.0/24","ports":[443,22]}]}}"#,
        ),
        (
            "a tenant dropping its allowances",
            r#"{"spec":{"allowedEgress":null}}"#,
        ),
    ] {
        refused(
            what,
            tenant(
                &[
                    "patch",
                    "virtualcluster",
                    "wide",
                    "--type=merge",
                    "-p",
                    patch,
                ],
                None,
            )?,
        )?;
    }
    let edit = tenant(
        &[
            "patch",
            "virtualcluster",
            "wide",
            "--type=merge",
            "-p",
            r#"{"spec":{"addons":{"coreDNS":{"replicas":2}}}}"#,
        ],
        None,
    )?;
    ensure!(
        edit.ok,
        "a tenant may no longer edit its cluster: {}",
        edit.stderr
    );
    let spec = clusters.get("wide").await?.spec;
    ensure!(
        spec.allowed_egress.len() == 1
            && spec.allowed_egress[0].cidr == "10.0.9.0/24"
            && spec.addons.core_dns.replicas == 2,
        "the cluster holds {:?}",
        spec.allowed_egress
    );
    Ok(())
}
