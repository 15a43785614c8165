//! The objects under test: VirtualClusters and their children, built by
//! the operator's own builders, and how a benchmark client writes them.

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::{Api, PostParams};
use nestor_controllers::OperatorSettings;
use nestor_controllers::build::mint::Mint;
use nestor_controllers::build::pki;
use nestor_controllers::build::pki_secrets::Exposure;
use nestor_controllers::build::{ByKind, DesiredCluster, desired_pki_secrets};
use nestor_controllers::model::inputs::ClusterInputs;
use nestor_controllers::model::validate::validate_cluster;
use nestor_crds::{VirtualCluster, VirtualClusterSpec};
use serde_json::json;
use std::time::Instant;

/// Requests sent at once, by the floor's client and by the operator.
pub(crate) const CONCURRENCY: usize = 16;

/// An empty-spec VirtualCluster.
pub(crate) fn vc(name: &str, namespace: &str) -> VirtualCluster {
    let spec: VirtualClusterSpec =
        serde_json::from_value(json!({})).expect("an empty spec deserializes");
    let mut vc = VirtualCluster::new(name, spec);
    vc.metadata.namespace = Some(namespace.into());
    vc
}

/// How a benchmark client writes objects.
#[derive(Clone, Copy)]
pub(crate) enum Write {
    Create,
    Apply,
}

/// Writes objects with `in_flight` requests at once.
pub(crate) async fn write_all<K>(
    client: &kube::Client,
    namespace: &str,
    objects: Vec<K>,
    how: Write,
    in_flight: usize,
) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let apply = kube::api::PatchParams::apply("nestor-bench").force();
    futures::stream::iter(objects.into_iter().map(|o| {
        let (api, apply) = (api.clone(), apply.clone());
        async move {
            match how {
                Write::Create => api.create(&PostParams::default(), &o).await,
                Write::Apply => {
                    let name = o.meta().name.clone().unwrap_or_default();
                    api.patch(&name, &apply, &kube::api::Patch::Apply(&o)).await
                }
            }
        }
    }))
    .buffer_unordered(in_flight)
    .try_collect()
    .await
    .map_err(Into::into)
}

/// Fresh material at the current time, as the operator mints it.
pub(crate) fn mint() -> Mint {
    Mint::at(k8s_openapi::jiff::Timestamp::now())
}

/// Every child of `vc`, built by the operator's own builders.
pub(crate) fn children(
    vc: &VirtualCluster,
    settings: &OperatorSettings,
    bundle: &pki::CaBundle,
) -> Result<ByKind> {
    let valid = validate_cluster(
        &vc.metadata.name.clone().unwrap_or_default(),
        &vc.spec,
        &settings.platform(),
    )?;
    let inputs = ClusterInputs::new(vc, valid, settings, "bench".into());
    let exposure = Exposure {
        admin_endpoint: inputs.names.internal_endpoint(),
        extra_sans: vec![],
    };
    let mut mint = mint();
    let client_signer = pki::generate_ca("bench-client-signer", &mut mint)?;
    let roots = (bundle, &client_signer);
    Ok(DesiredCluster::new(&inputs, &exposure, roots, None, &mut mint)?.by_kind())
}

/// Writes children kind by kind (Secrets, Services, ConfigMaps,
/// NetworkPolicies, StatefulSets, Deployments), `in_flight` at once.
pub(crate) async fn create_in_order(
    client: &kube::Client,
    namespace: &str,
    objects: ByKind,
    create: Write,
    in_flight: usize,
) -> Result<()> {
    write_all(client, namespace, objects.secrets, create, in_flight).await?;
    write_all(client, namespace, objects.services, create, in_flight).await?;
    write_all(client, namespace, objects.config_maps, create, in_flight).await?;
    write_all(
        client,
        namespace,
        objects.network_policies,
        create,
        in_flight,
    )
    .await?;
    write_all(client, namespace, objects.stateful_sets, create, in_flight).await?;
    write_all(client, namespace, objects.deployments, create, in_flight).await?;
    Ok(())
}

/// The cost of one cluster's certificates: a CA bundle and every PKI Secret.
pub(crate) fn certificate_cost() -> Result<f64> {
    let settings = OperatorSettings::default();
    let mut cluster = vc("cost", "bench");
    cluster.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let valid = validate_cluster("cost", &cluster.spec, &settings.platform())?;
    let inputs = ClusterInputs::new(&cluster, valid, &settings, String::new());
    let exposure = Exposure {
        admin_endpoint: "https://10.0.0.1:6443".into(),
        extra_sans: vec!["10.0.0.1".into()],
    };
    let rounds = 50;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut mint = mint();
        let bundle = pki::generate_ca_bundle("cost", &mut mint)?;
        let client_signer = pki::generate_ca("cost-client-signer", &mut mint)?;
        desired_pki_secrets(&inputs, &exposure, &bundle, &client_signer, &mut mint)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / rounds as f64)
}
