//! Clients for, and writes into, a nested cluster's own API server.

use crate::build::kubeconfig::{self, Credentials};
use crate::build::mint::Mint;
use crate::build::pki::{self, LeafRequest};
use crate::build::pki_secrets::{BUNDLE_FINGERPRINT, bundle_from_secret};
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::secrets::read_secret;
use crate::model::names::{ClusterNames, FIELD_MANAGER};
use crate::model::settings::NestedRoute;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Config, Resource};
use nestor_crds::VirtualCluster;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

use std::time::{Duration, Instant};

/// The user the operator is in nested clusters. Its certificate is issued
/// by the operator for itself, from the cluster's CA, lives only in the
/// operator's memory and expires after [`OPERATOR_CERT_LIFETIME`].
pub const OPERATOR_USER: &str = "nestor:operator";
/// How long the operator's certificate for a nested cluster is valid.
pub const OPERATOR_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long a kept client is used: its certificate is replaced well
/// before it expires.
const OPERATOR_CERT_RENEWAL: Duration = Duration::from_secs(12 * 3600);

/// The client for `vc`'s nested cluster: the kept one while the cluster's
/// UID, roots of trust and endpoint are unchanged, otherwise a new one.
///
/// It trusts nothing a tenant can write: its credential is a client
/// certificate the operator issues itself from the cluster's CA, it trusts
/// that CA alone, and it connects to the cluster's own API server Service
/// (or the endpoint the operator published in the cluster's status). The
/// admin kubeconfig Secret, which a tenant may edit, is never read.
pub async fn client(ctx: &Context, vc: &VirtualCluster) -> Result<Client> {
    let names = ClusterNames::new(vc);
    let uid = vc.metadata.uid.clone().unwrap_or_default();
    let server = match ctx.settings.nested_route {
        NestedRoute::Internal => names.internal_endpoint(),
        NestedRoute::Published => vc
            .status
            .as_ref()
            .and_then(|s| s.endpoint.clone())
            .ok_or_else(|| Error::Nested {
                namespace: names.namespace.clone(),
                name: names.cluster.clone(),
                message: "the API server has no published endpoint yet".into(),
            })?,
    };
    let ca_fingerprint = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&names.ca_secret()).within(&names.namespace))
        .and_then(|s| {
            s.metadata
                .annotations
                .as_ref()?
                .get(BUNDLE_FINGERPRINT)
                .cloned()
        })
        .unwrap_or_default();
    let credentials = format!("{ca_fingerprint}/{server}");
    if let Some(client) = ctx.nested.get(&names, &uid, &credentials) {
        return Ok(client);
    }
    let client = connect(ctx, &names, &server).await?;
    let renew_at = Instant::now() + OPERATOR_CERT_RENEWAL;
    ctx.nested
        .keep(&names, &uid, &credentials, client.clone(), renew_at);
    Ok(client)
}

/// A new client for a nested cluster, with a certificate issued now for
/// [`OPERATOR_USER`] from the cluster's CA.
async fn connect(ctx: &Context, names: &ClusterNames, server: &str) -> Result<Client> {
    let nested_error = |message: String| Error::Nested {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        message,
    };
    let ca_name = names.ca_secret();
    let secret = read_secret(ctx, &names.namespace, &ca_name)
        .await?
        .ok_or_else(|| nested_error("the CA Secret does not exist yet".into()))?;
    let bundle = bundle_from_secret(&secret).ok_or_else(|| Error::DamagedCa {
        namespace: names.namespace.clone(),
        name: ca_name,
    })?;
    let leaf = pki::issue_for(
        &bundle.cluster,
        &LeafRequest::client(OPERATOR_USER, &["system:masters"]),
        OPERATOR_CERT_LIFETIME,
        &mut Mint::at(k8s_openapi::jiff::Timestamp::now()),
    )
    .map_err(|source| Error::Pki {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        source,
    })?;
    let text = kubeconfig::render(
        &names.cluster,
        server,
        &bundle.cluster.cert_pem,
        OPERATOR_USER,
        Credentials::Certificate {
            cert_pem: &leaf.cert_pem,
            key_pem: &leaf.key_pem,
        },
    );
    // Built here from Nestor's own values; errors quote none of it.
    let kubeconfig = Kubeconfig::from_yaml(&text)
        .map_err(|_| nested_error("the operator's kubeconfig does not parse".into()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|_| nested_error("the operator's kubeconfig is not usable".into()))?;
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(15));
    // No retries inside a call: an eviction a PodDisruptionBudget refuses
    // is a 429, which the client would otherwise retry for minutes and
    // hold the reconcile (and the uncordon of a replaced node) with it.
    // Reconciles retry on their own schedule.
    config.default_retry = false;
    Client::try_from(config).map_err(|e| nested_error(format!("building a client failed: {e}")))
}

