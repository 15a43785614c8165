//! Micro-benchmarks of the pure parts of a reconcile: building every
//! desired object of one virtual cluster (with and without issuing its
//! certificates), the CA bundle, and the status computation.
//!
//! cargo bench -p nestor-controllers

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nestor_crds::{VirtualCluster, VirtualClusterSpec};
use nestor_model::OperatorSettings;
use nestor_model::build::mint::Mint;
use nestor_model::build::pki;
use nestor_model::build::pki_secrets::Exposure;
use nestor_model::build::{
    ClientStarts, ClusterClients, ClusterServices, ClusterWorkloads, DesiredCluster,
};
use nestor_model::model::inputs::ClusterInputs;
use nestor_model::model::status::{Observed, Rollout, compute_status};
use nestor_model::model::validate::validate_cluster;
use std::hint::black_box;

fn cluster() -> VirtualCluster {
    let spec: VirtualClusterSpec = serde_json::from_str("{}").expect("an empty spec deserializes");
    let mut vc = VirtualCluster::new("bench", spec);
    vc.metadata.namespace = Some("tenants".into());
    vc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    vc.metadata.generation = Some(1);
    vc
}

fn builders(c: &mut Criterion) {
    let vc = cluster();
    let settings = OperatorSettings::default();
    let valid = validate_cluster(
        "bench",
        &vc.spec,
        &nestor_model::model::settings::OperatorSettings::default().platform(),
    )
    .expect("valid");
    let inputs = ClusterInputs::new(&vc, valid, &settings, "rev".into());
    let exposure = Exposure {
        admin_endpoint: "https://10.0.0.1:6443".into(),
        extra_sans: vec!["10.0.0.1".into()],
    };
    let mut mint = Mint::seeded(k8s_openapi::jiff::Timestamp::UNIX_EPOCH, 1);
    let bundle = pki::generate_ca_bundle("bench", &mut mint).expect("bundle");
    let client_signer = pki::generate_ca("bench-client-signer", &mut mint).expect("signer");

    c.bench_function("validate_cluster", |b| {
        b.iter(|| {
            validate_cluster(
                "bench",
                black_box(&vc.spec),
                &nestor_model::model::settings::OperatorSettings::default().platform(),
            )
        })
    });
    c.bench_function(
        "desired workloads, services, config maps (no certificates)",
        |b| {
            b.iter(|| {
                let i = black_box(&inputs);
                (
                    ClusterServices::desired(i),
                    ClusterWorkloads::desired(i),
                    ClusterClients::desired(i, ClientStarts::default()),
                )
            })
        },
    );
    c.bench_function("DesiredCluster (every child, certificates issued)", |b| {
        b.iter(|| {
            DesiredCluster::new(
                black_box(&inputs),
                &exposure,
                (&bundle, &client_signer),
                None,
                &mut mint,
            )
            .expect("builds")
        })
    });
    c.bench_function("generate_ca_bundle", |b| {
        b.iter(|| pki::generate_ca_bundle("bench", &mut mint).expect("bundle"))
    });
}

fn status(c: &mut Criterion) {
    let rollout = || {
        Some(Rollout {
            desired: 1,
            ready: 1,
            updated: 1,
            observed: true,
            version: Some("1.35.4".into()),
            outdated: 0,
        })
    };
    let observed = Observed {
        etcd: rollout(),
        apiserver: rollout(),
        controller_manager: rollout(),
        scheduler: rollout(),
        coredns: rollout(),
        endpoint: Some("https://10.0.0.1:6443".into()),
        admin_kubeconfig_secret: Some("bench-admin-kubeconfig".into()),
        ..Observed::default()
    };
    let now = Time("2026-01-01T00:00:00Z".parse().expect("time"));
    let previous = compute_status(&observed, None, Some(1), &now);
    c.bench_function("compute_status (unchanged)", |b| {
        b.iter(|| compute_status(black_box(&observed), Some(&previous), Some(1), &now))
    });
}

criterion_group!(benches, builders, status);
criterion_main!(benches);
