//! Health and metrics endpoints, CRD readiness, leader election and
//! shutdown signals.

use crate::args::Args;
use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::wait::{await_condition, conditions};
use kube_lease_manager::{DurationSeconds, LeaseManagerBuilder};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{error, info};

/// Readiness: the CRDs are established and the operator can serve.
#[derive(Clone, Default)]
pub(crate) struct Health(Arc<AtomicBool>);

impl Health {
    pub(crate) fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Health,
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub(crate) async fn serve(addr: SocketAddr, registry: Registry, health: Health) {
    let state = AppState {
        registry: Arc::new(registry),
        health,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            info!(%addr, "serving metrics and health");
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "metrics server stopped");
            }
        }
        Err(e) => error!(%addr, error = %e, "cannot bind the metrics address"),
    }
}

async fn metrics(
    State(state): State<AppState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "encoding failed".into(),
        ),
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.health.0.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for CRDs")
    }
}

/// Waits until Nestor's CRDs are established.
pub(crate) async fn wait_for_crds(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["virtualclusters.nestor.dev", "nodepools.nestor.dev"] {
        info!(crd = name, "waiting for the CRD to be established");
        await_condition(crds.clone(), name, conditions::is_crd_established())
            .await
            .with_context(|| format!("waiting for CRD {name}"))?;
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C. (Not an `async fn`: the controller
/// runtime needs the future to be `Sync`, which only an explicit bound says.)
#[allow(clippy::manual_async_fn)]
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + Sync + 'static {
    async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received; shutting down"),
            _ = tokio::signal::ctrl_c() => info!("interrupt received; shutting down"),
        }
    }
}

/// A held leader-election Lease.
pub(crate) struct Leadership {
    channel: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

/// Blocks until this replica holds the Lease.
pub(crate) async fn acquire_leadership(
    client: &kube::Client,
    args: &Args,
) -> anyhow::Result<Leadership> {
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(args.identity())
        .with_duration(args.lease_duration as DurationSeconds)
        .with_grace((args.lease_duration / 3).max(1) as DurationSeconds)
        .build()
        .await
        .context("setting up leader election")?;
    let (mut channel, task) = manager.watch().await;
    info!(lease = %args.lease_name, "waiting to become the leader");
    while !*channel.borrow_and_update() {
        channel.changed().await.context("leader election stopped")?;
    }
    info!("became the leader");
    Ok(Leadership { channel, task })
}

impl Leadership {
    /// Runs `work` while this replica leads. Losing the Lease ends the
    /// process with an error, so that nothing reconciles without it; the
    /// end of `work` releases the Lease.
    pub(crate) async fn run_while_leader(
        mut self,
        work: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let lost = async {
            loop {
                if self.channel.changed().await.is_err() || !*self.channel.borrow_and_update() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = work => {}
            _ = lost => anyhow::bail!("lost the leader-election Lease; exiting so that only the leader reconciles"),
        }
        drop(self.channel);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(manager))) => {
                let _ = manager.release().await;
                info!("released the leader-election Lease");
            }
            _ => info!("leader-election task did not end in time"),
        }
        Ok(())
    }
}