/// `obj`'s name, and an API for its kind where it lives (its namespace, or
/// the cluster).
fn dynamic_api<K>(client: &Client, obj: &K) -> (String, Api<DynamicObject>)
where
    K: Resource<DynamicType = ()>,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let resource = ApiResource::erase::<K>(&());
    let api = match obj.meta().namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    (name, api)
}

/// Server-side applies an object into a nested cluster.
pub async fn apply<K>(ctx: &Context, client: &Client, names: &ClusterNames, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let (name, api) = dynamic_api(client, obj);
    ctx.metrics.write("apply", "Nested");
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| request_failed(names, &format!("applying {} {name}", K::kind(&())), &e))?;
    Ok(())
}

/// Reads `obj` back from the nested cluster and writes it again when it
/// is missing (a create) or no longer holds what Nestor wrote (whoever
/// changed it). A changed object is replaced whole, not applied: an apply
/// would keep what another field manager added (a second element of a
/// set, such as `Audit` beside `Deny`). Returns whether it had to.
pub async fn repair<K>(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
    obj: &K,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let (name, api) = dynamic_api(client, obj);
    let live = api
        .get_opt(&name)
        .await
        .map_err(|e| request_failed(names, &format!("reading {} {name}", K::kind(&())), &e))?;
    let Some(live) = live else {
        apply(ctx, client, names, obj).await?;
        return Ok(true);
    };
    let mut desired = serde_json::to_value(obj).unwrap_or_default();
    if crate::model::hash::holds(&serde_json::to_value(&live).unwrap_or_default(), &desired) {
        return Ok(false);
    }
    desired["metadata"]["resourceVersion"] = live.metadata.resource_version.clone().into();
    let replacement: DynamicObject =
        serde_json::from_value(desired).map_err(|_| Error::Nested {
            namespace: names.namespace.clone(),
            name: names.cluster.clone(),
            message: format!("{} {name} does not serialize", K::kind(&())),
        })?;
    ctx.metrics.write("replace", "Nested");
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    api.replace(&name, &params, &replacement)
        .await
        .map_err(|e| request_failed(names, &format!("replacing {} {name}", K::kind(&())), &e))?;
    Ok(true)
}

/// Writes every add-on object, or, with `only_broken`, reads each back and
/// writes those that are missing or changed. Returns what it wrote.
pub async fn write_addons(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
    wanted: &crate::build::nested_addons::NestedAddons,
    only_broken: bool,
) -> Result<Vec<String>> {
    async fn one<K>(
        ctx: &Context,
        client: &Client,
        names: &ClusterNames,
        obj: &K,
        only_broken: bool,
    ) -> Result<Option<String>>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let wrote = if only_broken {
            repair(ctx, client, names, obj).await?
        } else {
            apply(ctx, client, names, obj).await?;
            true
        };
        Ok(wrote.then(|| {
            format!(
                "{} {}",
                K::kind(&()),
                obj.meta().name.as_deref().unwrap_or_default()
            )
        }))
    }
    let mut wrote = Vec::new();
    for policy in &wanted.policies {
        wrote.extend(one(ctx, client, names, policy, only_broken).await?);
    }
    for binding in &wanted.policy_bindings {
        wrote.extend(one(ctx, client, names, binding, only_broken).await?);
    }
    for role in &wanted.roles {
        wrote.extend(one(ctx, client, names, role, only_broken).await?);
    }
    for binding in &wanted.bindings {
        wrote.extend(one(ctx, client, names, binding, only_broken).await?);
    }
    wrote.extend(one(ctx, client, names, &wanted.dns_service, only_broken).await?);
    wrote.extend(one(ctx, client, names, &wanted.dns_endpoints, only_broken).await?);
    Ok(wrote)
}

