//! Clients for, and writes into, a nested cluster's own API server.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::meta::{ClusterNames, FIELD_MANAGER};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// How the operator reaches nested API servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NestedRoute {
    /// Through the host Service's DNS name (the operator runs in the host
    /// cluster).
    #[default]
    Internal,
    /// Through the endpoint published in the admin kubeconfig (the operator
    /// runs outside the host cluster).
    Published,
}

/// A client for a nested cluster, authenticated with its admin kubeconfig.
pub async fn client(ctx: &Context, names: &ClusterNames) -> Result<Client> {
    let nested_error = |message: String| Error::Nested {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        message,
    };
    let secret = crate::apply::read_secret(ctx, &names.namespace, &names.admin_kubeconfig_secret())
        .await?
        .ok_or_else(|| nested_error("the admin kubeconfig Secret does not exist yet".into()))?;
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| {
            nested_error("the admin kubeconfig Secret has no 'kubeconfig' key".into())
        })?;
    // Parse errors could quote the file; report none of it.
    let kubeconfig = Kubeconfig::from_yaml(&text)
        .map_err(|_| nested_error("the admin kubeconfig does not parse".into()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|_| nested_error("the admin kubeconfig is not usable".into()))?;
    if ctx.settings.nested_route == NestedRoute::Internal {
        config.cluster_url = names
            .internal_endpoint()
            .parse()
            .map_err(|_| nested_error("the internal endpoint is not a URL".into()))?;
    }
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(15));
    Client::try_from(config).map_err(|e| nested_error(format!("building a client failed: {e}")))
}

/// Server-side applies an object into a nested cluster.
pub async fn apply<K>(ctx: &Context, client: &Client, names: &ClusterNames, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match obj.meta().namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    ctx.metrics.write("apply", "Nested");
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| {
        let (code, reason) = crate::error::code_and_reason(&e);
        Error::Nested {
            namespace: names.namespace.clone(),
            name: names.cluster.clone(),
            message: format!(
                "applying {} {name} failed with HTTP {code} ({reason})",
                K::kind(&())
            ),
        }
    })?;
    Ok(())
}
