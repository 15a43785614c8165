//! `nestor-backup`, the tool of Nestor's backup Jobs. It ships in the
//! operator's image beside upstream `etcdutl`. `backup` checks a snapshot
//! etcdctl saved, writes it and its record to the destination, reads it back,
//! applies retention and reports in its container's termination message.
//! It holds no Kubernetes credential, and prints no secret.

mod snapshot;
mod store;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nestor_crds::BackupRecord;
use nestor_model::model::backup::{FailureReason, Report};
use std::path::PathBuf;
use std::process::ExitCode;
use store::{Destination, Failure, Target};

#[derive(Parser)]
#[command(name = "nestor-backup", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Backs a snapshot up (see the crate's documentation).
    Backup(Box<BackupArgs>),
}

#[derive(clap::Args, Debug)]
struct BackupArgs {
    /// The snapshot etcdctl saved.
    #[arg(long)]
    snapshot: PathBuf,
    /// The backup's name (`YYYYMMDDTHHMMSSZ`, the time it stands for).
    #[arg(long)]
    name: String,
    /// `<namespace>/<cluster>`: where the cluster's backups go.
    #[arg(long)]
    path: String,
    /// How many backups are kept.
    #[arg(long)]
    retention: usize,
    /// The etcdutl to read the snapshot with.
    #[arg(long, default_value = "etcdutl")]
    etcdutl: String,
    /// The cluster's encryption Secret, mounted: its `key-*` files are
    /// written beside the snapshot (`<name>.keys.json`), since the
    /// snapshot's Secrets are encrypted with them.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Where the destination claim is mounted.
    #[arg(long, requires = "volume_claim", conflicts_with = "s3_endpoint")]
    volume: Option<PathBuf>,
    #[arg(long)]
    volume_claim: Option<String>,
    #[arg(long, requires_all = ["s3_bucket", "s3_region"])]
    s3_endpoint: Option<String>,
    #[arg(long)]
    s3_bucket: Option<String>,
    #[arg(long, default_value = "")]
    s3_prefix: String,
    #[arg(long)]
    s3_region: Option<String>,
    /// CA certificates (PEM) for an https endpoint.
    #[arg(long)]
    s3_ca: Option<PathBuf>,
    /// Where the report goes.
    #[arg(long, default_value = "/dev/termination-log")]
    report: PathBuf,
}

