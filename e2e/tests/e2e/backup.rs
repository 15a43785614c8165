//! Backups of a nested cluster's etcd: on schedule to the test bed's S3
//! store (versitygw) and on demand to a PersistentVolumeClaim, each
//! verified and listed in the status; every failure mode the operator can
//! meet gives its reason in `BackupSucceeded`, and the cluster keeps
//! serving.

use anyhow::{Context as _, Result, ensure};
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use nestor_crds::VirtualCluster;
use nestor_e2e::harness::e2e::Env;
use nestor_e2e::support::{vc_yaml, wait_for};
use nestor_e2e::tools::kubectl_ok;
use std::time::{Duration, Instant};

/// ConfigMaps written into the nested cluster before its first backup.
const OBJECTS: usize = 1000;

/// The `BackupSucceeded` condition as `(status, reason, message)`.
async fn backup_condition(env: &Env, ns: &str, vc: &str) -> Result<(String, String, String)> {
    let vc = env.api::<VirtualCluster>(ns).get(vc).await?;
    let c = vc
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "BackupSucceeded")
        .context("no BackupSucceeded condition")?;
    Ok((c.status, c.reason, c.message))
}

/// Waits until `BackupSucceeded` has `reason` and a message other than
/// `before`'s (a new backup ended), and returns its message.
async fn wait_for_backup(
    env: &Env,
    ns: &str,
    vc: &str,
    reason: &str,
    before: &str,
    timeout: Duration,
) -> Result<String> {
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (ns_, vc_, reason_, before_, env_api) = (
        ns.to_string(),
        vc.to_string(),
        reason.to_string(),
        before.to_string(),
        env.api::<VirtualCluster>(ns),
    );
    let seen = last.clone();
    wait_for(
        &format!("{ns_}/{vc_}: BackupSucceeded {reason_}"),
        timeout,
        move || {
            let (api, vc, reason, before, seen) = (
                env_api.clone(),
                vc_.clone(),
                reason_.clone(),
                before_.clone(),
                seen.clone(),
            );
            async move {
                let status = api.get(&vc).await?.status.unwrap_or_default();
                let Some(c) = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "BackupSucceeded")
                else {
                    return Ok(false);
                };
                *seen.lock().unwrap() = format!("{}: {}", c.reason, c.message);
                Ok(c.reason == reason && c.message != before)
            }
            .boxed()
        },
    )
    .await
    .with_context(|| format!("last seen: {}", last.lock().unwrap()))?;
    let (_, _, message) = backup_condition(env, ns, vc).await?;
    Ok(message)
}

fn annotate(env: &Env, ns: &str, vc: &str, value: &str) -> Result<()> {
    kubectl_ok(
        &env.admin,
        &[
            "annotate",
            "--overwrite",
            "-n",
            ns,
            &format!("virtualcluster/{vc}"),
            &format!("nestor.dev/backup-now={value}"),
        ],
        None,
    )?;
    Ok(())
}

fn patch(env: &Env, ns: &str, vc: &str, patch: &str) -> Result<()> {
    kubectl_ok(
        &env.admin,
        &[
            "patch",
            "-n",
            ns,
            &format!("virtualcluster/{vc}"),
            "--type=merge",
            "-p",
            patch,
        ],
        None,
    )?;
    Ok(())
}

/// Writes `count` ConfigMaps into the nested cluster, 32 at a time.
async fn write_config_maps(client: kube::Client, count: usize) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let results: Vec<Result<()>> = futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("kept-{i:04}")},
                    "data": {"index": i.to_string()}
                }))?;
                api.create(&PostParams::default(), &cm).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

