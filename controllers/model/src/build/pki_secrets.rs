//! The Secrets that carry a virtual cluster's PKI and kubeconfigs.
//!
//! The roots of trust (`<vc>-ca`) are generated once and never regenerated
//! while the Secret exists. The client signer (`<vc>-client-signer`), the
//! CA behind the nested CSR API's `kubernetes.io/kube-apiserver-client`
//! signer, is generated anew with every admin generation, so that a
//! revocation also ends every client certificate a tenant minted itself
//! (for a later admin group, say). Every other Secret records, in an annotation,
//! a hash of the inputs it was made from (the roots' fingerprint, the
//! names it must cover, the endpoint it points at); it is issued again only
//! when those inputs change, and that is announced with an Event.

use crate::build::kubeconfig::{self, Credentials};
use crate::build::mint::Mint;
use crate::build::pki::{self, CaBundle, KeyAndCert, LeafRequest, PkiError, ServiceAccountKeys};
use crate::model::inputs::ClusterInputs;
use crate::model::names::{ClusterNames, Component, INPUTS_HASH, cluster_child_meta};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

/// Annotation on the root Secrets (the CA and the client signer): the
/// fingerprint of every root it holds.
pub const BUNDLE_FINGERPRINT: &str = "nestor.dev/bundle-fingerprint";
/// Annotation on every other PKI Secret: when its certificates are renewed
/// (two thirds into their one-year validity).
pub const RENEW_AFTER: &str = "nestor.dev/renew-after";
/// How long after issuing a leaf certificate is renewed.
pub const RENEW_AFTER_DAYS: i64 = 243;

/// Whether a PKI Secret's metadata says it is current: made from
/// `expected_inputs` and not yet due for renewal at `now`.
pub fn is_current(
    annotations: Option<&BTreeMap<String, String>>,
    expected_inputs: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    let Some(annotations) = annotations else {
        return false;
    };
    let renew_ok = match annotations.get(RENEW_AFTER) {
        // Only the roots carry no renewal date; they are not renewed this way.
        None => annotations.contains_key(BUNDLE_FINGERPRINT),
        Some(at) => at
            .parse::<k8s_openapi::jiff::Timestamp>()
            .is_ok_and(|at| now < at),
    };
    annotations.get(INPUTS_HASH).map(String::as_str) == Some(expected_inputs) && renew_ok
}

/// The Secrets of a cluster's PKI, in the order they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PkiSecret {
    Ca,
    ClientSigner,
    EtcdCerts,
    ApiServerCerts,
    ControllerManager,
    Scheduler,
    CoreDns,
    Admin,
    BreakGlass,
}

impl PkiSecret {
    /// Every Secret signed by the roots in [`PkiSecret::Ca`] (or holding
    /// [`PkiSecret::ClientSigner`]'s certificate), which are written before
    /// them.
    pub const LEAVES: [PkiSecret; 7] = [
        PkiSecret::EtcdCerts,
        PkiSecret::ApiServerCerts,
        PkiSecret::ControllerManager,
        PkiSecret::Scheduler,
        PkiSecret::CoreDns,
        PkiSecret::Admin,
        PkiSecret::BreakGlass,
    ];

    pub fn name(self, names: &ClusterNames) -> String {
        match self {
            PkiSecret::Ca => names.ca_secret(),
            PkiSecret::ClientSigner => names.client_signer_secret(),
            PkiSecret::EtcdCerts => names.etcd_certs_secret(),
            PkiSecret::ApiServerCerts => names.apiserver_certs_secret(),
            PkiSecret::ControllerManager => names.controller_manager_secret(),
            PkiSecret::Scheduler => names.scheduler_secret(),
            PkiSecret::CoreDns => names.coredns_secret(),
            PkiSecret::Admin => names.admin_kubeconfig_secret(),
            PkiSecret::BreakGlass => names.break_glass_kubeconfig_secret(),
        }
    }

    fn component(self) -> Component {
        match self {
            PkiSecret::Ca | PkiSecret::ClientSigner | PkiSecret::Admin | PkiSecret::BreakGlass => {
                Component::Pki
            }
            PkiSecret::EtcdCerts => Component::Etcd,
            PkiSecret::ApiServerCerts => Component::ApiServer,
            PkiSecret::ControllerManager => Component::ControllerManager,
            PkiSecret::Scheduler => Component::Scheduler,
            PkiSecret::CoreDns => Component::CoreDns,
        }
    }
}