impl BackupArgs {
    fn target(&self) -> Result<Target> {
        if let (Some(dir), Some(claim)) = (&self.volume, &self.volume_claim) {
            return Ok(Target::Volume {
                dir: dir.clone(),
                claim: claim.clone(),
            });
        }
        Ok(Target::S3 {
            endpoint: self
                .s3_endpoint
                .clone()
                .context("no destination: --volume or --s3-endpoint")?,
            bucket: self.s3_bucket.clone().context("--s3-bucket")?,
            prefix: self.s3_prefix.clone(),
            region: self.s3_region.clone().context("--s3-region")?,
            ca: self.s3_ca.clone(),
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Backup(args) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let report = match runtime {
                Ok(rt) => rt.block_on(backup(&args)),
                Err(e) => failed(FailureReason::BackupFailed, format!("starting: {e}")),
            };
            let ok = matches!(report, Report::Succeeded { .. });
            let text = serde_json::to_string(&report).unwrap_or_default();
            // The report is the termination message; the same line is the log.
            if let Err(e) = std::fs::write(&args.report, &text) {
                eprintln!("nestor-backup: writing {}: {e}", args.report.display());
            }
            println!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn failed(reason: FailureReason, message: String) -> Report {
    Report::Failed {
        reason: reason.as_str().to_string(),
        message,
    }
}

async fn backup(args: &BackupArgs) -> Report {
    match run(args).await {
        Ok(report) => report,
        Err(f) => failed(f.reason, f.message),
    }
}

/// The time a backup named `YYYYMMDDTHHMMSSZ` stands for.
fn time_of(name: &str) -> Option<Time> {
    let b = name.as_bytes();
    if name.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &name[..4],
        &name[4..6],
        &name[6..8],
        &name[9..11],
        &name[11..13],
        &name[13..15]
    );
    text.parse().ok().map(Time)
}

/// The `key-*` files of `dir`, as a JSON object of name to key. Errors
/// name the files, never a key.
fn read_keys(dir: &std::path::Path) -> Result<Vec<u8>> {
    let mut keys = std::collections::BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading the keys in {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading the keys in {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("key-") {
            continue;
        }
        let key = std::fs::read_to_string(entry.path())
            .with_context(|| format!("reading the key file {name}"))?;
        keys.insert(name, key.trim().to_string());
    }
    anyhow::ensure!(!keys.is_empty(), "no key-* file in {}", dir.display());
    Ok(serde_json::to_vec(&keys)?)
}

async fn run(args: &BackupArgs) -> Result<Report, Failure> {
    let bad = |m: String| Failure::new(FailureReason::BackupFailed, m);
    let time =
        time_of(&args.name).ok_or_else(|| bad(format!("'{}' is not a backup name", args.name)))?;
    let target = args.target().map_err(|e| bad(format!("{e:#}")))?;
    // The snapshot first: nothing is written that does not verify.
    let digest = snapshot::digest(&args.snapshot)
        .await
        .map_err(|e| Failure::new(FailureReason::SnapshotFailed, format!("{e:#}")))?;
    if !digest.trailer_ok {
        return Err(Failure::new(
            FailureReason::VerificationFailed,
            format!(
                "the snapshot ({} bytes) does not end with the SHA-256 of its pages: it is truncated or damaged",
                digest.size
            ),
        ));
    }
    let keys = match &args.keys {
        Some(dir) => Some(read_keys(dir).map_err(|e| bad(format!("{e:#}")))?),
        None => None,
    };
    let revision = snapshot::revision(&args.etcdutl, &args.snapshot)
        .await
        .map_err(|e| Failure::new(FailureReason::VerificationFailed, format!("{e:#}")))?;
    let credentials = match &target {
        Target::S3 { .. } => Some(
            store::credentials_from_env()
                .map_err(|e| Failure::new(FailureReason::AccessDenied, format!("{e:#}")))?,
        ),
        Target::Volume { .. } => None,
    };
    let destination = Destination::open(&target, &args.path, credentials)?;
    let db = format!("{}.db", args.name);
    let record = BackupRecord {
        name: args.name.clone(),
        time,
        size_bytes: digest.size as i64,
        sha256: digest.sha256.clone(),
        revision,
        location: destination.location(&db),
    };
    // A listing first: a small request whose answer (refused, no such
    // bucket, no answer) is read whole, where a server may cut a refused
    // upload short before its status arrives.
    destination.names().await?;
    destination.put_file(&db, &args.snapshot).await?;
    let (size, sha256) = destination.read_back(&db).await?;
    if (size, sha256.as_str()) != (digest.size, digest.sha256.as_str()) {
        return Err(Failure::new(
            FailureReason::VerificationFailed,
            format!(
                "{} reads back as {size} bytes with SHA-256 {sha256}, not {} bytes with {}",
                record.location, digest.size, digest.sha256
            ),
        ));
    }
    if let Some(keys) = keys {
        destination
            .put_bytes(&format!("{}.keys.json", args.name), keys)
            .await?;
    }
    let json = serde_json::to_vec(&record).map_err(|e| bad(e.to_string()))?;
    destination
        .put_bytes(&format!("{}.json", args.name), json)
        .await?;
    // Retention: only once the new backup is verified.
    let names = destination.names().await?;
    let (kept, dropped) = names.split_at(names.len().min(args.retention.max(1)));
    for name in dropped {
        destination.delete(name).await?;
    }
    Ok(Report::Succeeded {
        record,
        kept: kept.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The Job the operator builds runs this tool with flags it reads.
    #[test]
    fn the_jobs_command_lines_parse() {
        use nestor_model::model::inputs::fixtures;
        let at = "2026-12-05T06:00:00Z".parse().unwrap();
        let start = nestor_model::model::backup::Start {
            job: "demo-backup-20261205060000".into(),
            at,
            name: "20261205T060000Z".into(),
        };
        let vc = fixtures::vc(serde_json::json!({}));
        let inputs = fixtures::inputs(&vc);
        let backup: nestor_crds::BackupSpec = serde_json::from_value(serde_json::json!({
            "destination": {"volume": {"claimName": "tenant-backups"}}
        }))
        .unwrap();
        let job = nestor_model::build::backup::desired_backup_job(&inputs, &backup, &start);
        let pod = job.spec.unwrap().template.spec.unwrap();
        let upload = pod.containers[0].command.clone().unwrap();
        let Command::Backup(args) = Args::try_parse_from(&upload).unwrap().command;
        assert_eq!(args.name, "20261205T060000Z");
        assert!(matches!(args.target().unwrap(), Target::Volume { .. }));
        assert_eq!(args.etcdutl, "/etcdutl");
        let mut s3 = upload[..7].to_vec();
        s3.extend(
            [
                "--s3-endpoint=http://10.0.0.5:7070",
                "--s3-bucket=b",
                "--s3-prefix=p/",
                "--s3-region=r",
            ]
            .map(String::from),
        );
        let Command::Backup(args) = Args::try_parse_from(&s3).unwrap().command;
        assert!(matches!(args.target().unwrap(), Target::S3 { .. }));
    }

    #[test]
    fn names_give_their_time() {
        assert_eq!(
            time_of("20261205T060007Z")
                .map(|t| t.0.to_string())
                .as_deref(),
            Some("2026-12-05T06:00:07Z")
        );
        assert_eq!(time_of("2026-12-05"), None);
    }

    /// A fake etcdutl: prints a status with revision 42.
    fn etcdutl(dir: &std::path::Path) -> String {
        let path = dir.join("etcdutl");
        std::fs::write(
            &path,
            "#!/bin/sh\necho '{\"hash\":1,\"revision\":42,\"totalKey\":9,\"totalSize\":2048}'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    fn args(dir: &std::path::Path, name: &str, retention: usize) -> BackupArgs {
        BackupArgs {
            snapshot: dir.join("snapshot.db"),
            name: name.into(),
            path: "tenants/demo".into(),
            retention,
            etcdutl: etcdutl(dir),
            keys: None,
            volume: Some(dir.join("volume")),
            volume_claim: Some("backups".into()),
            s3_endpoint: None,
            s3_bucket: None,
            s3_prefix: String::new(),
            s3_region: None,
            s3_ca: None,
            report: dir.join("report"),
        }
    }

    #[tokio::test]
    async fn a_backup_to_a_volume_is_verified_recorded_and_retained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("volume")).unwrap();
        let pages = vec![7u8; 1024];
        let mut snapshot = pages.clone();
        snapshot.extend_from_slice(&Sha256::digest(&pages));
        std::fs::write(dir.path().join("snapshot.db"), &snapshot).unwrap();
        for (i, name) in ["20261205T000000Z", "20261205T060000Z", "20261205T120000Z"]
            .iter()
            .enumerate()
        {
            let report = backup(&args(dir.path(), name, 2)).await;
            let Report::Succeeded { record, kept } = report else {
                panic!("{report:?}")
            };
            assert_eq!(record.revision, 42);
            assert_eq!(record.size_bytes, 1056);
            assert_eq!(record.sha256, hex::encode(Sha256::digest(&snapshot)));
            assert_eq!(
                record.location,
                format!("volume://backups/tenants/demo/{name}.db")
            );
            assert_eq!(kept.len(), (i + 1).min(2));
        }
        let left: Vec<String> = std::fs::read_dir(dir.path().join("volume/tenants/demo"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            left,
            [
                "20261205T060000Z.db",
                "20261205T060000Z.json",
                "20261205T120000Z.db",
                "20261205T120000Z.json"
            ]
        );
    }

    #[tokio::test]
    async fn a_damaged_snapshot_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("volume")).unwrap();
        std::fs::write(dir.path().join("snapshot.db"), vec![7u8; 1000]).unwrap();
        let report = backup(&args(dir.path(), "20261205T060000Z", 2)).await;
        let Report::Failed { reason, message } = report else {
            panic!("{report:?}")
        };
        assert_eq!(reason, "VerificationFailed");
        assert!(message.contains("truncated or damaged"), "{message}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("volume"))
                .unwrap()
                .count(),
            0
        );
    }
}
