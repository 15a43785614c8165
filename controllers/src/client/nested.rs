//! Clients for, and writes into, a nested cluster's own API server.

use crate::build::pki_secrets::BUNDLE_FINGERPRINT;
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::model::names::{ClusterNames, FIELD_MANAGER, INPUTS_HASH};
use crate::model::settings::NestedRoute;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Config, Resource};
use nestor_crds::VirtualCluster;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

/// Clients for nested clusters, one per cluster, built once and kept while
/// the cluster's UID, its roots of trust and its admin kubeconfig's inputs
/// (the roots and the endpoint it points at) stay the same: a reconcile
/// that talks to a nested cluster reads no Secret and builds no TLS
/// context.
#[derive(Clone, Default)]
pub struct NestedClients {
    clients: Arc<Mutex<HashMap<(String, String), KeptClient>>>,
}

struct KeptClient {
    uid: String,
    /// The CA fingerprint and the admin kubeconfig's inputs hash.
    credentials: String,
    client: Client,
}

impl NestedClients {
    fn get(&self, names: &ClusterNames, uid: &str, credentials: &str) -> Option<Client> {
        let clients = self.clients.lock().ok()?;
        clients
            .get(&(names.namespace.clone(), names.cluster.clone()))
            .filter(|kept| kept.uid == uid && kept.credentials == credentials)
            .map(|kept| kept.client.clone())
    }

    fn keep(&self, names: &ClusterNames, uid: &str, credentials: &str, client: Client) {
        if let Ok(mut clients) = self.clients.lock() {
            let kept = KeptClient {
                uid: uid.into(),
                credentials: credentials.into(),
                client,
            };
            clients.insert((names.namespace.clone(), names.cluster.clone()), kept);
        }
    }

    /// Drops the client of a deleted cluster.
    pub fn forget(&self, namespace: &str, cluster: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(&(namespace.to_string(), cluster.to_string()));
        }
    }

    /// How many clients are kept.
    pub fn len(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client for `vc`'s nested cluster: the kept one while its UID, roots
/// of trust and admin kubeconfig are unchanged, otherwise a new one.
pub async fn client(ctx: &Context, vc: &VirtualCluster) -> Result<Client> {
    let names = ClusterNames::new(vc);
    let uid = vc.metadata.uid.clone().unwrap_or_default();
    let annotation = |secret: String, key: &str| {
        let cached = ctx
            .stores
            .secrets
            .get(&ObjectRef::new(&secret).within(&names.namespace))?;
        cached.metadata.annotations.as_ref()?.get(key).cloned()
    };
    let credentials = format!(
        "{}/{}",
        annotation(names.ca_secret(), BUNDLE_FINGERPRINT).unwrap_or_default(),
        annotation(names.admin_kubeconfig_secret(), INPUTS_HASH).unwrap_or_default()
    );
    if let Some(client) = ctx.nested.get(&names, &uid, &credentials) {
        return Ok(client);
    }
    let client = connect(ctx, &names).await?;
    ctx.nested.keep(&names, &uid, &credentials, client.clone());
    Ok(client)
}

/// A new client for a nested cluster, authenticated with its admin
/// kubeconfig.
async fn connect(ctx: &Context, names: &ClusterNames) -> Result<Client> {
    let nested_error = |message: String| Error::Nested {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        message,
    };
    let secret = crate::client::secrets::read_secret(
        ctx,
        &names.namespace,
        &names.admin_kubeconfig_secret(),
    )
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
        let (code, reason) = crate::client::error::code_and_reason(&e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;

    #[tokio::test]
    async fn a_kept_client_serves_only_the_same_cluster_and_credentials() {
        let (ctx, _handle) = crate::client::mock::mock_context();
        let names = ClusterNames::new(&fixtures::vc(serde_json::json!({})));
        let kept = NestedClients::default();
        assert!(kept.get(&names, "uid-1", "ca/admin").is_none());
        kept.keep(&names, "uid-1", "ca/admin", ctx.client.clone());
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
            "an admin kubeconfig that points elsewhere"
        );
        kept.forget(&names.namespace, &names.cluster);
        assert!(kept.is_empty());
    }
}
