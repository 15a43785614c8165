//! A client served by a test, for request-sequence tests of the drivers
//! and the apply engine: each request's method, path, content type and
//! accept header are recorded, each answered in turn.

use crate::client::context::{Context, Stores};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use std::sync::Arc;

pub(crate) type MockHandle =
    tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>;

/// A context whose client is served by the returned handle.
pub(crate) fn mock_context() -> (Context, MockHandle) {
    use kube::runtime::reflector::store::Writer;
    let (service, handle) = tower_test::mock::pair();
    let client = kube::Client::new(service, "default");
    let stores = Stores {
        secrets: Writer::default().as_reader(),
        config_maps: Writer::default().as_reader(),
        services: Writer::default().as_reader(),
        stateful_sets: Writer::default().as_reader(),
        deployments: Writer::default().as_reader(),
        network_policies: Writer::default().as_reader(),
        virtual_clusters: Writer::default().as_reader(),
        node_pools: Writer::default().as_reader(),
    };
    let reporter = kube::runtime::events::Reporter {
        controller: "nestor-operator".into(),
        instance: None,
    };
    let ctx = Context {
        client: client.clone(),
        stores,
        metrics: Arc::new(crate::client::metrics::Metrics::register(
            &mut Default::default(),
        )),
        recorder: kube::runtime::events::Recorder::new(client, reporter),
        settings: Default::default(),
        cluster_statuses: Default::default(),
        pool_statuses: Default::default(),
        nested: Default::default(),
    };
    (ctx, handle)
}

/// What the client asked: method, path and query, content type, accept.
pub(crate) type Asked = (String, String, String, String);

/// Answers the client's requests in turn with `responses` (status,
/// body), then hangs up, so that one more request fails; returns what
/// the client asked.
pub(crate) fn serve(
    mut handle: MockHandle,
    responses: Vec<(u16, serde_json::Value)>,
) -> tokio::task::JoinHandle<Vec<Asked>> {
    tokio::spawn(async move {
        let mut asked = Vec::new();
        for (status, body) in responses {
            let (request, send) = handle.next_request().await.expect("a request");
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            asked.push((
                request.method().to_string(),
                request.uri().to_string(),
                header(http::header::CONTENT_TYPE),
                header(http::header::ACCEPT),
            ));
            let body = kube::client::Body::from(serde_json::to_vec(&body).unwrap());
            send.send_response(http::Response::builder().status(status).body(body).unwrap());
        }
        asked
    })
}

/// An API server's refusal.
pub(crate) fn failure(code: u16, reason: &str, message: &str) -> (u16, serde_json::Value) {
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
        "status": "Failure", "reason": reason, "code": code, "message": message});
    (code, status)
}

/// A managed-fields entry of `manager`, written at `time`.
pub(crate) fn entry(manager: &str, time: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        time: Some(Time(time.parse().unwrap())),
        subresource: subresource.map(Into::into),
        operation: Some("Update".into()),
        ..ManagedFieldsEntry::default()
    }
}
