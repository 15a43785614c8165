//! A pool's bootstrap token: the host Secret that node pods mount, and the
//! token's Secret inside the nested cluster.

use crate::build::kubeconfig::{self, Credentials};
use crate::model::hash::inputs_hash;
use crate::model::names::{ClusterNames, INPUTS_HASH, PoolNames, nested_meta, pool_child_meta};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use nestor_crds::NodePool;
use nestor_crds::node_contract as contract;
use rand::distr::{Alphanumeric, SampleString};
use std::collections::BTreeMap;

/// A bootstrap token, `<id>.<secret>` (6 and 16 lowercase alphanumerics).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl BootstrapToken {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut lower = |n| Alphanumeric.sample_string(&mut rng, n).to_ascii_lowercase();
        Self {
            id: lower(6),
            secret: lower(16),
        }
    }
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
    /// The group the token authenticates into, besides `system:bootstrappers`.
    pub fn extra_group(pool: &str) -> String {
        format!("system:bootstrappers:nestor:{pool}")
    }
}

/// The host Secret holding the pool's bootstrap token and kubeconfig.
pub fn desired_bootstrap_secret(
    pool: &NodePool,
    names: &ClusterNames,
    token: &BootstrapToken,
    ca_pem: &str,
    ca_fingerprint: &str,
) -> Secret {
    let pn = PoolNames::new(pool);
    let config = kubeconfig::render(
        &names.cluster,
        &names.internal_endpoint(),
        ca_pem,
        &format!("bootstrap-{}", token.id),
        Credentials::Token(&token.token()),
    );
    let mut metadata = pool_child_meta(pool, pn.bootstrap_secret());
    metadata.annotations = Some(BTreeMap::from([(
        INPUTS_HASH.into(),
        inputs_hash(["bootstrap", ca_fingerprint]),
    )]));
    let data = BTreeMap::from([
        (
            contract::TOKEN_ID.to_string(),
            ByteString(token.id.clone().into_bytes()),
        ),
        (
            contract::TOKEN_SECRET.to_string(),
            ByteString(token.secret.clone().into_bytes()),
        ),
        (
            contract::BOOTSTRAP_KUBECONFIG.to_string(),
            ByteString(config.into_bytes()),
        ),
        (
            contract::CA_CERT.to_string(),
            ByteString(ca_pem.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The token's Secret inside the nested cluster: it authenticates the
/// bootstrapper and nothing else.
pub fn nested_bootstrap_token_secret(pool: &str, token: &BootstrapToken) -> Secret {
    let data = BTreeMap::from([
        ("token-id".to_string(), token.id.clone()),
        ("token-secret".to_string(), token.secret.clone()),
        (
            "usage-bootstrap-authentication".to_string(),
            "true".to_string(),
        ),
        (
            "auth-extra-groups".to_string(),
            BootstrapToken::extra_group(pool),
        ),
        (
            "description".to_string(),
            format!("Nestor node pool {pool}"),
        ),
    ]);
    Secret {
        metadata: nested_meta(
            &format!("bootstrap-token-{}", token.id),
            Some("kube-system"),
        ),
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    #[test]
    fn bootstrap_token_is_well_formed_and_scoped() {
        let token = BootstrapToken::generate();
        assert_eq!(token.id.len(), 6);
        assert_eq!(token.secret.len(), 16);
        assert!(
            token
                .token()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
        );
        assert!(!format!("{token:?}").contains(&token.secret));
        let nested = nested_bootstrap_token_secret("workers", &token);
        assert_eq!(
            nested.type_.as_deref(),
            Some("bootstrap.kubernetes.io/token")
        );
        let data = nested.data.unwrap();
        assert_eq!(data["usage-bootstrap-authentication"].0, b"true");
        assert!(!data.contains_key("usage-bootstrap-signing"));
        assert_eq!(
            data["auth-extra-groups"].0,
            b"system:bootstrappers:nestor:workers"
        );
        let vc = fixtures::vc(json!({}));
        let host = desired_bootstrap_secret(
            &fixtures::pool(),
            &ClusterNames::new(&vc),
            &token,
            "CA",
            "fp",
        );
        let config =
            String::from_utf8(host.data.unwrap()["bootstrap-kubeconfig"].0.clone()).unwrap();
        assert!(config.contains("https://demo-apiserver.tenants.svc:6443"));
    }
}
