//! An S3-compatible store: versitygw (posix backend), built
//! from its upstream module, with a root user whose keys are made up per
//! start. Its buckets are directories of its root, and each object is a
//! file there, so a test reads what was written without going through S3.

use crate::paths;
use crate::process::{Lifetime, Proc, spawn};
use crate::testbed::free_port;
use anyhow::{Result, bail};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A running store; stopped on drop.
pub struct S3Store {
    /// `http://<address>:<port>`.
    pub endpoint: String,
    /// The posix root: one directory per bucket.
    pub root: PathBuf,
    pub access_key_id: String,
    pub secret_access_key: String,
    process: Proc,
}

impl S3Store {
    /// Starts a store on loopback with its data and log under `dir`.
    pub fn start(dir: &Path, lifetime: Lifetime) -> Result<Self> {
        Self::start_on(dir, "127.0.0.1", lifetime)
    }

    /// Starts a store on `address` (the machine's end of the link to the
    /// test bed's node, for pods to reach) with its data and log under
    /// `dir`.
    pub fn start_on(dir: &Path, address: &str, lifetime: Lifetime) -> Result<Self> {
        let root = dir.join("s3");
        std::fs::create_dir_all(&root)?;
        let port = free_port()?;
        let stamp = std::process::id();
        let access_key_id = format!("nestortest{stamp}");
        let secret_access_key = format!("secret-{stamp}-{}", port);
        let args = vec![
            format!("--port={address}:{port}"),
            "--region=us-east-1".into(),
            "--keep-alive".into(),
            "--quiet".into(),
            "posix".into(),
            root.display().to_string(),
        ];
        let envs = [
            ("ROOT_ACCESS_KEY_ID", access_key_id.clone()),
            ("ROOT_SECRET_ACCESS_KEY", secret_access_key.clone()),
        ];
        let process = spawn(
            "versitygw",
            &paths::versitygw_binary()?,
            &args,
            &envs,
            &dir.join("versitygw.log"),
            lifetime,
        )?;
        let store = Self {
            endpoint: format!("http://{address}:{port}"),
            root,
            access_key_id,
            secret_access_key,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((address, port)).is_err() {
            if Instant::now() > deadline {
                bail!("versitygw did not listen on {address}:{port} within 30s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(store)
    }

    /// Makes bucket `name` (a directory of the root, which the posix
    /// backend serves as a bucket of the root user).
    pub fn make_bucket(&self, name: &str) -> Result<()> {
        std::fs::create_dir_all(self.root.join(name))?;
        Ok(())
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }
}