/// The API server's user towards kubelets: in no group, bound in the
/// nested cluster to `system:kubelet-api-admin` and nothing else, so a
/// request that rides on its certificate (a node proxy turned back onto
/// the API server) is no superuser and meets the guard like any other.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The tenant admin's user name.
pub const ADMIN_USER: &str = "nestor:admin";
/// The break-glass credential's user: a superuser (`system:masters`) for
/// the platform admin, kept on the host beside the cluster's CA key.
pub const BREAK_GLASS_USER: &str = "nestor:break-glass";

/// The group of the current admin certificate, bound to `cluster-admin` in
/// the nested cluster: raising `spec.apiServer.adminCredentialGeneration`
/// moves the binding to a new group, and earlier certificates lose it.
pub fn admin_group(inputs: &ClusterInputs) -> String {
    format!(
        "nestor:cluster-admins:{}",
        inputs.vc.spec.api_server.admin_credential_generation
    )
}

/// Where the API server is reached, as far as certificates and kubeconfigs
/// are concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exposure {
    /// URL written into the admin kubeconfig.
    pub admin_endpoint: String,
    /// Addresses and names the serving certificate must cover beyond the
    /// fixed ones (the host Service's cluster IP, node or load-balancer
    /// addresses).
    pub extra_sans: Vec<String>,
}

/// Fingerprint of every root in a bundle.
pub fn bundle_fingerprint(bundle: &CaBundle) -> String {
    crate::model::hash::inputs_hash([
        pki::fingerprint(&bundle.cluster.cert_pem),
        pki::fingerprint(&bundle.etcd.cert_pem),
        pki::fingerprint(&bundle.front_proxy.cert_pem),
        pki::fingerprint(&bundle.service_account.public_pem),
    ])
}

/// The fingerprints of the roots a cluster's leaves are made from.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprints<'a> {
    /// [`bundle_fingerprint`] of the CA Secret's roots.
    pub bundle: &'a str,
    /// [`pki::fingerprint`] of the client signer's certificate.
    pub client_signer: &'a str,
}

/// The hash of what a Secret's content depends on.
pub fn inputs_hash(
    kind: PkiSecret,
    inputs: &ClusterInputs,
    exposure: &Exposure,
    fps: Fingerprints,
) -> String {
    let names = &inputs.names;
    let bundle_fp = fps.bundle;
    match kind {
        PkiSecret::Ca => crate::model::hash::inputs_hash(["ca", "v1"]),
        // Replaced with every admin generation, and only then.
        PkiSecret::ClientSigner => {
            crate::model::hash::inputs_hash(["client-signer", &admin_group(inputs)])
        }
        PkiSecret::EtcdCerts => {
            let req = crate::build::etcd::server_cert_request(names);
            crate::model::hash::inputs_hash(
                ["etcd", bundle_fp]
                    .into_iter()
                    .map(String::from)
                    .chain(req.dns_names)
                    .chain(req.ips.iter().map(|i| i.to_string())),
            )
        }
        PkiSecret::ApiServerCerts => {
            let req = crate::build::apiserver::serving_cert_request(inputs, &exposure.extra_sans);
            crate::model::hash::inputs_hash(
                // Names the kubelet client certificate's rights, so that a
                // Secret issued with other groups is issued again.
                [
                    "apiserver",
                    "kubelet-api-admin",
                    bundle_fp,
                    fps.client_signer,
                ]
                .into_iter()
                .map(String::from)
                .chain(req.dns_names)
                .chain(req.ips.iter().map(|i| i.to_string())),
            )
        }
        PkiSecret::ControllerManager => crate::model::hash::inputs_hash([
            format!("{kind:?}"),
            bundle_fp.to_string(),
            fps.client_signer.to_string(),
            names.internal_endpoint(),
        ]),
        PkiSecret::Scheduler | PkiSecret::CoreDns => crate::model::hash::inputs_hash([
            format!("{kind:?}"),
            bundle_fp.to_string(),
            names.internal_endpoint(),
        ]),
        PkiSecret::Admin => crate::model::hash::inputs_hash([
            "admin",
            bundle_fp,
            &exposure.admin_endpoint,
            &admin_group(inputs),
        ]),
        PkiSecret::BreakGlass => {
            crate::model::hash::inputs_hash(["break-glass", bundle_fp, &exposure.admin_endpoint])
        }
    }
}

