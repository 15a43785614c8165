//! A cluster's PKI: the roots are generated only when their Secret does
//! not exist (a damaged one is reported, never replaced), the client
//! signer with every admin generation, and every other Secret is issued
//! again only when what it covers changed or it is due for renewal.

use crate::build::mint::Mint;
use crate::build::pki::{self, CaBundle, KeyAndCert, generate_ca, generate_ca_bundle};
use crate::build::pki_secrets::{
    self as secrets, BUNDLE_FINGERPRINT, Exposure, Fingerprints, PkiSecret,
};
use crate::client::apply::changed_by_someone_else;
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::secrets::{apply_secret, cluster_secrets_metadata, create_secret, read_secret};
use crate::model::inputs::ClusterInputs;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use nestor_crds::VirtualCluster;

/// Makes sure every PKI Secret exists and matches its inputs. Returns the
/// roots' fingerprint. The roots are generated only when their Secret does
/// not exist; a damaged one is reported, never replaced.
pub(super) async fn ensure_pki(
    ctx: &Context,
    vc: &VirtualCluster,
    inputs: &ClusterInputs<'_>,
    exposure: &Exposure,
) -> Result<String> {
    let names = &inputs.names;
    let cached = |kind: PkiSecret| {
        ctx.stores
            .secrets
            .get(&ObjectRef::new(&kind.name(names)).within(&names.namespace))
    };
    let ca_cached = cached(PkiSecret::Ca);
    let known_fp = ca_cached
        .as_ref()
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned());
    let now = k8s_openapi::jiff::Timestamp::now();
    let signer_inputs = signer_inputs(inputs, exposure);
    let known_signer_fp = cached(PkiSecret::ClientSigner)
        .filter(|s| {
            secrets::is_current(s.metadata.annotations.as_ref(), &signer_inputs, now)
                && !changed_by_someone_else(&s.metadata)
        })
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned());
    let stale = |fps: Fingerprints| -> Vec<PkiSecret> {
        PkiSecret::LEAVES
            .into_iter()
            .filter(|kind| {
                let expected = secrets::inputs_hash(*kind, inputs, exposure, fps);
                // Issued again when its inputs changed, when it is due, or
                // when someone else edited it (what it holds is Nestor's
                // alone to write).
                !cached(*kind).is_some_and(|s| {
                    secrets::is_current(s.metadata.annotations.as_ref(), &expected, now)
                        && !changed_by_someone_else(&s.metadata)
                })
            })
            .collect()
    };
    if let (Some(bundle), Some(client_signer)) = (&known_fp, &known_signer_fp)
        && stale(Fingerprints {
            bundle,
            client_signer,
        })
        .is_empty()
    {
        return Ok(bundle.clone());
    }
    let pki_error = |source| Error::Pki {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        source,
    };
    let ca_name = names.ca_secret();
    // Not in the cache: most likely a new cluster, so the roots are created
    // straight away. Created, never applied: roots are not overwritten,
    // even by a second leader during a hand-over.
    let fresh = match ca_cached {
        Some(_) => None,
        None => {
            let mut mint = Mint::at(now);
            let bundle = generate_ca_bundle(&names.cluster, &mut mint).map_err(pki_error)?;
            // The CA Secret holds no client signer; any will do here.
            let secret = secrets::desired_pki_secret(
                PkiSecret::Ca,
                inputs,
                exposure,
                &bundle,
                &bundle.cluster,
                &mut mint,
            )
            .map_err(pki_error)?;
            create_secret(ctx, &secret).await?.then_some(bundle)
        }
    };
    let (bundle, created) = match fresh {
        Some(bundle) => (bundle, true),
        // Cached, or created meanwhile by another writer (a 409): read them.
        None => {
            let secret = read_secret(ctx, &names.namespace, &ca_name)
                .await?
                .ok_or_else(|| Error::PkiRace {
                    namespace: names.namespace.clone(),
                    name: ca_name.clone(),
                })?;
            let bundle = secrets::bundle_from_secret(&secret).ok_or_else(|| Error::DamagedCa {
                namespace: names.namespace.clone(),
                name: ca_name.clone(),
            })?;
            (bundle, false)
        }
    };
    let fp = secrets::bundle_fingerprint(&bundle);
    let (client_signer, signer_replaced) =
        ensure_client_signer(ctx, inputs, exposure, &bundle, created).await?;
    let signer_fp = pki::fingerprint(&client_signer.cert_pem);
    let fps = Fingerprints {
        bundle: &fp,
        client_signer: &signer_fp,
    };
    // The cache may not have seen this operator's last writes yet: confirm
    // with the API server (one list of the cluster's Secrets' metadata)
    // before issuing anything again. Roots just created have signed
    // nothing yet, so there is nothing to confirm.
    let candidates = stale(fps);
    tracing::debug!(cluster = %names.cluster, ?candidates, "PKI Secrets that may need issuing");
    let live = if candidates.is_empty() || created {
        Default::default()
    } else {
        cluster_secrets_metadata(ctx, names).await?
    };
    let to_issue: Vec<PkiSecret> = candidates
        .into_iter()
        .filter(|kind| {
            let expected = secrets::inputs_hash(*kind, inputs, exposure, fps);
            !live.get(&kind.name(names)).is_some_and(|live| {
                secrets::is_current(Some(&live.annotations), &expected, now) && !live.edited
            })
        })
        .collect();
    let mut mint = Mint::at(now);
    let built = to_issue
        .iter()
        .map(|kind| {
            secrets::desired_pki_secret(*kind, inputs, exposure, &bundle, &client_signer, &mut mint)
        })
        .collect::<Result<Vec<Secret>, _>>()
        .map_err(pki_error)?;
    // Leaves signed by roots created just now are new: they are created,
    // which costs the API server a quarter of an apply (`nestor-bench
    // writes`: 1.0 against 4.4 ms of CPU for a Secret). One that exists
    // (a 409: left by earlier roots) is applied over. Renewals are applies,
    // which take over the fields the create gave Nestor.
    futures::future::try_join_all(built.iter().map(|secret| async move {
        if created && create_secret(ctx, secret).await? {
            return Ok(());
        }
        apply_secret(ctx, secret).await
    }))
    .await?;
    let issued: Vec<String> = signer_replaced
        .then_some(PkiSecret::ClientSigner)
        .into_iter()
        .chain(to_issue.iter().copied())
        .map(|k| k.name(names))
        .collect();
    tracing::debug!(cluster = %names.cluster, ?issued, "PKI Secrets issued");
    let provisioned_before = vc.status.as_ref().is_some_and(|s| !s.conditions.is_empty());
    if created && provisioned_before {
        ctx.publish(
            vc,
            EventType::Warning,
            "PKIRegenerated",
            "the CA Secret was gone: generated new roots of trust; earlier kubeconfigs, node certificates and service-account tokens no longer work".into(),
        )
        .await;
    } else if created {
        ctx.publish(
            vc,
            EventType::Normal,
            "PKICreated",
            format!(
                "generated the cluster's CAs and issued {}",
                issued.join(", ")
            ),
        )
        .await;
    } else if !issued.is_empty() {
        ctx.publish(
            vc,
            EventType::Normal,
            "CertificatesIssued",
            format!(
                "issued {} again: what they cover changed, they were due, or someone else edited them",
                issued.join(", ")
            ),
        )
        .await;
    }
    if signer_replaced && !created {
        ctx.publish(
            vc,
            EventType::Normal,
            "ClientSignerReplaced",
            format!(
                "a new client signer for admin generation {}: client certificates signed through the cluster's CSR API before it no longer authenticate",
                vc.spec.api_server.admin_credential_generation
            ),
        )
        .await;
    }
    Ok(fp)
}

