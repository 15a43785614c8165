//! The operator's own metrics: its writes, in total and by verb and kind.

use anyhow::Result;
use nestor_e2e::operator::sum_samples;
use std::collections::BTreeMap;

/// The operator's writes so far, by verb and kind.
pub(crate) fn writes_by_kind(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("nestor_api_writes_total{"))
        .map(|line| {
            let labels = line
                .split('{')
                .nth(1)
                .and_then(|l| l.split('}').next())
                .unwrap_or_default()
                .to_string();
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            (labels, value)
        })
        .collect()
}

/// The operator's writes so far.
pub(crate) async fn operator_writes(port: u16) -> Result<f64> {
    Ok(sum_samples(
        &operator_metrics(port).await?,
        "nestor_api_writes_total",
        "",
    ))
}

pub(crate) async fn operator_metrics(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}
