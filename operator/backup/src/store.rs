//! A backup destination, a volume or an S3-compatible bucket, behind one
//! object-store interface (`object_store`), and why a request to it
//! failed, in the reasons the status gives.

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use nestor_model::model::backup::FailureReason;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Why a step failed: a reason of the status and a message that names no
/// secret.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) reason: FailureReason,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Where backups go, as the Job's flags say.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Volume {
        /// Where the claim is mounted.
        dir: PathBuf,
        claim: String,
    },
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
        region: String,
        /// CA certificates (PEM) to verify an `https` endpoint with.
        ca: Option<PathBuf>,
    },
}

/// The S3 credentials, from the Job's environment. Never printed.
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
}

/// An open destination: the store, the key every backup of this cluster
/// starts with, and how its locations are written.
pub(crate) struct Destination {
    store: Arc<dyn ObjectStore>,
    base: String,
    location: String,
    /// Values an error text must not carry.
    secrets: Vec<String>,
    /// A volume, which has no buckets.
    volume: bool,
}

impl Destination {
    /// Opens `target` for the backups under `path` (`<namespace>/<cluster>`).
    pub(crate) fn open(
        target: &Target,
        path: &str,
        credentials: Option<Credentials>,
    ) -> Result<Self, Failure> {
        match target {
            Target::Volume { dir, claim } => {
                let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    Failure::new(
                        FailureReason::BackupFailed,
                        format!("the volume is not mounted at {}: {e}", dir.display()),
                    )
                })?;
                Ok(Self {
                    store: Arc::new(store),
                    base: path.to_string(),
                    location: format!("volume://{claim}/"),
                    secrets: Vec::new(),
                    volume: true,
                })
            }
            Target::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                ca,
            } => {
                let credentials = credentials.ok_or_else(|| {
                    Failure::new(
                        FailureReason::AccessDenied,
                        "no S3 credentials in the Job's environment",
                    )
                })?;
                // The Job's image has no system trust store: an https
                // endpoint is verified with the CA Secret's certificates
                // alone, or else with the Mozilla roots built in.
                let mut options = ClientOptions::new()
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_no_system_certificates(true)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300));
                if ca.is_none() {
                    for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
                        if let Ok(certificate) = object_store::Certificate::from_der(root) {
                            options = options.with_root_certificate(certificate);
                        }
                    }
                }
                if let Some(ca) = ca {
                    let pem = std::fs::read(ca).map_err(|e| {
                        Failure::new(
                            FailureReason::EndpointUnreachable,
                            format!("the CA bundle {} cannot be read: {e}", ca.display()),
                        )
                    })?;
                    for certificate in
                        object_store::Certificate::from_pem_bundle(&pem).map_err(|_| {
                            Failure::new(
                                FailureReason::EndpointUnreachable,
                                "the CA Secret's ca.crt holds no PEM certificate",
                            )
                        })?
                    {
                        options = options.with_root_certificate(certificate);
                    }
                }
                let retry = RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(30),
                    ..RetryConfig::default()
                };
                let store = AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(&credentials.access_key_id)
                    .with_secret_access_key(&credentials.secret_access_key)
                    .with_virtual_hosted_style_request(false)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| {
                        Failure::new(
                            FailureReason::BackupFailed,
                            format!("the S3 client could not be built: {e}"),
                        )
                    })?;
                Ok(Self {
                    store: Arc::new(store),
                    base: format!("{prefix}{path}"),
                    location: format!("s3://{bucket}/"),
                    secrets: vec![credentials.access_key_id, credentials.secret_access_key],
                    volume: false,
                })
            }
        }
    }

    fn key(&self, file: &str) -> Key {
        Key::from(format!("{}/{file}", self.base))
    }

    /// Where `file` is, as the status says it.
    pub(crate) fn location(&self, file: &str) -> String {
        format!("{}{}/{file}", self.location, self.base)
    }

    fn failure(&self, during: &str, e: &object_store::Error) -> Failure {
        self.on_this_store(classify(during, e, &self.secrets))
    }

    /// A volume has no buckets: what S3 calls a missing bucket is a plain
    /// failure there.
    fn on_this_store(&self, mut failure: Failure) -> Failure {
        if self.volume && failure.reason == FailureReason::BucketNotFound {
            failure.reason = FailureReason::BackupFailed;
        }
        failure
    }

    /// Writes the file at `from` as `file`, in parts.
    pub(crate) async fn put_file(&self, file: &str, from: &Path) -> Result<(), Failure> {
        let writing = format!("writing {}", self.location(file));
        let mut source = tokio::fs::File::open(from).await.map_err(|e| {
            Failure::new(
                FailureReason::BackupFailed,
                format!("reading the snapshot: {e}"),
            )
        })?;
        let mut writer = BufWriter::with_capacity(self.store.clone(), self.key(file), 16 << 20);
        let copied = tokio::io::copy(&mut source, &mut writer).await;
        let closed = match copied {
            Ok(_) => writer.shutdown().await,
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        };
        closed.map_err(|e| self.on_this_store(io_failure(&writing, &e, &self.secrets)))
    }

    /// Writes `bytes` as `file`.
    pub(crate) async fn put_bytes(&self, file: &str, bytes: Vec<u8>) -> Result<(), Failure> {
        self.store
            .put(&self.key(file), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.failure(&format!("writing {}", self.location(file)), &e))
    }

    /// The size and SHA-256 of `file` as the destination returns it.
    pub(crate) async fn read_back(&self, file: &str) -> Result<(u64, String), Failure> {
        let reading = format!("reading back {}", self.location(file));
        let got = self
            .store
            .get(&self.key(file))
            .await
            .map_err(|e| self.failure(&reading, &e))?;
        let mut stream = got.into_stream();
        let (mut size, mut hash) = (0u64, Sha256::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failure(&reading, &e))?;
            size += chunk.len() as u64;
            hash.update(&chunk);
        }
        Ok((size, hex::encode(hash.finalize())))
    }

    /// The names of this cluster's backups at the destination (each a
    /// `<name>.db`), newest first.
    pub(crate) async fn names(&self) -> Result<Vec<String>, Failure> {
        let prefix = Key::from(self.base.clone());
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.failure("listing the backups", &e))?;
        let mut names: Vec<String> = listed
            .iter()
            .filter_map(|meta| {
                meta.location
                    .filename()?
                    .strip_suffix(".db")
                    .map(str::to_string)
            })
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        names.dedup();
        Ok(names)
    }

    /// Deletes backup `name` (its snapshot, its keys and its record).
    pub(crate) async fn delete(&self, name: &str) -> Result<(), Failure> {
        for file in [
            format!("{name}.db"),
            format!("{name}.keys.json"),
            format!("{name}.json"),
        ] {
            match self.store.delete(&self.key(&file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(self.failure(&format!("deleting {}", self.location(&file)), &e));
                }
            }
        }
        Ok(())
    }
}

