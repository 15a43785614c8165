//! The cluster's public-key infrastructure, generated in Rust with `rcgen`.
//!
//! Every key is ECDSA P-256 with SHA-256 signatures: Kubernetes, etcd and
//! the service-account token signer all accept it, and it is far cheaper to
//! generate than RSA. CAs are valid for ten years, leaf certificates for one.

use crate::build::mint::Mint;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// Errors of certificate work. They never carry key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating or signing a certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("stored {what} is not valid PEM")]
    InvalidPem { what: &'static str },
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyAndCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeyAndCert {
    // Keys never reach logs, even through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCert")
            .field("fingerprint", &fingerprint(&self.cert_pem))
            .finish_non_exhaustive()
    }
}

/// The roots of trust of one virtual cluster. Generated once; everything
/// else is signed by these.
#[derive(Clone, Debug)]
pub struct CaBundle {
    /// Signs the API server's serving certificate, Nestor's client
    /// certificates and kubelets' (through the controller-manager). The
    /// client certificates a tenant requests are signed by the cluster's
    /// client signer instead (see `pki_secrets`).
    pub cluster: KeyAndCert,
    /// Signs etcd's server, peer and client certificates.
    pub etcd: KeyAndCert,
    /// Signs the aggregation layer's front-proxy client certificate.
    pub front_proxy: KeyAndCert,
    /// Service-account token signing key pair.
    pub service_account: ServiceAccountKeys,
}

/// The service-account signing key pair (PEM private key, PEM public key).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountKeys {
    pub private_pem: String,
    pub public_pem: String,
}

impl std::fmt::Debug for ServiceAccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKeys").finish_non_exhaustive()
    }
}

/// What a leaf certificate may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    ServerAndClient,
}

/// A request for a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub usage: Usage,
}

