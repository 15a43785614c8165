//! What the tool checks of an etcd snapshot before it goes anywhere: the
//! integrity hash etcd appends to it, what `etcdutl` reads of it, and its
//! size and SHA-256.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// The size of the hash etcd appends to a snapshot it streams: a snapshot
/// holds database pages of 512 bytes and, after them, the SHA-256 of those
/// pages (what `etcdutl snapshot restore` checks too).
const TRAILER: u64 = 32;
const PAGE: u64 = 512;

/// A snapshot's size and SHA-256 (of the whole file), and whether the hash
/// etcd appended matches the pages before it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Digest256 {
    pub(crate) size: u64,
    pub(crate) sha256: String,
    pub(crate) trailer_ok: bool,
}

/// Reads `path` once, hashing the pages and the whole file.
pub(crate) async fn digest(path: &Path) -> Result<Digest256> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().await?.len();
    let has_trailer = size > TRAILER && (size - TRAILER).is_multiple_of(PAGE);
    let pages_end = if has_trailer { size - TRAILER } else { size };
    let (mut whole, mut pages) = (Sha256::new(), Sha256::new());
    let mut trailer = Vec::with_capacity(TRAILER as usize);
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        whole.update(chunk);
        let in_pages = (pages_end.saturating_sub(at) as usize).min(n);
        pages.update(&chunk[..in_pages]);
        trailer.extend_from_slice(&chunk[in_pages..]);
        at += n as u64;
    }
    let trailer_ok = has_trailer && pages.finalize().as_slice() == trailer.as_slice();
    Ok(Digest256 {
        size,
        sha256: hex::encode(whole.finalize()),
        trailer_ok,
    })
}

/// The revision `etcdutl snapshot status` reads from the snapshot: the
/// snapshot opens as an etcd database.
pub(crate) async fn revision(etcdutl: &str, path: &Path) -> Result<i64> {
    let output = tokio::process::Command::new(etcdutl)
        .args(["snapshot", "status", "--write-out=json"])
        .arg(path)
        .output()
        .await
        .with_context(|| format!("running {etcdutl}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "etcdutl snapshot status failed: {}",
            stderr.lines().last().unwrap_or("no message")
        );
    }
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("etcdutl snapshot status printed no JSON")?;
    status["revision"]
        .as_i64()
        .context("etcdutl snapshot status reported no revision")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn written(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.db");
        tokio::fs::write(&path, bytes).await.unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn the_appended_hash_is_checked_and_a_truncated_snapshot_fails_it() {
        let pages: Vec<u8> = (0..4 * PAGE).map(|i| (i % 251) as u8).collect();
        let mut snapshot = pages.clone();
        snapshot.extend_from_slice(&Sha256::digest(&pages));
        let (_dir, path) = written(&snapshot).await;
        let d = digest(&path).await.unwrap();
        assert!(d.trailer_ok);
        assert_eq!(d.size, 4 * PAGE + TRAILER);
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&snapshot)));
        // Cut short, or one byte changed: the check fails.
        let (_dir, path) = written(&snapshot[..snapshot.len() - 100]).await;
        assert!(!digest(&path).await.unwrap().trailer_ok);
        let mut changed = snapshot.clone();
        changed[700] ^= 1;
        let (_dir, path) = written(&changed).await;
        assert!(!digest(&path).await.unwrap().trailer_ok);
        let (_dir, path) = written(&[]).await;
        assert!(!digest(&path).await.unwrap().trailer_ok);
    }
}