/// At most 300 characters of `text`, with `secrets` cut out.
fn redacted(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "<redacted>");
    }
    out.chars().take(300).collect()
}

/// The reason a request failed, from the error and its causes.
fn classify(during: &str, e: &object_store::Error, secrets: &[String]) -> Failure {
    let reason = match e {
        object_store::Error::NotFound { .. } => FailureReason::BucketNotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => FailureReason::AccessDenied,
        other => reason_from_causes(other),
    };
    explained(reason, during, &e.to_string(), secrets)
}

/// `during: what the reason means (the error, redacted)`.
fn explained(reason: FailureReason, during: &str, error: &str, secrets: &[String]) -> Failure {
    let what = match reason {
        FailureReason::BucketNotFound => "the bucket does not exist",
        FailureReason::AccessDenied => "the endpoint refused the credentials",
        FailureReason::EndpointUnreachable => {
            "the endpoint did not answer or its certificate did not verify"
        }
        FailureReason::VolumeFull => "the volume is full",
        _ => "the request failed",
    };
    Failure::new(
        reason,
        format!("{during}: {what} ({})", redacted(error, secrets)),
    )
}

fn reason_from_causes(e: &(dyn std::error::Error + 'static)) -> FailureReason {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull {
                return FailureReason::VolumeFull;
            }
            if matches!(
                io.kind(),
                std::io::ErrorKind::NotConnected | std::io::ErrorKind::TimedOut
            ) {
                return FailureReason::EndpointUnreachable;
            }
        }
        if let Some(http) = c.downcast_ref::<object_store::client::HttpError>()
            && matches!(
                http.kind(),
                object_store::client::HttpErrorKind::Connect
                    | object_store::client::HttpErrorKind::Timeout
            )
        {
            return FailureReason::EndpointUnreachable;
        }
        let text = c.to_string();
        if text.contains("certificate") || text.contains("dns error") {
            return FailureReason::EndpointUnreachable;
        }
        if text.contains("NoSuchBucket") {
            return FailureReason::BucketNotFound;
        }
        if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
        {
            return FailureReason::AccessDenied;
        }
        cause = c.source();
    }
    FailureReason::BackupFailed
}

