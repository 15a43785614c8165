//! A pool's bootstrap token: the host Secret that node pods mount, and the
//! token's Secret inside the nested cluster.
//!
//! A token lives [`TOKEN_LIFETIME`] and is replaced halfway
//! ([`TOKEN_RENEWAL`]): the host Secret records when (`renew-after`), the
//! token's id and its expiry; the nested Secret carries the expiry, which
//! the API server enforces, and the previous token's Secret is deleted once
//! the new one is installed. A node pod that starts after a renewal reads
//! the new token from its mounted Secret.

use crate::build::kubeconfig::{self, Credentials};
use crate::build::mint::Mint;
use crate::model::hash::inputs_hash;
use crate::model::names::{ClusterNames, INPUTS_HASH, PoolNames, nested_meta, pool_child_meta};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use nestor_crds::NodePool;
use nestor_crds::node_contract as contract;
use std::collections::BTreeMap;

/// How long a bootstrap token authenticates.
pub const TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(4);
/// How long after issuing a token it is replaced.
pub const TOKEN_RENEWAL: SignedDuration = SignedDuration::from_hours(2);
/// Annotations on the host Secret: the token's id (not its secret half),
/// the id of the token it replaced (deleted from the nested cluster once
/// this one is installed), and when it expires and is renewed.
pub const TOKEN_ID: &str = "nestor.dev/token-id";
pub const PREVIOUS_TOKEN_ID: &str = "nestor.dev/previous-token-id";
pub const TOKEN_EXPIRES: &str = "nestor.dev/token-expires";
pub use crate::build::pki_secrets::RENEW_AFTER;

/// A token with its expiry, and the id of the token it replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: BootstrapToken,
    pub expires: Timestamp,
    pub previous_id: Option<String>,
}

impl IssuedToken {
    /// A new token issued at the mint's time, replacing `previous_id`.
    pub fn issue(mint: &mut Mint, previous_id: Option<String>) -> Self {
        let expires = mint.now() + TOKEN_LIFETIME;
        Self {
            token: BootstrapToken::generate(mint),
            // Whole seconds: the token Secret's `expiration` is RFC 3339.
            expires: Timestamp::from_second(expires.as_second()).unwrap_or(expires),
            previous_id,
        }
    }

    /// The hash recorded once this very token is in the nested cluster.
    pub fn installed_hash(ca_fingerprint: &str, token_id: &str) -> String {
        inputs_hash(["bootstrap", ca_fingerprint, token_id])
    }
}

/// Whether the host Secret's token is due for replacement at `now` (or
/// carries no renewal date: a Secret from before tokens expired).
pub fn token_due(annotations: &BTreeMap<String, String>, now: Timestamp) -> bool {
    annotations
        .get(RENEW_AFTER)
        .and_then(|at| at.parse::<Timestamp>().ok())
        .is_none_or(|at| now >= at)
}

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
    pub fn generate(mint: &mut Mint) -> Self {
        Self {
            id: mint.lowercase_alphanumeric(6),
            secret: mint.lowercase_alphanumeric(16),
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
    issued: &IssuedToken,
    ca_pem: &str,
    ca_fingerprint: &str,
) -> Secret {
    let token = &issued.token;
    let pn = PoolNames::new(pool);
    let config = kubeconfig::render(
        &names.cluster,
        &names.internal_endpoint(),
        ca_pem,
        &format!("bootstrap-{}", token.id),
        Credentials::Token(&token.token()),
    );
    let mut metadata = pool_child_meta(pool, pn.bootstrap_secret());
    let renew = issued.expires - TOKEN_LIFETIME + TOKEN_RENEWAL;
    let mut annotations = BTreeMap::from([
        (
            INPUTS_HASH.to_string(),
            inputs_hash(["bootstrap", ca_fingerprint]),
        ),
        (TOKEN_ID.to_string(), token.id.clone()),
        (TOKEN_EXPIRES.to_string(), issued.expires.to_string()),
        (RENEW_AFTER.to_string(), renew.to_string()),
    ]);
    if let Some(previous) = &issued.previous_id {
        annotations.insert(PREVIOUS_TOKEN_ID.into(), previous.clone());
    }
    metadata.annotations = Some(annotations);
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
/// bootstrapper and nothing else, until it expires.
pub fn nested_bootstrap_token_secret(pool: &str, issued: &IssuedToken) -> Secret {
    let token = &issued.token;
    let data = BTreeMap::from([
        ("expiration".to_string(), issued.expires.to_string()),
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
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut mint = Mint::seeded(now, 1);
        let token = BootstrapToken::generate(&mut mint);
        assert_eq!(token.id.len(), 6);
        assert_eq!(token.secret.len(), 16);
        assert!(
            token
                .token()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
        );
        assert!(!format!("{token:?}").contains(&token.secret));
        let issued = IssuedToken {
            token: token.clone(),
            ..IssuedToken::issue(&mut mint, Some("old123".into()))
        };
        let nested = nested_bootstrap_token_secret("workers", &issued);
        assert_eq!(
            nested.type_.as_deref(),
            Some("bootstrap.kubernetes.io/token")
        );
        let data = nested.data.unwrap();
        assert_eq!(data["usage-bootstrap-authentication"].0, b"true");
        assert_eq!(data["expiration"].0, b"2026-01-01T04:00:00Z");
        assert!(!data.contains_key("usage-bootstrap-signing"));
        assert_eq!(
            data["auth-extra-groups"].0,
            b"system:bootstrappers:nestor:workers"
        );
        let vc = fixtures::vc(json!({}));
        let host = desired_bootstrap_secret(
            &fixtures::pool(),
            &ClusterNames::new(&vc),
            &issued,
            "CA",
            "fp",
        );
        let annotations = host.metadata.annotations.unwrap();
        assert_eq!(annotations[TOKEN_ID], token.id);
        assert_eq!(annotations[PREVIOUS_TOKEN_ID], "old123");
        assert_eq!(annotations[TOKEN_EXPIRES], "2026-01-01T04:00:00Z");
        assert_eq!(annotations[RENEW_AFTER], "2026-01-01T02:00:00Z");
        let config =
            String::from_utf8(host.data.unwrap()["bootstrap-kubeconfig"].0.clone()).unwrap();
        assert!(config.contains("https://demo-apiserver.tenants.svc:6443"));
    }

    #[test]
    fn tokens_are_renewed_halfway_through_their_life() {
        let issued_at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let issued = IssuedToken::issue(&mut Mint::seeded(issued_at, 1), None);
        let vc = fixtures::vc(json!({}));
        let host = desired_bootstrap_secret(
            &fixtures::pool(),
            &ClusterNames::new(&vc),
            &issued,
            "CA",
            "fp",
        );
        let annotations = host.metadata.annotations.unwrap();
        let at = |hours: i64| issued_at + SignedDuration::from_hours(hours);
        assert!(!token_due(&annotations, at(0)));
        assert!(!token_due(&annotations, at(1)));
        assert!(token_due(&annotations, at(2)));
        // A Secret without a renewal date is replaced.
        assert!(token_due(&BTreeMap::new(), at(0)));
        assert_ne!(
            IssuedToken::installed_hash("fp", "aaaaaa"),
            IssuedToken::installed_hash("fp", "bbbbbb")
        );
    }
}