/// A request to a nested cluster that failed: what was asked, and the
/// status code and reason only (the message may quote what the tenant
/// wrote).
pub fn request_failed(names: &ClusterNames, what: &str, e: &kube::Error) -> Error {
    let (code, reason) = crate::client::error::code_and_reason(e);
    Error::Nested {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        message: format!("{what} failed with HTTP {code} ({reason})"),
    }
}

/// Rewrites every Secret of a nested cluster unchanged, so that the API
/// server stores each again with its current encryption key (a storage
/// migration). Their content is never kept. Returns how many it rewrote.
pub async fn rewrite_secrets(
    ctx: &Context,
    client: &Client,
    names: &ClusterNames,
) -> Result<usize> {
    let all: Api<k8s_openapi::api::core::v1::Secret> = Api::all(client.clone());
    let secrets = all
        .list(&Default::default())
        .await
        .map_err(|e| request_failed(names, "listing Secrets", &e))?;
    let mut rewritten = 0;
    for secret in secrets.items {
        let (Some(ns), Some(name)) = (
            secret.metadata.namespace.clone(),
            secret.metadata.name.clone(),
        ) else {
            continue;
        };
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        ctx.metrics.write("replace", "NestedSecret");
        match api.replace(&name, &PostParams::default(), &secret).await {
            Ok(_) => rewritten += 1,
            // Deleted meanwhile: nothing left to migrate.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(request_failed(names, "rewriting a Secret", &e)),
        }
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::kept::NestedClients;
    use crate::model::inputs::fixtures;

    #[tokio::test]
    async fn a_kept_client_serves_only_the_same_cluster_and_credentials() {
        let (ctx, _handle) = crate::client::mock::mock_context();
        let names = ClusterNames::new(&fixtures::vc(serde_json::json!({})));
        let kept = NestedClients::default();
        assert!(kept.get(&names, "uid-1", "ca/admin").is_none());
        let later = Instant::now() + Duration::from_secs(60);
        kept.keep(&names, "uid-1", "ca/admin", ctx.client.clone(), later);
        assert!(kept.get(&names, "uid-1", "ca/admin").is_some());
        assert!(
            kept.get(&names, "uid-2", "ca/admin").is_none(),
            "a cluster made again under the same name"
        );
        assert!(
            kept.get(&names, "uid-1", "new-ca/admin").is_none(),
            "new roots of trust"
        );
        assert!(
            kept.get(&names, "uid-1", "ca/moved").is_none(),
            "another endpoint"
        );
        kept.forget(&names.namespace, &names.cluster);
        assert!(kept.is_empty());
        kept.keep(
            &names,
            "uid-1",
            "ca/admin",
            ctx.client.clone(),
            Instant::now(),
        );
        assert!(
            kept.get(&names, "uid-1", "ca/admin").is_none(),
            "a certificate due for renewal"
        );
    }

    #[tokio::test]
    async fn the_client_reads_the_ca_and_never_the_admin_kubeconfig() {
        use crate::build::pki_secrets::{Exposure, PkiSecret, desired_pki_secret};
        let (ctx, handle) = crate::client::mock::mock_context();
        let vc = fixtures::vc(serde_json::json!({}));
        let inputs = fixtures::inputs(&vc);
        let mut mint = Mint::fixed();
        let bundle = pki::generate_ca_bundle("demo", &mut mint).unwrap();
        let signer = pki::generate_ca("demo-client-signer", &mut mint).unwrap();
        let ca = desired_pki_secret(
            PkiSecret::Ca,
            &inputs,
            &Exposure::default(),
            &bundle,
            &signer,
            &mut mint,
        )
        .unwrap();
        let server =
            crate::client::mock::serve(handle, vec![(200, serde_json::to_value(&ca).unwrap())]);
        client(&ctx, &vc).await.expect("a client");
        // Kept: the second reconcile reads nothing.
        client(&ctx, &vc).await.expect("the kept client");
        let asked = server.await.unwrap();
        let paths: Vec<&str> = asked.iter().map(|a| a.1.as_str()).collect();
        assert_eq!(paths, ["/api/v1/namespaces/tenants/secrets/demo-ca"]);
    }
}
