//! What the PKI Secrets hold, which groups their client certificates carry,
//! and when they are issued again.

use super::*;
use crate::build::mint::Mint;
use crate::model::inputs::fixtures;
use serde_json::json;
use x509_parser::pem::parse_x509_pem;

fn fp(bundle: &str) -> Fingerprints<'_> {
    Fingerprints {
        bundle,
        client_signer: "signer",
    }
}

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
    let mut mint = Mint::fixed();
    let bundle = pki::generate_ca_bundle("demo", &mut mint).unwrap();
    let signer = pki::generate_ca("demo-client-signer", &mut mint).unwrap();
    for kind in [PkiSecret::Ca, PkiSecret::ClientSigner]
        .into_iter()
        .chain(PkiSecret::LEAVES)
    {
        let secret =
            desired_pki_secret(kind, &inputs, &exposure(), &bundle, &signer, &mut mint).unwrap();
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
    let ca = desired_pki_secret(
        PkiSecret::Ca,
        &inputs,
        &exposure(),
        &bundle,
        &signer,
        &mut mint,
    )
    .unwrap();
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
    let mut mint = Mint::fixed();
    let bundle = pki::generate_ca_bundle("demo", &mut mint).unwrap();
    let signer = pki::generate_ca("demo-client-signer", &mut mint).unwrap();
    let secret = desired_pki_secret(
        PkiSecret::ApiServerCerts,
        &inputs,
        &exposure(),
        &bundle,
        &signer,
        &mut mint,
    )
    .unwrap();
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
    let mut mint = Mint::fixed();
    let bundle = pki::generate_ca_bundle("demo", &mut mint).unwrap();
    let signer = pki::generate_ca("demo-client-signer", &mut mint).unwrap();
    let mut seen = 0;
    for kind in PkiSecret::LEAVES {
        let secret =
            desired_pki_secret(kind, &inputs, &exposure(), &bundle, &signer, &mut mint).unwrap();
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
    let apiserver = desired_pki_secret(
        PkiSecret::ApiServerCerts,
        &inputs,
        &exposure(),
        &bundle,
        &signer,
        &mut mint,
    )
    .unwrap();
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
    let mut mint = Mint::fixed();
    let bundle = pki::generate_ca_bundle("demo", &mut mint).unwrap();
    let signer = pki::generate_ca("demo-client-signer", &mut mint).unwrap();
    let secret = desired_pki_secret(
        PkiSecret::Scheduler,
        &inputs,
        &exposure(),
        &bundle,
        &signer,
        &mut mint,
    )
    .unwrap();
    let annotations = secret.metadata.annotations.as_ref();
    let hash = inputs_hash(
        PkiSecret::Scheduler,
        &inputs,
        &exposure(),
        Fingerprints {
            bundle: &bundle_fingerprint(&bundle),
            client_signer: &pki::fingerprint(&signer.cert_pem),
        },
    );
    // The renewal date counts from the mint's time, not the clock's.
    let now = mint.now();
    let due = now + k8s_openapi::jiff::SignedDuration::from_hours(24 * RENEW_AFTER_DAYS);
    assert_eq!(
        annotations.and_then(|a| a.get(RENEW_AFTER)),
        Some(&due.to_string())
    );
    assert!(is_current(annotations, &hash, now));
    assert!(!is_current(annotations, "other", now));
    let later = now + k8s_openapi::jiff::SignedDuration::from_hours(24 * (RENEW_AFTER_DAYS + 1));
    assert!(!is_current(annotations, &hash, later), "due for renewal");
    let ca = desired_pki_secret(
        PkiSecret::Ca,
        &inputs,
        &exposure(),
        &bundle,
        &signer,
        &mut mint,
    )
    .unwrap();
    let ca_hash = inputs_hash(PkiSecret::Ca, &inputs, &exposure(), fp(""));
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
    let a = inputs_hash(PkiSecret::ApiServerCerts, &inputs, &e, fp("fp1"));
    assert_eq!(
        a,
        inputs_hash(PkiSecret::ApiServerCerts, &inputs, &e, fp("fp1"))
    );
    assert_ne!(
        a,
        inputs_hash(PkiSecret::ApiServerCerts, &inputs, &e, fp("fp2"))
    );
    let moved = Exposure {
        extra_sans: vec!["10.0.0.8".into()],
        ..e.clone()
    };
    assert_ne!(
        a,
        inputs_hash(PkiSecret::ApiServerCerts, &inputs, &moved, fp("fp1"))
    );
    // The admin kubeconfig does not care about SANs, only the endpoint.
    assert_eq!(
        inputs_hash(PkiSecret::Admin, &inputs, &e, fp("fp1")),
        inputs_hash(PkiSecret::Admin, &inputs, &moved, fp("fp1"))
    );
    // The CA never depends on anything.
    assert_eq!(
        inputs_hash(PkiSecret::Ca, &inputs, &e, fp("x")),
        inputs_hash(PkiSecret::Ca, &inputs, &moved, fp("y"))
    );
}

#[test]
fn the_client_signer_moves_with_the_admin_generation_alone() {
    let vc = fixtures::vc(json!({}));
    let raised = fixtures::vc(json!({"apiServer": {"adminCredentialGeneration": 1}}));
    let (inputs, later) = (fixtures::inputs(&vc), fixtures::inputs(&raised));
    let e = exposure();
    let moved = Exposure {
        admin_endpoint: "https://10.0.0.8:6443".into(),
        extra_sans: vec!["10.0.0.8".into()],
    };
    let signer = |inputs: &ClusterInputs, e: &Exposure, f: &str| {
        inputs_hash(PkiSecret::ClientSigner, inputs, e, fp(f))
    };
    assert_eq!(signer(&inputs, &e, "a"), signer(&inputs, &moved, "b"));
    assert_ne!(signer(&inputs, &e, "a"), signer(&later, &e, "a"));
    // Whatever holds the signer's certificate follows it.
    let with = |kind, client_signer| {
        inputs_hash(
            kind,
            &inputs,
            &e,
            Fingerprints {
                bundle: "fp",
                client_signer,
            },
        )
    };
    for kind in [PkiSecret::ApiServerCerts, PkiSecret::ControllerManager] {
        assert_ne!(with(kind, "s1"), with(kind, "s2"), "{kind:?}");
    }
    for kind in [PkiSecret::EtcdCerts, PkiSecret::Scheduler, PkiSecret::Admin] {
        assert_eq!(with(kind, "s1"), with(kind, "s2"), "{kind:?}");
    }
}

#[test]
fn the_api_server_trusts_the_client_signer_and_the_controller_manager_holds_it() {
    let vc = fixtures::vc(json!({}));
    let inputs = fixtures::inputs(&vc);
    let mut mint = Mint::fixed();
    let bundle = pki::generate_ca_bundle("demo", &mut mint).unwrap();
    let signer = pki::generate_ca("demo-client-signer", &mut mint).unwrap();
    let mut build = |kind| {
        desired_pki_secret(kind, &inputs, &exposure(), &bundle, &signer, &mut mint)
            .unwrap()
            .data
            .unwrap()
    };
    let text = |data: &BTreeMap<String, ByteString>, key: &str| {
        String::from_utf8(data[key].0.clone()).unwrap()
    };
    let apiserver = build(PkiSecret::ApiServerCerts);
    assert_eq!(
        text(&apiserver, "client-ca.crt"),
        format!("{}{}", bundle.cluster.cert_pem, signer.cert_pem)
    );
    let cm = build(PkiSecret::ControllerManager);
    assert_eq!(text(&cm, "client-signer.key"), signer.key_pem);
    assert_eq!(text(&cm, "ca.crt"), bundle.cluster.cert_pem);
    let held = build(PkiSecret::ClientSigner);
    let back = client_signer_from_secret(&Secret {
        data: Some(held),
        ..Secret::default()
    })
    .unwrap();
    assert_eq!(back, signer);
}
