//! The backup tool against real parts: a snapshot of the test bed's own
//! etcd taken with etcdctl, read with etcdutl, written to versitygw (an
//! S3-compatible store) and to a directory standing for a volume. What it
//! wrote is read back from the store's files, not through its own client.

use anyhow::{Context, Result, bail, ensure};
use nestor_controllers::model::backup::Report;
use nestor_e2e::harness::integration::Env;
use nestor_e2e::paths;
use nestor_e2e::process::Lifetime;
use nestor_e2e::s3::S3Store;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

/// Runs `nestor-backup backup` with `args`, the S3 keys `keys` (if any),
/// and returns its report.
fn backup(dir: &Path, args: &[String], keys: Option<(&str, &str)>) -> Result<Report> {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut command = Command::new(paths::workspace_binary("nestor-backup")?);
    command
        .arg("backup")
        .args(args)
        .arg(format!(
            "--etcdutl={}",
            paths::etcd_tool("etcdutl")?.display()
        ))
        .arg(format!("--report={}", report.display()));
    if let Some((id, secret)) = keys {
        command
            .env("NESTOR_S3_ACCESS_KEY_ID", id)
            .env("NESTOR_S3_SECRET_ACCESS_KEY", secret);
    }
    let output = command.output().context("running nestor-backup")?;
    let text = std::fs::read_to_string(&report).with_context(|| {
        format!(
            "nestor-backup wrote no report; it said: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let logged = String::from_utf8_lossy(&output.stdout);
    ensure!(
        logged.trim() == text.trim(),
        "the log line is the report: {logged}"
    );
    Ok(serde_json::from_str(&text)?)
}

fn reason(report: &Report) -> Result<(&str, &str)> {
    match report {
        Report::Failed { reason, message } => Ok((reason.as_str(), message.as_str())),
        Report::Succeeded { record, .. } => bail!("backup {} succeeded", record.name),
    }
}

/// Backups of a real snapshot reach a real S3 store and a volume, verified
/// byte for byte, with retention; bad credentials, a missing bucket, an
/// endpoint that does not answer and a truncated snapshot each fail with
/// their reason, name no secret and leave nothing behind.
pub(crate) async fn backups_reach_a_real_s3_store_and_fail_with_a_reason(env: &Env) -> Result<()> {
    let dir = env.bed.dir.join("backup-tool");
    std::fs::create_dir_all(&dir)?;
    let snapshot = dir.join("snapshot.db");
    let saved = Command::new(paths::etcd_tool("etcdctl")?)
        .arg(format!(
            "--endpoints=http://127.0.0.1:{}",
            env.bed.etcd_port
        ))
        .args(["snapshot", "save"])
        .arg(&snapshot)
        .output()?;
    ensure!(
        saved.status.success(),
        "etcdctl: {}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let bytes = std::fs::read(&snapshot)?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let store = S3Store::start(&dir, Lifetime::Tied)?;
    store.make_bucket("backups")?;
    let keys = Some((
        store.access_key_id.as_str(),
        store.secret_access_key.as_str(),
    ));
    // The cluster's encryption Secret as mounted: its keys go with the
    // snapshot, its configuration does not.
    let ring = dir.join("encryption");
    std::fs::create_dir_all(&ring)?;
    std::fs::write(
        ring.join("key-0"),
        "a2V5LTAta2V5LTAta2V5LTAta2V5LTAta2V5LTA=",
    )?;
    std::fs::write(
        ring.join("encryption.yaml"),
        "kind: EncryptionConfiguration",
    )?;
    let s3 = |endpoint: &str, bucket: &str, name: &str| -> Vec<String> {
        vec![
            format!("--snapshot={}", snapshot.display()),
            format!("--name={name}"),
            "--path=tenants/demo".into(),
            "--retention=2".into(),
            format!("--keys={}", ring.display()),
            format!("--s3-endpoint={endpoint}"),
            format!("--s3-bucket={bucket}"),
            "--s3-prefix=nestor/".into(),
            "--s3-region=us-east-1".into(),
        ]
    };
    let names = ["20261205T000000Z", "20261205T060000Z", "20261205T120000Z"];
    for name in names {
        let report = backup(&dir, &s3(&store.endpoint, "backups", name), keys)?;
        let Report::Succeeded { record, kept } = report else {
            bail!("{report:?}")
        };
        ensure!(
            record.sha256 == sha && record.size_bytes == bytes.len() as i64,
            "{record:?}"
        );
        ensure!(
            record.revision > 1,
            "the revision etcdutl read: {}",
            record.revision
        );
        ensure!(
            record.location == format!("s3://backups/nestor/tenants/demo/{name}.db"),
            "{}",
            record.location
        );
        ensure!(kept.first().map(String::as_str) == Some(name), "{kept:?}");
    }
    // The store's own files: the two newest, each exactly the snapshot.
    let held = store.root.join("backups/nestor/tenants/demo");
    let mut files: Vec<String> = std::fs::read_dir(&held)?
        .map(|e| Ok(e?.file_name().to_string_lossy().to_string()))
        .collect::<Result<_>>()?;
    files.sort();
    ensure!(
        files
            == [
                "20261205T060000Z.db",
                "20261205T060000Z.json",
                "20261205T060000Z.keys.json",
                "20261205T120000Z.db",
                "20261205T120000Z.json",
                "20261205T120000Z.keys.json"
            ],
        "{files:?}"
    );
    ensure!(
        std::fs::read(held.join("20261205T120000Z.db"))? == bytes,
        "the stored snapshot differs"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(held.join("20261205T120000Z.json"))?)?;
    ensure!(record["sha256"] == sha.as_str(), "{record}");
    let ring_held: serde_json::Value =
        serde_json::from_slice(&std::fs::read(held.join("20261205T120000Z.keys.json"))?)?;
    ensure!(
        ring_held == serde_json::json!({"key-0": "a2V5LTAta2V5LTAta2V5LTAta2V5LTAta2V5LTA="}),
        "the keys, and only they: {ring_held}"
    );

    // A volume destination.
    let volume = dir.join("volume");
    std::fs::create_dir_all(&volume)?;
    let mut args = s3("", "", "20261205T120000Z")[..4].to_vec();
    args.push(format!("--volume={}", volume.display()));
    args.push("--volume-claim=backups".into());
    let report = backup(&dir, &args, None)?;
    ensure!(matches!(report, Report::Succeeded { .. }), "{report:?}");
    ensure!(std::fs::read(volume.join("tenants/demo/20261205T120000Z.db"))? == bytes);

    // Each failure names its reason and no secret, and writes nothing.
    let wrong = Some((store.access_key_id.as_str(), "not-the-secret-key"));
    let silent = format!("http://127.0.0.1:{}", nestor_e2e::testbed::free_port()?);
    for (args, keys, want) in [
        (
            s3(&store.endpoint, "backups", "20261206T000000Z"),
            wrong,
            "AccessDenied",
        ),
        (
            s3(&store.endpoint, "no-such-bucket", "20261206T000000Z"),
            keys,
            "BucketNotFound",
        ),
        (
            s3(&silent, "backups", "20261206T000000Z"),
            keys,
            "EndpointUnreachable",
        ),
    ] {
        let report = backup(&dir, &args, keys)?;
        let (reason, message) = reason(&report)?;
        ensure!(reason == want, "{want}: got {reason}: {message}");
        for secret in [store.secret_access_key.as_str(), "not-the-secret-key"] {
            ensure!(
                !message.contains(secret),
                "the message names a secret: {message}"
            );
        }
    }
    let truncated = dir.join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let mut args = s3(&store.endpoint, "backups", "20261206T000000Z");
    args[0] = format!("--snapshot={}", truncated.display());
    let report = backup(&dir, &args, keys)?;
    let (reason, message) = reason(&report)?;
    ensure!(reason == "VerificationFailed", "{reason}: {message}");
    let after: Vec<_> = std::fs::read_dir(&held)?.collect();
    ensure!(
        after.len() == 6,
        "a failed backup wrote or deleted something"
    );
    eprintln!(
        "figure: backup tool: a {} byte snapshot written to S3 and verified; 4 failure modes reported",
        bytes.len()
    );
    Ok(())
}