pub(crate) async fn backups_run_on_schedule_and_failures_name_their_cause(env: &Env) -> Result<()> {
    let ns = env.namespace("backups")?;
    env.s3.make_bucket("tenant-backups")?;
    let creds = |secret: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s3-creds\n  labels: {{nestor.dev/backup: \"true\"}}\nstringData:\n  access-key-id: {}\n  secret-access-key: {secret}\n",
            env.s3.access_key_id
        )
    };
    env.apply(&ns, &creds(&env.s3.secret_access_key))?;
    env.apply(
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: backups\n  labels: {nestor.dev/backup: \"true\"}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    )?;
    // The next whole minute at least 150 s away: a slot after the cluster
    // is Ready and the objects are written.
    let now = Timestamp::now().as_second();
    let slot = (now + 150) / 60 * 60 + 60;
    let minute = (slot / 60) % 60;
    let start = Instant::now();
    let spec = format!(
        "{{backup: {{schedule: '{minute} * * * *', retention: 2, destination: {{s3: {{endpoint: '{}', bucket: tenant-backups, prefix: nightly/, credentialsSecret: s3-creds}}}}}}}}",
        env.s3.endpoint
    );
    env.apply(&ns, &vc_yaml("kept", &spec))?;
    env.ready(&ns, "kept", start, Duration::from_secs(300))
        .await?;
    let (status, reason, _) = backup_condition(env, &ns, "kept").await?;
    ensure!(
        status == "False" && reason == "NoBackupYet",
        "before its first slot: {status} {reason}"
    );
    let client =
        nestor_e2e::kubeconfig::client_for(&env.nested_kubeconfig(&ns, "kept").await?).await?;
    let wrote = Instant::now();
    write_config_maps(client.clone(), OBJECTS).await?;
    println!(
        "wrote {OBJECTS} ConfigMaps in {:.1}s",
        wrote.elapsed().as_secs_f64()
    );
    // On schedule, to S3.
    let wait = Duration::from_secs((slot - Timestamp::now().as_second()).max(0) as u64 + 180);
    let message = wait_for_backup(env, &ns, "kept", "Succeeded", "", wait).await?;
    let took = Timestamp::now().as_millisecond() as f64 / 1000.0 - slot as f64;
    let vc = env.api::<VirtualCluster>(&ns).get("kept").await?;
    let status = vc.status.unwrap_or_default();
    let record = status.backups.first().context("no backup listed")?.clone();
    ensure!(
        record.time.0.as_second() == slot,
        "the backup stands for the slot {slot}: {record:?}"
    );
    let file = env
        .s3
        .root
        .join("tenant-backups/nightly")
        .join(format!("{ns}/kept/{}.db", record.name));
    let size = std::fs::metadata(&file)
        .with_context(|| format!("{} in the store", file.display()))?
        .len();
    ensure!(
        size as i64 == record.size_bytes && record.revision > OBJECTS as i64,
        "the store holds what the status says: {size} bytes, {record:?}"
    );
    println!(
        "backup: {OBJECTS} ConfigMaps, {} bytes at revision {}, verified and listed {took:.1}s after its slot",
        record.size_bytes, record.revision
    );
    // Each failure gives its reason, and the cluster keeps serving.
    let mut before = message;
    let fail = |what: &str| -> Result<String> {
        let value = format!("{what}-{}", Timestamp::now().as_second());
        annotate(env, &ns, "kept", &value)?;
        Ok(value)
    };
    env.apply(&ns, &creds("not-the-secret"))?;
    fail("denied")?;
    before = wait_for_backup(
        env,
        &ns,
        "kept",
        "AccessDenied",
        &before,
        Duration::from_secs(180),
    )
    .await?;
    env.apply(&ns, &creds(&env.s3.secret_access_key))?;
    patch(
        env,
        &ns,
        "kept",
        r#"{"spec":{"backup":{"destination":{"s3":{"bucket":"no-such-bucket"}}}}}"#,
    )?;
    fail("bucket")?;
    before = wait_for_backup(
        env,
        &ns,
        "kept",
        "BucketNotFound",
        &before,
        Duration::from_secs(180),
    )
    .await?;
    // An unlabelled Secret is never handed to a Job.
    patch(
        env,
        &ns,
        "kept",
        r#"{"spec":{"backup":{"destination":{"s3":{"bucket":"tenant-backups"}}}}}"#,
    )?;
    kubectl_ok(
        &env.admin,
        &["label", "-n", &ns, "secret/s3-creds", "nestor.dev/backup-"],
        None,
    )?;
    fail("unlabelled")?;
    before = wait_for_backup(
        env,
        &ns,
        "kept",
        "DestinationNotAllowed",
        &before,
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        before.contains("spec.backup.destination.s3.credentialsSecret"),
        "the message names the field: {before}"
    );
    // On demand, to a volume; retention 1 keeps the newest alone.
    patch(
        env,
        &ns,
        "kept",
        r#"{"spec":{"backup":{"retention":1,"destination":{"s3":null,"volume":{"claimName":"backups"}}}}}"#,
    )?;
    fail("volume")?;
    let message = wait_for_backup(
        env,
        &ns,
        "kept",
        "Succeeded",
        &before,
        Duration::from_secs(180),
    )
    .await?;
    ensure!(message.contains("volume://backups/"), "{message}");
    let status = env
        .api::<VirtualCluster>(&ns)
        .get("kept")
        .await?
        .status
        .unwrap_or_default();
    ensure!(
        status.backups.len() == 1 && status.backups[0].location.starts_with("volume://"),
        "retention 1 lists the newest alone: {:?}",
        status.backups
    );
    // Through all of it, the cluster served and lost nothing.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let kept = cms
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("kept-"))
        })
        .count();
    ensure!(kept == OBJECTS, "{kept} of {OBJECTS} ConfigMaps");
    nestor_e2e::harness::data::record(OBJECTS, OBJECTS - kept);
    ns.done()
}
