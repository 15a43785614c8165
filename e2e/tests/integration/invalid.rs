//! Invalid specs: refused by the API server with their messages, or
//! reported by the operator, and nothing already running changes.

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::ListParams;
use nestor_crds::VirtualCluster;
use nestor_e2e::harness::integration::{Env, Scenario, condition, converged, secret_data};
use nestor_e2e::support::{vc_yaml, wait_for};
use nestor_e2e::tools::{kubectl, kubectl_ok};
use std::collections::BTreeMap;
use std::time::Duration;

/// Test 6: Invalid specs are refused with a message a person understands, and
/// nothing already running changes.
pub(crate) async fn invalid_specs_are_refused(env: &Env) -> Result<()> {
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
        // Backups go only where the platform allows (it allows no
        // endpoint here), and no more often than every 5 minutes.
        (
            r#"{"spec":{"backup":{"destination":{"s3":{"endpoint":"http://169.254.169.254:80","bucket":"b-1","credentialsSecret":"c"}}}}}"#,
            "spec.backup.destination.s3.endpoint: 'http://169.254.169.254:80' is not one of the platform's backup endpoints",
        ),
        (
            r#"{"spec":{"backup":{"schedule":"* * * * *","destination":{"volume":{"claimName":"c"}}}}}"#,
            "spec.backup.schedule: '* * * * *' runs more often than every 5 minutes",
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
        let undo = if patch.contains("backup") {
            r#"{"spec":{"backup":null}}"#
        } else if patch.contains("extraArgs") && patch.contains("apiServer") {
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
