//! Kubeconfig files for the components, the admin and the node bootstrap.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

/// How a kubeconfig's user proves who it is.
pub enum Credentials<'a> {
    /// A client certificate and its key (PEM).
    Certificate { cert_pem: &'a str, key_pem: &'a str },
    /// A bearer token (used for node TLS bootstrapping).
    Token(&'a str),
}

/// A kubeconfig with one cluster, one user and one context, as YAML.
pub fn render(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: Credentials<'_>,
) -> String {
    let user_entry = match credentials {
        Credentials::Certificate { cert_pem, key_pem } => json!({
            "client-certificate-data": STANDARD.encode(cert_pem),
            "client-key-data": STANDARD.encode(key_pem),
        }),
        Credentials::Token(token) => json!({ "token": token }),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster,
            "cluster": { "server": server, "certificate-authority-data": STANDARD.encode(ca_pem) },
        }],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{ "name": format!("{user}@{cluster}"), "context": { "cluster": cluster, "user": user } }],
        "current-context": format!("{user}@{cluster}"),
    });
    // A tree of strings always serializes.
    serde_yaml::to_string(&config).expect("kubeconfig serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_parses_with_kube() {
        let text = render(
            "vc",
            "https://vc-apiserver.ns.svc:6443",
            "CA",
            "admin",
            Credentials::Certificate {
                cert_pem: "CERT",
                key_pem: "KEY",
            },
        );
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("admin@vc"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(
            cluster.server.as_deref(),
            Some("https://vc-apiserver.ns.svc:6443")
        );
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(STANDARD.encode("CA").as_str())
        );
        let token = render(
            "vc",
            "https://x",
            "CA",
            "node",
            Credentials::Token("abcdef.0123456789abcdef"),
        );
        assert!(token.contains("token: abcdef.0123456789abcdef"));
    }
}
