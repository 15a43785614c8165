//! Encryption at rest: the key ring's Secret is written when the spec asks
//! for a new key or a rotation has been migrated ([`crate::build::encryption`]);
//! once every API server runs with a new key, every nested Secret is
//! rewritten with it.

use crate::build::encryption::{
    GENERATIONS, KeyRing, MIGRATED, desired_encryption_secret, parse_generations,
};
use crate::build::mint::Mint;
use crate::client::apply::changed_by_someone_else;
use crate::client::context::Context;
use crate::client::error::Result;
use crate::client::nested;
use crate::client::secrets::{annotate_secret, apply_secret, read_secret};
use crate::model::hash::inputs_hash;
use crate::model::inputs::ClusterInputs;
use crate::model::status::Rollout;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use nestor_crds::VirtualCluster;
use tracing::{info, warn};

/// The generations the cached Secret lists, and the migrated one.
fn cached_state(ctx: &Context, inputs: &ClusterInputs) -> Option<(Vec<i64>, Option<i64>, bool)> {
    let names = &inputs.names;
    let cached = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&names.encryption_secret()).within(&names.namespace))?;
    let annotations = cached.annotations();
    let generations = parse_generations(annotations.get(GENERATIONS)?);
    let migrated = annotations.get(MIGRATED).and_then(|m| m.parse().ok());
    Some((
        generations,
        migrated,
        changed_by_someone_else(&cached.metadata),
    ))
}

/// Makes sure the key ring holds what the spec asks for; returns its
/// revision (a hash of its generations, for the API server's pods).
pub(super) async fn ensure_encryption(ctx: &Context, inputs: &ClusterInputs<'_>) -> Result<String> {
    let wanted = inputs.vc.spec.api_server.encryption_key_generation;
    if let Some((generations, migrated, edited)) = cached_state(ctx, inputs) {
        let newest = generations.first().copied();
        let add = newest < Some(wanted) && (generations.len() <= 1 || migrated == newest);
        let drop = generations.len() > 1 && migrated == newest;
        if !generations.is_empty() && !add && !drop && !edited {
            return Ok(inputs_hash(generations.iter().map(|g| g.to_string())));
        }
    }
    let names = &inputs.names;
    let current = read_secret(ctx, &names.namespace, &names.encryption_secret()).await?;
    let migrated = current
        .as_ref()
        .and_then(|s| s.annotations().get(MIGRATED))
        .and_then(|m| m.parse().ok());
    let ring = current
        .as_ref()
        .map(KeyRing::from_secret)
        .unwrap_or_default()
        .next(
            wanted,
            migrated,
            &mut Mint::at(k8s_openapi::jiff::Timestamp::now()),
        );
    apply_secret(ctx, &desired_encryption_secret(inputs, &ring, migrated)).await?;
    info!(cluster = %names.cluster, namespace = %names.namespace, keys = ?ring, "wrote the encryption key ring");
    Ok(ring.revision())
}

/// Whether Secrets still wait to be rewritten with the newest key (see
/// [`migrate_when_rolled_out`]). A rewrite that fails now is tried again
/// shortly; it holds nothing else up.
pub(super) async fn migrating(
    ctx: &Context,
    vc: &VirtualCluster,
    inputs: &ClusterInputs<'_>,
    apiserver: &Rollout,
) -> bool {
    migrate_when_rolled_out(ctx, vc, inputs, apiserver)
        .await
        .unwrap_or_else(|e| {
            let names = &inputs.names;
            warn!(cluster = %names.cluster, namespace = %names.namespace, error = %e, "rewriting the nested Secrets with the new encryption key failed");
            true
        })
}

/// Once every API server runs with the newest key, rewrites every nested
/// Secret with it and records that; the next pass drops the older keys.
/// Returns whether a migration is still to come (so that the cluster is
/// looked at again soon).
async fn migrate_when_rolled_out(
    ctx: &Context,
    vc: &VirtualCluster,
    inputs: &ClusterInputs<'_>,
    apiserver: &Rollout,
) -> Result<bool> {
    let Some((generations, migrated, _)) = cached_state(ctx, inputs) else {
        return Ok(false);
    };
    let newest = generations.first().copied();
    // Every API server must have read the new key: no pod of the earlier
    // template may be left to write with the old one.
    if generations.len() <= 1 || migrated == newest {
        return Ok(false);
    }
    let Some(newest) = newest.filter(|_| apiserver.replaced()) else {
        return Ok(true);
    };
    let names = &inputs.names;
    let client = nested::client(ctx, vc).await?;
    let count = nested::rewrite_secrets(ctx, &client, names).await?;
    annotate_secret(
        ctx,
        &names.namespace,
        &names.encryption_secret(),
        MIGRATED,
        &newest.to_string(),
    )
    .await?;
    info!(cluster = %names.cluster, namespace = %names.namespace, generation = newest, secrets = count, "rewrote the nested Secrets with the new encryption key");
    // The next pass drops the older keys.
    Ok(true)
}