/// What the client signer's Secret is made from (the admin generation).
fn signer_inputs(inputs: &ClusterInputs, exposure: &Exposure) -> String {
    let none = Fingerprints {
        bundle: "",
        client_signer: "",
    };
    secrets::inputs_hash(PkiSecret::ClientSigner, inputs, exposure, none)
}

/// The client signer of the current admin generation, and whether it was
/// generated just now: read back when its Secret is current, generated and
/// written over the earlier one when not (a new generation, a damaged or
/// edited Secret), which ends every certificate the earlier one signed.
async fn ensure_client_signer(
    ctx: &Context,
    inputs: &ClusterInputs<'_>,
    exposure: &Exposure,
    bundle: &CaBundle,
    new_cluster: bool,
) -> Result<(KeyAndCert, bool)> {
    let names = &inputs.names;
    let pki_error = |source| Error::Pki {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        source,
    };
    if !new_cluster {
        let now = k8s_openapi::jiff::Timestamp::now();
        let expected = signer_inputs(inputs, exposure);
        let kept = read_secret(ctx, &names.namespace, &names.client_signer_secret())
            .await?
            .filter(|s| {
                secrets::is_current(s.metadata.annotations.as_ref(), &expected, now)
                    && !changed_by_someone_else(&s.metadata)
            })
            .and_then(|s| secrets::client_signer_from_secret(&s));
        if let Some(signer) = kept {
            return Ok((signer, false));
        }
    }
    let mut mint = Mint::at(k8s_openapi::jiff::Timestamp::now());
    let signer =
        generate_ca(&format!("{}-client-signer", names.cluster), &mut mint).map_err(pki_error)?;
    let secret = secrets::desired_pki_secret(
        PkiSecret::ClientSigner,
        inputs,
        exposure,
        bundle,
        &signer,
        &mut mint,
    )
    .map_err(pki_error)?;
    apply_secret(ctx, &secret).await?;
    Ok((signer, true))
}