fn bytes(map: &mut BTreeMap<String, ByteString>, key: &str, value: &str) {
    map.insert(key.into(), ByteString(value.as_bytes().to_vec()));
}

fn put_pair(map: &mut BTreeMap<String, ByteString>, stem: &str, pair: &KeyAndCert) {
    bytes(map, &format!("{stem}.crt"), &pair.cert_pem);
    bytes(map, &format!("{stem}.key"), &pair.key_pem);
}

fn put_sa(map: &mut BTreeMap<String, ByteString>, sa: &ServiceAccountKeys) {
    bytes(map, "sa.key", &sa.private_pem);
    bytes(map, "sa.pub", &sa.public_pem);
}

fn component_kubeconfig(
    inputs: &ClusterInputs,
    bundle: &CaBundle,
    user: &str,
    groups: &[&str],
    server: &str,
    mint: &mut Mint,
) -> Result<String, PkiError> {
    let cert = pki::issue(&bundle.cluster, &LeafRequest::client(user, groups), mint)?;
    Ok(kubeconfig::render(
        &inputs.names.cluster,
        server,
        &bundle.cluster.cert_pem,
        user,
        Credentials::Certificate {
            cert_pem: &cert.cert_pem,
            key_pem: &cert.key_pem,
        },
    ))
}

