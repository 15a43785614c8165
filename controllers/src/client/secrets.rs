//! Secret I/O. The caches hold Secrets' metadata only; their data is read
//! only when a decision needs it, and every write asks back metadata only,
//! so keys just sent stay out of this process's memory. Errors keep only
//! the HTTP status, never the server's message (which may quote the data).

use crate::client::apply::{Child, changed_by_someone_else};
use crate::client::context::Context;
use crate::client::error::{Error, Result, code_and_reason};
use crate::model::names::{ClusterNames, selector_string};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PartialObjectMeta};
use std::collections::BTreeMap;

/// Applies a Secret Nestor decided to (re)issue, adopting first what a
/// create gave Nestor. Errors keep only the HTTP status, never the
/// server's message. Every response carries only metadata: the keys just
/// sent stay out of this process's memory.
pub async fn apply_secret(ctx: &Context, secret: &Secret) -> Result<()> {
    let child = Child::of::<Secret>(ctx, &secret.metadata);
    if let Some(live) = child.get::<PartialObjectMeta<Secret>>().await? {
        child
            .adopt::<PartialObjectMeta<Secret>>(&live.metadata)
            .await?;
    }
    child
        .apply::<PartialObjectMeta<Secret>, _>(secret)
        .await
        .map(drop)
}

/// Creates a Secret that must not exist yet. Returns false when it already
/// exists (another writer, or a cache that has not seen it): nothing is
/// overwritten. Like an apply, the response carries only metadata.
pub async fn create_secret(ctx: &Context, secret: &Secret) -> Result<bool> {
    // Serializing a k8s-openapi object cannot fail.
    let body = serde_json::to_vec(secret).expect("a Secret serializes");
    Child::of::<Secret>(ctx, &secret.metadata)
        .create::<PartialObjectMeta<Secret>>(body)
        .await
        .map(|created| created.is_some())
}

/// Reads a Secret with its data (the caches hold none). Errors keep only the
/// HTTP status.
/// Sets one annotation on a Secret (a merge patch: its data is neither
/// read nor sent).
pub async fn annotate_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.metrics.write("patch", "Secret");
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(
        name,
        &crate::model::names::patch_params(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map_err(|e| {
        let (code, reason) = code_and_reason(&e);
        Error::WriteSecret {
            namespace: namespace.into(),
            name: name.into(),
            code,
            reason,
        }
    })?;
    Ok(())
}

pub async fn read_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name).await.map_err(|e| {
        let (code, reason) = code_and_reason(&e);
        Error::ReadSecret {
            namespace: namespace.into(),
            name: name.into(),
            code,
            reason,
        }
    })
}

/// What the API server says of one of a cluster's Secrets.
pub struct LiveSecret {
    pub annotations: BTreeMap<String, String>,
    /// Written by someone other than Nestor since Nestor last wrote it.
    pub edited: bool,
}

/// Every Secret of a cluster, by name, from the API server (metadata
/// only).
pub async fn cluster_secrets_metadata(
    ctx: &Context,
    names: &ClusterNames,
) -> Result<BTreeMap<String, LiveSecret>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let selector = selector_string(&names.owned_selector());
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            let (code, reason) = code_and_reason(&e);
            Error::ReadSecret {
                namespace: names.namespace.clone(),
                name: format!("{selector} (list)"),
                code,
                reason,
            }
        })?;
    Ok(list
        .items
        .into_iter()
        .map(|m| {
            let edited = changed_by_someone_else(&m.metadata);
            let live = LiveSecret {
                annotations: m.metadata.annotations.unwrap_or_default(),
                edited,
            };
            (m.metadata.name.unwrap_or_default(), live)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::mock::{failure, mock_context, serve};

    #[tokio::test]
    async fn a_refused_secret_write_keeps_only_the_status() {
        let (ctx, handle) = mock_context();
        let refused = failure(422, "Invalid", "data[tls.key]: c2VjcmV0LWtleQ== is invalid");
        let server = serve(handle, vec![failure(404, "NotFound", ""), refused]);
        let mut secret = Secret::default();
        secret.metadata.name = Some("vc-apiserver-certs".into());
        secret.metadata.namespace = Some("ns".into());
        let error = apply_secret(&ctx, &secret).await.unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(
            matches!(error, Error::WriteSecret { code: 422, .. }),
            "{text}"
        );
        assert!(!text.contains("c2VjcmV0LWtleQ"), "{text}");
        let methods: Vec<_> = server.await.unwrap().into_iter().map(|a| a.0).collect();
        assert_eq!(
            methods,
            ["GET", "PATCH"],
            "nothing to adopt: applied at once"
        );
    }
}