impl LeafRequest {
    /// A client certificate for `user` in `groups` (Kubernetes reads the
    /// common name as the user and the organizations as groups).
    pub fn client(user: &str, groups: &[&str]) -> Self {
        Self {
            common_name: user.into(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
        }
    }
}

fn new_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn random_serial(mint: &mut Mint) -> SerialNumber {
    let mut bytes: [u8; 16] = mint.bytes();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, lifetime: Duration, mint: &Mint) {
    let now = OffsetDateTime::from_unix_timestamp(mint.now().as_second())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // Allow for clocks a little behind ours.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + lifetime;
}

/// Generates a self-signed certificate authority.
pub fn generate_ca(common_name: &str, mint: &mut Mint) -> Result<KeyAndCert, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.serial_number = Some(random_serial(mint));
    validity(&mut params, Duration::days(3650), mint);
    let key = new_key()?;
    let cert = params.self_signed(&key)?;
    Ok(KeyAndCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Generates every root of trust of a cluster.
pub fn generate_ca_bundle(cluster: &str, mint: &mut Mint) -> Result<CaBundle, PkiError> {
    let sa = new_key()?;
    Ok(CaBundle {
        cluster: generate_ca(&format!("{cluster}-ca"), mint)?,
        etcd: generate_ca(&format!("{cluster}-etcd-ca"), mint)?,
        front_proxy: generate_ca(&format!("{cluster}-front-proxy-ca"), mint)?,
        service_account: ServiceAccountKeys {
            private_pem: sa.serialize_pem(),
            public_pem: sa.public_key_pem(),
        },
    })
}

/// Issues a leaf certificate with a new key, signed by `ca`, valid for a
/// year.
pub fn issue(
    ca: &KeyAndCert,
    request: &LeafRequest,
    mint: &mut Mint,
) -> Result<KeyAndCert, PkiError> {
    issue_for(
        ca,
        request,
        std::time::Duration::from_secs(365 * 24 * 3600),
        mint,
    )
}

/// Issues a leaf certificate with a new key, signed by `ca`, valid for
/// `lifetime`.
pub fn issue_for(
    ca: &KeyAndCert,
    request: &LeafRequest,
    lifetime: std::time::Duration,
    mint: &mut Mint,
) -> Result<KeyAndCert, PkiError> {
    let ca_key =
        KeyPair::from_pem(&ca.key_pem).map_err(|_| PkiError::InvalidPem { what: "CA key" })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|_| PkiError::InvalidPem {
            what: "CA certificate",
        })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, request.common_name.as_str());
    for org in &request.organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org.as_str());
    }
    for dns in &request.dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(dns.as_str().try_into()?));
    }
    for ip in &request.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match request.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial(mint));
    validity(
        &mut params,
        Duration::seconds(lifetime.as_secs() as i64),
        mint,
    );
    let key = new_key()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyAndCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A short, stable fingerprint of a PEM document (SHA-256 of its text, first
/// 16 hex digits). Safe to publish: it reveals nothing of a key.
pub fn fingerprint(pem: &str) -> String {
    let digest = Sha256::digest(pem.trim().as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::pem::parse_x509_pem;

    fn parse(pem: &str) -> Vec<u8> {
        parse_x509_pem(pem.as_bytes())
            .expect("valid PEM")
            .1
            .contents
    }

    #[test]
    fn ca_is_a_self_signed_ca() {
        let mut mint = Mint::fixed();
        let ca = generate_ca("test-ca", &mut mint).unwrap();
        let der = parse(&ca.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(cert.subject(), cert.issuer());
        cert.verify_signature(None)
            .expect("self-signed signature verifies");
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign());
        assert!(
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
                > 9 * 365 * 86400
        );
    }

    #[test]
    fn a_leaf_lives_as_long_as_asked() {
        let mut mint = Mint::fixed();
        let ca = generate_ca("test-ca", &mut mint).unwrap();
        let request = LeafRequest::client("nestor:operator", &["system:masters"]);
        let lifetime = |leaf: &KeyAndCert| {
            let der = parse(&leaf.cert_pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            // Less the hour of slack for clocks behind ours.
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp() - 3600
        };
        let day = issue_for(
            &ca,
            &request,
            std::time::Duration::from_secs(86_400),
            &mut mint,
        )
        .unwrap();
        assert_eq!(lifetime(&day), 86_400);
        assert_eq!(
            lifetime(&issue(&ca, &request, &mut mint).unwrap()),
            365 * 86_400
        );
        // The validity starts an hour before the mint's time, not the clock's.
        let der = parse(&day.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.validity().not_before.timestamp(),
            mint.now().as_second() - 3600
        );
    }

    #[test]
    fn leaf_chains_to_its_ca_with_sans_and_usages() {
        let mut mint = Mint::fixed();
        let ca = generate_ca("test-ca", &mut mint).unwrap();
        let request = LeafRequest {
            common_name: "kube-apiserver".into(),
            organizations: vec![],
            dns_names: vec![
                "kubernetes.default.svc".into(),
                "vc-apiserver.ns.svc".into(),
            ],
            ips: vec!["10.96.0.1".parse().unwrap()],
            usage: Usage::Server,
        };
        let leaf = issue(&ca, &request, &mut mint).unwrap();
        let ca_der = parse(&ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let der = parse(&leaf.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("leaf is signed by the CA");
        assert!(!cert.is_ca());
        let mut dns = vec![];
        let mut ips = vec![];
        for ext in cert.extensions() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(dns, vec!["kubernetes.default.svc", "vc-apiserver.ns.svc"]);
        assert_eq!(ips, vec![vec![10, 96, 0, 1]]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
    }

    #[test]
    fn client_cert_carries_user_and_groups() {
        let mut mint = Mint::fixed();
        let ca = generate_ca("test-ca", &mut mint).unwrap();
        let leaf = issue(
            &ca,
            &LeafRequest::client("kubernetes-admin", &["system:masters"]),
            &mut mint,
        )
        .unwrap();
        let der = parse(&leaf.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, vec!["kubernetes-admin"]);
        assert_eq!(orgs, vec!["system:masters"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn keys_are_p256_and_debug_hides_them() {
        let bundle = generate_ca_bundle("vc", &mut Mint::fixed()).unwrap();
        assert!(bundle.service_account.private_pem.contains("PRIVATE KEY"));
        assert!(bundle.service_account.public_pem.contains("PUBLIC KEY"));
        let shown = format!("{bundle:?}");
        assert!(
            !shown.contains("PRIVATE KEY"),
            "Debug must not print keys: {shown}"
        );
        assert_ne!(bundle.cluster.cert_pem, bundle.etcd.cert_pem);
    }

    #[test]
    fn fingerprint_and_hash_are_stable() {
        assert_eq!(fingerprint("abc"), fingerprint("abc\n"));
        assert_eq!(fingerprint("abc").len(), 16);
    }
}
