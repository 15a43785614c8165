//! The Secrets that carry a virtual cluster's PKI and kubeconfigs.
//!
//! The roots of trust (`<vc>-ca`) are generated once and never regenerated
//! while the Secret exists. Every other Secret records, in an annotation,
//! a hash of the inputs it was made from (the roots' fingerprint, the
//! names it must cover, the endpoint it points at); it is issued again only
//! when those inputs change, and that is announced with an Event.

use crate::build::kubeconfig::{self, Credentials};
use crate::build::pki::{self, CaBundle, KeyAndCert, LeafRequest, PkiError, ServiceAccountKeys};
use crate::model::inputs::ClusterInputs;
use crate::model::names::{ClusterNames, Component, INPUTS_HASH, cluster_child_meta};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

/// Annotation on the CA Secret: the fingerprint of every root it holds.
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
    EtcdCerts,
    ApiServerCerts,
    ControllerManager,
    Scheduler,
    CoreDns,
    Admin,
    BreakGlass,
}

impl PkiSecret {
    /// Every Secret signed by the roots in [`PkiSecret::Ca`], which is
    /// written before them.
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
            PkiSecret::Ca | PkiSecret::Admin | PkiSecret::BreakGlass => Component::Pki,
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

/// The hash of what a Secret's content depends on. `bundle_fp` is the
/// roots' fingerprint.
pub fn inputs_hash(
    kind: PkiSecret,
    inputs: &ClusterInputs,
    exposure: &Exposure,
    bundle_fp: &str,
) -> String {
    let names = &inputs.names;
    match kind {
        PkiSecret::Ca => crate::model::hash::inputs_hash(["ca", "v1"]),
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
                ["apiserver", "kubelet-api-admin", bundle_fp]
                    .into_iter()
                    .map(String::from)
                    .chain(req.dns_names)
                    .chain(req.ips.iter().map(|i| i.to_string())),
            )
        }
        PkiSecret::ControllerManager | PkiSecret::Scheduler | PkiSecret::CoreDns => {
            crate::model::hash::inputs_hash([
                format!("{kind:?}"),
                bundle_fp.to_string(),
                names.internal_endpoint(),
            ])
        }
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
) -> Result<String, PkiError> {
    let cert = pki::issue(&bundle.cluster, &LeafRequest::client(user, groups))?;
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
pub fn desired_pki_secret(
    kind: PkiSecret,
    inputs: &ClusterInputs,
    exposure: &Exposure,
    bundle: &CaBundle,
) -> Result<Secret, PkiError> {
    let names = &inputs.names;
    let fp = bundle_fingerprint(bundle);
    let internal = names.internal_endpoint();
    let mut data = BTreeMap::new();
    match kind {
        PkiSecret::Ca => {
            put_pair(&mut data, "ca", &bundle.cluster);
            put_pair(&mut data, "etcd-ca", &bundle.etcd);
            put_pair(&mut data, "front-proxy-ca", &bundle.front_proxy);
            put_sa(&mut data, &bundle.service_account);
        }
        PkiSecret::EtcdCerts => {
            let server = pki::issue(
                &bundle.etcd,
                &crate::build::etcd::server_cert_request(names),
            )?;
            let peer = pki::issue(
                &bundle.etcd,
                &crate::build::etcd::server_cert_request(names),
            )?;
            bytes(&mut data, "ca.crt", &bundle.etcd.cert_pem);
            put_pair(&mut data, "server", &server);
            put_pair(&mut data, "peer", &peer);
        }
        PkiSecret::ApiServerCerts => {
            let serving = pki::issue(
                &bundle.cluster,
                &crate::build::apiserver::serving_cert_request(inputs, &exposure.extra_sans),
            )?;
            let etcd_client = pki::issue(
                &bundle.etcd,
                &LeafRequest::client("kube-apiserver-etcd-client", &[]),
            )?;
            let kubelet_client = pki::issue(
                &bundle.cluster,
                &LeafRequest::client(KUBELET_CLIENT_USER, &[]),
            )?;
            let front_proxy = pki::issue(
                &bundle.front_proxy,
                &LeafRequest::client("front-proxy-client", &[]),
            )?;
            bytes(&mut data, "ca.crt", &bundle.cluster.cert_pem);
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
            )?;
            bytes(&mut data, "kubeconfig", &config);
            put_pair(&mut data, "ca", &bundle.cluster);
            bytes(&mut data, "sa.key", &bundle.service_account.private_pem);
        }
        PkiSecret::Scheduler => {
            let config =
                component_kubeconfig(inputs, bundle, "system:kube-scheduler", &[], &internal)?;
            bytes(&mut data, "kubeconfig", &config);
        }
        PkiSecret::CoreDns => {
            let config = component_kubeconfig(
                inputs,
                bundle,
                crate::build::coredns::COREDNS_USER,
                &[],
                &internal,
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
            )?;
            bytes(&mut data, "kubeconfig", &config);
            bytes(&mut data, "ca.crt", &bundle.cluster.cert_pem);
        }
    }
    let mut metadata = cluster_child_meta(inputs.vc, kind.name(names), kind.component());
    let mut annotations = BTreeMap::from([(
        INPUTS_HASH.to_string(),
        inputs_hash(kind, inputs, exposure, &fp),
    )]);
    if kind == PkiSecret::Ca {
        annotations.insert(BUNDLE_FINGERPRINT.into(), fp);
    } else {
        let renew = k8s_openapi::jiff::Timestamp::now()
            + k8s_openapi::jiff::SignedDuration::from_hours(24 * RENEW_AFTER_DAYS);
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

/// Reads the roots of trust back from the CA Secret's data.
pub fn bundle_from_secret(secret: &Secret) -> Option<CaBundle> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let pair = |stem: &str| {
        Some(KeyAndCert {
            cert_pem: text(&format!("{stem}.crt"))?,
            key_pem: text(&format!("{stem}.key"))?,
        })
    };
    Some(CaBundle {
        cluster: pair("ca")?,
        etcd: pair("etcd-ca")?,
        front_proxy: pair("front-proxy-ca")?,
        service_account: ServiceAccountKeys {
            private_pem: text("sa.key")?,
            public_pem: text("sa.pub")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;
    use x509_parser::pem::parse_x509_pem;

    fn exposure() -> Exposure {
        Exposure {
            admin_endpoint: "https://10.0.0.7:6443".into(),
            extra_sans: vec!["10.0.0.7".into()],
        }
    }

    #[test]
    fn every_secret_builds_and_the_ca_round_trips() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let bundle = pki::generate_ca_bundle("demo").unwrap();
        for kind in std::iter::once(PkiSecret::Ca).chain(PkiSecret::LEAVES) {
            let secret = desired_pki_secret(kind, &inputs, &exposure(), &bundle).unwrap();
            assert_eq!(secret.metadata.name, Some(kind.name(&inputs.names)));
            assert!(
                secret
                    .metadata
                    .annotations
                    .as_ref()
                    .unwrap()
                    .contains_key(INPUTS_HASH)
            );
            assert!(!secret.data.as_ref().unwrap().is_empty());
        }
        let ca = desired_pki_secret(PkiSecret::Ca, &inputs, &exposure(), &bundle).unwrap();
        let back = bundle_from_secret(&ca).unwrap();
        assert_eq!(bundle_fingerprint(&back), bundle_fingerprint(&bundle));
        assert_eq!(
            ca.metadata.annotations.unwrap()[BUNDLE_FINGERPRINT],
            bundle_fingerprint(&bundle)
        );
    }

    #[test]
    fn apiserver_secret_chains_to_the_cluster_ca() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let bundle = pki::generate_ca_bundle("demo").unwrap();
        let secret =
            desired_pki_secret(PkiSecret::ApiServerCerts, &inputs, &exposure(), &bundle).unwrap();
        let data = secret.data.unwrap();
        let ca_der = parse_x509_pem(&data["ca.crt"].0).unwrap().1.contents;
        let leaf_der = parse_x509_pem(&data["apiserver.crt"].0).unwrap().1.contents;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        let etcd_client_der = parse_x509_pem(&data["apiserver-etcd-client.crt"].0)
            .unwrap()
            .1
            .contents;
        let etcd_ca_der = parse_x509_pem(&data["etcd-ca.crt"].0).unwrap().1.contents;
        let (_, etcd_client) = x509_parser::parse_x509_certificate(&etcd_client_der).unwrap();
        let (_, etcd_ca) = x509_parser::parse_x509_certificate(&etcd_ca_der).unwrap();
        etcd_client
            .verify_signature(Some(etcd_ca.public_key()))
            .unwrap();
    }

    /// The groups of every client certificate a Secret holds: its `.crt`
    /// files and its kubeconfig's user.
    fn client_groups(secret: &Secret) -> Vec<(String, Vec<String>)> {
        use base64::Engine as _;
        let data = secret.data.as_ref().unwrap();
        let mut pems: Vec<(String, Vec<u8>)> = data
            .iter()
            .filter(|(k, _)| k.ends_with(".crt"))
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        if let Some(config) = data.get("kubeconfig") {
            let config: serde_json::Value = serde_yaml::from_slice(&config.0).unwrap();
            let cert = config["users"][0]["user"]["client-certificate-data"]
                .as_str()
                .unwrap();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(cert)
                .unwrap();
            pems.push(("kubeconfig".into(), pem));
        }
        pems.into_iter()
            .filter_map(|(key, pem)| {
                let der = parse_x509_pem(&pem).unwrap().1.contents;
                let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
                let eku = cert.extended_key_usage().ok().flatten()?.value;
                eku.client_auth.then(|| {
                    let groups = cert
                        .subject()
                        .iter_organization()
                        .map(|o| o.as_str().unwrap().to_string())
                        .collect();
                    (key, groups)
                })
            })
            .collect()
    }

    #[test]
    fn only_the_break_glass_credential_is_a_superuser() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let bundle = pki::generate_ca_bundle("demo").unwrap();
        let mut seen = 0;
        for kind in PkiSecret::LEAVES {
            let secret = desired_pki_secret(kind, &inputs, &exposure(), &bundle).unwrap();
            for (key, groups) in client_groups(&secret) {
                seen += 1;
                let masters = groups.iter().any(|g| g == "system:masters");
                assert_eq!(
                    masters,
                    kind == PkiSecret::BreakGlass,
                    "{kind:?} {key}: {groups:?}"
                );
            }
        }
        // etcd's server and peer certificates (both client and server),
        // the API server's three client certificates (etcd, kubelets,
        // front proxy) and the five kubeconfigs.
        assert_eq!(seen, 10);
        let apiserver =
            desired_pki_secret(PkiSecret::ApiServerCerts, &inputs, &exposure(), &bundle).unwrap();
        let kubelet = client_groups(&apiserver)
            .into_iter()
            .find(|(k, _)| k == "apiserver-kubelet-client.crt")
            .unwrap();
        assert!(kubelet.1.is_empty(), "{kubelet:?}");
    }

    #[test]
    fn renewal_is_due_two_thirds_into_the_validity() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let bundle = pki::generate_ca_bundle("demo").unwrap();
        let secret =
            desired_pki_secret(PkiSecret::Scheduler, &inputs, &exposure(), &bundle).unwrap();
        let annotations = secret.metadata.annotations.as_ref();
        let hash = inputs_hash(
            PkiSecret::Scheduler,
            &inputs,
            &exposure(),
            &bundle_fingerprint(&bundle),
        );
        let now = k8s_openapi::jiff::Timestamp::now();
        assert!(is_current(annotations, &hash, now));
        assert!(!is_current(annotations, "other", now));
        let later =
            now + k8s_openapi::jiff::SignedDuration::from_hours(24 * (RENEW_AFTER_DAYS + 1));
        assert!(!is_current(annotations, &hash, later), "due for renewal");
        let ca = desired_pki_secret(PkiSecret::Ca, &inputs, &exposure(), &bundle).unwrap();
        let ca_hash = inputs_hash(PkiSecret::Ca, &inputs, &exposure(), "");
        assert!(
            is_current(ca.metadata.annotations.as_ref(), &ca_hash, later),
            "roots are never renewed this way"
        );
    }

    #[test]
    fn inputs_hash_moves_only_with_its_inputs() {
        let vc = fixtures::vc(json!({}));
        let inputs = fixtures::inputs(&vc);
        let e = exposure();
        let a = inputs_hash(PkiSecret::ApiServerCerts, &inputs, &e, "fp1");
        assert_eq!(
            a,
            inputs_hash(PkiSecret::ApiServerCerts, &inputs, &e, "fp1")
        );
        assert_ne!(
            a,
            inputs_hash(PkiSecret::ApiServerCerts, &inputs, &e, "fp2")
        );
        let moved = Exposure {
            extra_sans: vec!["10.0.0.8".into()],
            ..e.clone()
        };
        assert_ne!(
            a,
            inputs_hash(PkiSecret::ApiServerCerts, &inputs, &moved, "fp1")
        );
        // The admin kubeconfig does not care about SANs, only the endpoint.
        assert_eq!(
            inputs_hash(PkiSecret::Admin, &inputs, &e, "fp1"),
            inputs_hash(PkiSecret::Admin, &inputs, &moved, "fp1")
        );
        // The CA never depends on anything.
        assert_eq!(
            inputs_hash(PkiSecret::Ca, &inputs, &e, "x"),
            inputs_hash(PkiSecret::Ca, &inputs, &moved, "y")
        );
    }
}