/// Builds one PKI Secret, issuing whatever certificates it holds.
/// `client_signer` is the CA held in [`PkiSecret::ClientSigner`]; `mint`
/// gives the time the certificates start from and their serials.
pub fn desired_pki_secret(
    kind: PkiSecret,
    inputs: &ClusterInputs,
    exposure: &Exposure,
    bundle: &CaBundle,
    client_signer: &KeyAndCert,
    mint: &mut Mint,
) -> Result<Secret, PkiError> {
    let names = &inputs.names;
    let bundle_fp = bundle_fingerprint(bundle);
    let signer_fp = pki::fingerprint(&client_signer.cert_pem);
    let internal = names.internal_endpoint();
    let mut data = BTreeMap::new();
    match kind {
        PkiSecret::Ca => {
            put_pair(&mut data, "ca", &bundle.cluster);
            put_pair(&mut data, "etcd-ca", &bundle.etcd);
            put_pair(&mut data, "front-proxy-ca", &bundle.front_proxy);
            put_sa(&mut data, &bundle.service_account);
        }
        PkiSecret::ClientSigner => put_pair(&mut data, "ca", client_signer),
        PkiSecret::EtcdCerts => {
            let server = pki::issue(
                &bundle.etcd,
                &crate::build::etcd::server_cert_request(names),
                mint,
            )?;
            let peer = pki::issue(
                &bundle.etcd,
                &crate::build::etcd::server_cert_request(names),
                mint,
            )?;
            bytes(&mut data, "ca.crt", &bundle.etcd.cert_pem);
            put_pair(&mut data, "server", &server);
            put_pair(&mut data, "peer", &peer);
        }
        PkiSecret::ApiServerCerts => {
            let serving = pki::issue(
                &bundle.cluster,
                &crate::build::apiserver::serving_cert_request(inputs, &exposure.extra_sans),
                mint,
            )?;
            let etcd_client = pki::issue(
                &bundle.etcd,
                &LeafRequest::client("kube-apiserver-etcd-client", &[]),
                mint,
            )?;
            let kubelet_client = pki::issue(
                &bundle.cluster,
                &LeafRequest::client(KUBELET_CLIENT_USER, &[]),
                mint,
            )?;
            let front_proxy = pki::issue(
                &bundle.front_proxy,
                &LeafRequest::client("front-proxy-client", &[]),
                mint,
            )?;
            bytes(&mut data, "ca.crt", &bundle.cluster.cert_pem);
            // Client certificates: Nestor's own (the cluster CA) and those
            // the nested CSR API signs (the current client signer only).
            bytes(
                &mut data,
                "client-ca.crt",
                &format!("{}{}", bundle.cluster.cert_pem, client_signer.cert_pem),
            );
            bytes(&mut data, "etcd-ca.crt", &bundle.etcd.cert_pem);
            bytes(
                &mut data,
                "front-proxy-ca.crt",
                &bundle.front_proxy.cert_pem,
            );
            put_pair(&mut data, "apiserver", &serving);
            put_pair(&mut data, "apiserver-etcd-client", &etcd_client);
            put_pair(&mut data, "apiserver-kubelet-client", &kubelet_client);
            put_pair(&mut data, "front-proxy-client", &front_proxy);
            put_sa(&mut data, &bundle.service_account);
        }
        PkiSecret::ControllerManager => {
            let config = component_kubeconfig(
                inputs,
                bundle,
                "system:kube-controller-manager",
                &[],
                &internal,
                mint,
            )?;
            bytes(&mut data, "kubeconfig", &config);
            put_pair(&mut data, "ca", &bundle.cluster);
            put_pair(&mut data, "client-signer", client_signer);
            bytes(&mut data, "sa.key", &bundle.service_account.private_pem);
        }
        PkiSecret::Scheduler => {
            let config = component_kubeconfig(
                inputs,
                bundle,
                "system:kube-scheduler",
                &[],
                &internal,
                mint,
            )?;
            bytes(&mut data, "kubeconfig", &config);
        }
        PkiSecret::CoreDns => {
            let config = component_kubeconfig(
                inputs,
                bundle,
                crate::build::coredns::COREDNS_USER,
                &[],
                &internal,
                mint,
            )?;
            bytes(&mut data, "kubeconfig", &config);
        }
        PkiSecret::Admin => {
            let config = component_kubeconfig(
                inputs,
                bundle,
                ADMIN_USER,
                &[&admin_group(inputs)],
                &exposure.admin_endpoint,
                mint,
            )?;
            bytes(&mut data, "kubeconfig", &config);
            bytes(&mut data, "ca.crt", &bundle.cluster.cert_pem);
        }
        PkiSecret::BreakGlass => {
            let config = component_kubeconfig(
                inputs,
                bundle,
                BREAK_GLASS_USER,
                &["system:masters"],
                &exposure.admin_endpoint,
                mint,
            )?;
            bytes(&mut data, "kubeconfig", &config);
            bytes(&mut data, "ca.crt", &bundle.cluster.cert_pem);
        }
    }
    let mut metadata = cluster_child_meta(inputs.vc, kind.name(names), kind.component());
    let fps = Fingerprints {
        bundle: &bundle_fp,
        client_signer: &signer_fp,
    };
    let mut annotations = BTreeMap::from([(
        INPUTS_HASH.to_string(),
        inputs_hash(kind, inputs, exposure, fps),
    )]);
    if kind == PkiSecret::Ca {
        annotations.insert(BUNDLE_FINGERPRINT.into(), bundle_fp);
    } else if kind == PkiSecret::ClientSigner {
        annotations.insert(BUNDLE_FINGERPRINT.into(), signer_fp);
    } else {
        let renew =
            mint.now() + k8s_openapi::jiff::SignedDuration::from_hours(24 * RENEW_AFTER_DAYS);
        annotations.insert(RENEW_AFTER.into(), renew.to_string());
    }
    metadata.annotations = Some(annotations);
    Ok(Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

fn text_of(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn pair_of(secret: &Secret, stem: &str) -> Option<KeyAndCert> {
    Some(KeyAndCert {
        cert_pem: text_of(secret, &format!("{stem}.crt"))?,
        key_pem: text_of(secret, &format!("{stem}.key"))?,
    })
}

/// Reads the client signer back from its Secret's data.
pub fn client_signer_from_secret(secret: &Secret) -> Option<KeyAndCert> {
    pair_of(secret, "ca")
}

/// Reads the roots of trust back from the CA Secret's data.
pub fn bundle_from_secret(secret: &Secret) -> Option<CaBundle> {
    Some(CaBundle {
        cluster: pair_of(secret, "ca")?,
        etcd: pair_of(secret, "etcd-ca")?,
        front_proxy: pair_of(secret, "front-proxy-ca")?,
        service_account: ServiceAccountKeys {
            private_pem: text_of(secret, "sa.key")?,
            public_pem: text_of(secret, "sa.pub")?,
        },
    })
}

#[cfg(test)]
#[path = "pki_secrets_tests.rs"]
mod tests;