/// The reason an I/O step of a multipart write failed.
fn io_failure(during: &str, e: &std::io::Error, secrets: &[String]) -> Failure {
    let reason = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<object_store::Error>())
    {
        Some(object_store::Error::NotFound { .. }) => FailureReason::BucketNotFound,
        Some(
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
        ) => FailureReason::AccessDenied,
        _ => match e.kind() {
            std::io::ErrorKind::StorageFull => FailureReason::VolumeFull,
            std::io::ErrorKind::PermissionDenied => FailureReason::AccessDenied,
            std::io::ErrorKind::NotFound => FailureReason::BucketNotFound,
            std::io::ErrorKind::NotConnected | std::io::ErrorKind::TimedOut => {
                FailureReason::EndpointUnreachable
            }
            _ => reason_from_causes(e),
        },
    };
    explained(reason, during, &e.to_string(), secrets)
}

/// The S3 credentials from the environment variables the Job sets.
pub(crate) fn credentials_from_env() -> anyhow::Result<Credentials> {
    use nestor_model::build::backup::{ACCESS_KEY_ID_ENV, SECRET_ACCESS_KEY_ENV};
    Ok(Credentials {
        access_key_id: std::env::var(ACCESS_KEY_ID_ENV)
            .with_context(|| format!("{ACCESS_KEY_ID_ENV} is not set"))?,
        secret_access_key: std::env::var(SECRET_ACCESS_KEY_ENV)
            .with_context(|| format!("{SECRET_ACCESS_KEY_ENV} is not set"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_volume_destination_writes_reads_back_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::Volume {
            dir: dir.path().to_path_buf(),
            claim: "backups".into(),
        };
        let d = Destination::open(&target, "tenants/demo", None).unwrap();
        let source = dir.path().join("source.db");
        tokio::fs::write(&source, b"snapshot bytes").await.unwrap();
        for name in ["20261205T060000Z", "20261205T120000Z"] {
            d.put_file(&format!("{name}.db"), &source).await.unwrap();
            d.put_bytes(&format!("{name}.json"), b"{}".to_vec())
                .await
                .unwrap();
        }
        assert!(
            dir.path()
                .join("tenants/demo/20261205T060000Z.db")
                .is_file()
        );
        let (size, sha) = d.read_back("20261205T120000Z.db").await.unwrap();
        assert_eq!(size, 14);
        assert_eq!(sha, hex::encode(Sha256::digest(b"snapshot bytes")));
        assert_eq!(
            d.names().await.unwrap(),
            ["20261205T120000Z", "20261205T060000Z"]
        );
        let missing = d.read_back("20261205T000000Z.db").await.unwrap_err();
        assert_eq!(
            missing.reason,
            FailureReason::BackupFailed,
            "a volume has no bucket to miss"
        );
        d.delete("20261205T060000Z").await.unwrap();
        assert_eq!(d.names().await.unwrap(), ["20261205T120000Z"]);
        assert_eq!(
            d.location("20261205T120000Z.db"),
            "volume://backups/tenants/demo/20261205T120000Z.db"
        );
    }

    #[test]
    fn error_texts_lose_the_secrets() {
        let secrets = vec!["AKIDSECRETID".to_string(), "s3cr3t-key".to_string()];
        let text = redacted(
            "<AWSAccessKeyId>AKIDSECRETID</AWSAccessKeyId> sig s3cr3t-key",
            &secrets,
        );
        assert!(
            !text.contains("AKIDSECRETID") && !text.contains("s3cr3t-key"),
            "{text}"
        );
    }
}
