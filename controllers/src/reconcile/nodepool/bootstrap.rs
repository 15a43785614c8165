//! A pool's bootstrap token: issued into its host Secret for the
//! cluster's current CA, renewed before it expires, and installed in the
//! nested cluster (the token it replaced deleted there).

use crate::build::mint::Mint;
use crate::build::node::bootstrap::{
    BootstrapToken, IssuedToken, PREVIOUS_TOKEN_ID, TOKEN_EXPIRES, TOKEN_ID,
    desired_bootstrap_secret, nested_bootstrap_token_secret, token_due,
};
use crate::build::pki_secrets::bundle_from_secret;
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::secrets::{annotate_secret, apply_secret, read_secret};
use crate::client::{nested, nested_nodes};
use crate::model::hash::inputs_hash;
use crate::model::names::{ClusterNames, INPUTS_HASH, NESTED_INSTALLED, PoolNames};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use nestor_crds::NodePool;
use nestor_crds::node_contract as contract;
use tracing::info;

/// Makes sure the pool's bootstrap Secret holds a token for the current CA
/// that is not yet due for renewal. Returns the token when it still has to
/// be installed in the nested cluster.
pub(super) async fn ensure_bootstrap_secret(
    ctx: &Context,
    pool: &NodePool,
    names: &ClusterNames,
    ca_fp: &str,
) -> Result<Option<IssuedToken>> {
    let pn = PoolNames::new(pool);
    let cached = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&pn.bootstrap_secret()).within(&pn.namespace));
    let empty = Default::default();
    let annotations = cached.as_ref().map_or(&empty, |s| s.annotations());
    let now = k8s_openapi::jiff::Timestamp::now();
    let current = annotations.get(INPUTS_HASH).map(String::as_str)
        == Some(inputs_hash(["bootstrap", ca_fp]).as_str())
        && !token_due(annotations, now);
    let token_id = annotations.get(TOKEN_ID).cloned();
    if current && let Some(id) = &token_id {
        if annotations.get(NESTED_INSTALLED) == Some(&IssuedToken::installed_hash(ca_fp, id)) {
            return Ok(None);
        }
        // Read the token back to install it.
        let secret = read_secret(ctx, &pn.namespace, &pn.bootstrap_secret()).await?;
        let text = |s: &Secret, key: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let expires = annotations
            .get(TOKEN_EXPIRES)
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        if let (Some((Some(id), Some(secret))), Some(expires)) = (
            secret.map(|s| {
                (
                    text(&s, contract::TOKEN_ID),
                    text(&s, contract::TOKEN_SECRET),
                )
            }),
            expires,
        ) {
            return Ok(Some(IssuedToken {
                token: BootstrapToken { id, secret },
                expires,
                previous_id: annotations.get(PREVIOUS_TOKEN_ID).cloned(),
            }));
        }
    }
    let ca = read_secret(ctx, &names.namespace, &names.ca_secret())
        .await?
        .and_then(|s| bundle_from_secret(&s))
        .ok_or_else(|| Error::DamagedCa {
            namespace: names.namespace.clone(),
            name: names.ca_secret(),
        })?;
    let issued = IssuedToken::issue(&mut Mint::at(now), token_id);
    apply_secret(
        ctx,
        &desired_bootstrap_secret(pool, names, &issued, &ca.cluster.cert_pem, ca_fp),
    )
    .await?;
    info!(pool = %pn.pool, namespace = %pn.namespace, token = %issued.token.id, expires = %issued.expires, "issued a bootstrap token");
    Ok(Some(issued))
}

/// Writes the pool's bootstrap token into the nested cluster, deletes the
/// token it replaced, then records that on the host Secret.
pub(super) async fn install_in_nested_cluster(
    ctx: &Context,
    client: &kube::Client,
    pool: &NodePool,
    names: &ClusterNames,
    issued: &IssuedToken,
    ca_fp: &str,
) -> Result<()> {
    let pn = PoolNames::new(pool);
    // The node RBAC comes with the cluster's add-ons (see virtualcluster).
    nested::apply(
        ctx,
        client,
        names,
        &nested_bootstrap_token_secret(&pn.pool, issued),
    )
    .await?;
    if let Some(previous) = issued
        .previous_id
        .as_deref()
        .filter(|id| *id != issued.token.id)
    {
        nested_nodes::delete_bootstrap_token(ctx, client, names, previous).await?;
    }
    let installed_hash = IssuedToken::installed_hash(ca_fp, &issued.token.id);
    annotate_secret(
        ctx,
        &pn.namespace,
        &pn.bootstrap_secret(),
        NESTED_INSTALLED,
        &installed_hash,
    )
    .await?;
    Ok(())
}
