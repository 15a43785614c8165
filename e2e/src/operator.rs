//! The real operator binary, run as a separate process against a test bed.

use crate::paths;
use crate::process::{Lifetime, Proc, spawn};
use crate::testbed::free_port;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running operator process.
pub struct Operator {
    proc: Proc,
    pub name: String,
    pub metrics_port: u16,
    pub log: PathBuf,
}

/// How to start an operator.
pub struct OperatorOptions<'a> {
    /// Its identity (and log file name).
    pub name: &'a str,
    /// The kubeconfig it runs with.
    pub kubeconfig: &'a Path,
    /// The namespace it watches.
    pub watch_namespace: &'a str,
    /// Lease name and namespace.
    pub lease: (&'a str, &'a str),
    /// Seconds a lease lasts.
    pub lease_duration: u64,
    /// Where its log goes.
    pub log_dir: &'a Path,
    /// Settings beyond the defaults, as environment variables (`NESTOR_...`).
    pub env: &'a [(&'a str, &'a str)],
}

impl Operator {
    pub fn start(opts: &OperatorOptions) -> Result<Self> {
        let metrics_port = free_port()?;
        let log = opts.log_dir.join(format!("operator-{}.log", opts.name));
        let args = vec![
            "--log-format=text".to_string(),
            "--log-level=info,nestor_controllers=debug".into(),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            "--leader-election=true".into(),
            format!("--lease-name={}", opts.lease.0),
            format!("--lease-namespace={}", opts.lease.1),
            format!("--lease-duration={}", opts.lease_duration),
            format!("--identity={}", opts.name),
            format!("--watch-namespace={}", opts.watch_namespace),
            "--nested-route=published".into(),
        ];
        let proc = spawn(
            &format!("operator-{}", opts.name),
            &paths::operator_binary()?,
            &args,
            &std::iter::once(("KUBECONFIG", opts.kubeconfig.display().to_string()))
                .chain(opts.env.iter().map(|(k, v)| (*k, v.to_string())))
                .collect::<Vec<_>>(),
            &log,
            Lifetime::Tied,
        )?;
        Ok(Self {
            proc,
            name: opts.name.into(),
            metrics_port,
            log,
        })
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.proc.alive()
    }

    /// GET on the operator's HTTP port.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Waits for `/readyz` (the CRDs are established).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.alive() {
                bail!(
                    "operator {} exited; log: {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("operator {} not ready within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let (code, body) = self.get("/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// The sum of every sample of `metric` whose labels contain `filter`.
    pub async fn metric_sum(&self, metric: &str, filter: &str) -> Result<f64> {
        Ok(sum_samples(&self.metrics().await?, metric, filter))
    }

    /// SIGTERM and wait (graceful).
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(15));
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}

/// Sums the samples of one metric family in Prometheus text.
pub fn sum_samples(text: &str, metric: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name == metric && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
