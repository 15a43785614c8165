//! `nestor-operator guard`: the authorization guard beside every nested
//! API server (`nestor_controllers::model::guard` decides). It listens on
//! loopback in the API server's pod, so only that API server reaches it,
//! and it needs no credential: it reads nothing but the request.

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use nestor_controllers::model::guard;
use std::net::SocketAddr;
use tracing::info;

/// Serves `/authorize` (SubjectAccessReview, v1) and `/healthz` until
/// SIGTERM.
pub(crate) async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/authorize", post(authorize))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "authorization guard serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::server::shutdown_signal())
        .await?;
    Ok(())
}

async fn authorize(body: Bytes) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    let json = [("content-type", "application/json")];
    let request: SubjectAccessReview = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                json,
                br#"{"error":"the body is not a SubjectAccessReview"}"#.to_vec(),
            );
        }
    };
    let answer = guard::review(&request);
    if let (Some(status), Some(attributes)) = (&answer.status, &request.spec.resource_attributes)
        && status.denied == Some(true)
    {
        info!(
            user = request.spec.user.as_deref().unwrap_or_default(),
            verb = attributes.verb.as_deref().unwrap_or_default(),
            resource = attributes.resource.as_deref().unwrap_or_default(),
            name = attributes.name.as_deref().unwrap_or_default(),
            "denied"
        );
    }
    match serde_json::to_vec(&answer) {
        Ok(body) => (StatusCode::OK, json, body),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, json, b"{}".to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn ask(body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        let (code, _, bytes) = authorize(Bytes::from(body.to_string())).await;
        (code, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn answers_as_a_v1_webhook_authorizer() {
        let (code, answer) = ask(json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "tenant",
                "groups": ["nestor:cluster-admins:0"],
                "resourceAttributes": {
                    "group": "admissionregistration.k8s.io",
                    "resource": "validatingadmissionpolicies",
                    "verb": "delete",
                    "name": "nestor-pod-security-labels"
                }
            }
        }))
        .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(answer["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(answer["kind"], "SubjectAccessReview");
        assert_eq!(answer["status"]["allowed"], false);
        assert_eq!(answer["status"]["denied"], true);
        assert!(
            answer["status"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("nestor: ")
        );

        let (_, answer) = ask(json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": "tenant", "nonResourceAttributes": {"path": "/api", "verb": "get"}}
        }))
        .await;
        assert_eq!(answer["status"]["denied"], false);
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_review() {
        let (code, _, _) = authorize(Bytes::from_static(b"not json")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }
}
