//! What one virtual cluster's children cost in the operator's caches, in
//! heap bytes, counted by a counting allocator: each child is built by the
//! pure builders, given the fields the API server adds (identity, managed
//! fields of Nestor and the controller-manager, status), decoded the way
//! its watch decodes it, slimmed as the watch slims it, and kept.
//!
//! cargo run --release -p nestor-controllers --example cache_cost

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::PartialObjectMeta;
use nestor_controllers::OperatorSettings;
use nestor_controllers::build::DesiredCluster;
use nestor_controllers::build::mint::Mint;
use nestor_controllers::build::pki;
use nestor_controllers::build::pki_secrets::Exposure;
use nestor_controllers::client::slim::{slim_child, slim_child_view};
use nestor_controllers::model::cached::{CachedService, Workload};
use nestor_controllers::model::inputs::ClusterInputs;
use nestor_controllers::model::validate::validate_cluster;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The object as a watch delivers it: with what the API server adds.
fn as_served<K: Serialize>(obj: &K) -> String {
    let mut value = serde_json::to_value(obj).expect("serializes");
    let meta = value["metadata"].as_object_mut().expect("metadata");
    meta.insert("uid".into(), "0b7ac3c5-6f5e-4b9a-9a1e-3c0b2a1d4e5f".into());
    meta.insert("resourceVersion".into(), "1234567".into());
    meta.insert("creationTimestamp".into(), "2026-11-27T10:00:00Z".into());
    meta.insert(
        "managedFields".into(),
        serde_json::json!([
            {"manager": "nestor-operator", "operation": "Apply", "apiVersion": "v1",
             "time": "2026-11-27T10:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
             "time": "2026-11-27T10:00:01Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:status": {}}, "subresource": "status"}
        ]),
    );
    value.to_string()
}

/// Heap bytes the cached form `C` of `objects` keeps.
fn cached<K: Serialize, C: DeserializeOwned>(objects: &[K], slim: fn(&mut C)) -> (usize, isize) {
    let served: Vec<String> = objects.iter().map(as_served).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let kept: Vec<Arc<C>> = served
        .iter()
        .map(|json| {
            let mut obj: C = serde_json::from_str(json).expect("decodes");
            slim(&mut obj);
            Arc::new(obj)
        })
        .collect();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let n = kept.len();
    drop(kept);
    (n, bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vc: nestor_crds::VirtualCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "nestor.dev/v1alpha1", "kind": "VirtualCluster",
        "metadata": {"name": "vc-0001", "namespace": "bench", "generation": 1,
                     "uid": "0b7ac3c5-6f5e-4b9a-9a1e-3c0b2a1d4e5f"},
        "spec": {}
    }))?;
    let settings = OperatorSettings::default();
    let mut mint = Mint::at(k8s_openapi::jiff::Timestamp::now());
    let bundle = pki::generate_ca_bundle("vc-0001", &mut mint)?;
    let client_signer = pki::generate_ca("vc-0001-client-signer", &mut mint)?;
    let valid = validate_cluster(
        "vc-0001",
        &vc.spec,
        &nestor_controllers::model::settings::OperatorSettings::default().platform(),
    )?;
    let inputs = ClusterInputs::new(&vc, valid, &settings, "revision".into());
    let objects = DesiredCluster::new(
        &inputs,
        &Exposure::default(),
        (&bundle, &client_signer),
        None,
        &mut mint,
    )?
    .by_kind();
    let rows = [
        (
            "Secret (metadata)",
            cached::<_, PartialObjectMeta<Secret>>(&objects.secrets, slim_child),
        ),
        (
            "ConfigMap (metadata)",
            cached::<_, PartialObjectMeta<ConfigMap>>(&objects.config_maps, slim_child),
        ),
        (
            "NetworkPolicy (metadata)",
            cached::<_, PartialObjectMeta<NetworkPolicy>>(&objects.network_policies, slim_child),
        ),
        (
            "Service (cached view)",
            cached::<_, CachedService>(&objects.services, slim_child_view),
        ),
        (
            "StatefulSet (workload)",
            cached::<_, Workload<StatefulSet>>(&objects.stateful_sets, slim_child_view),
        ),
        (
            "Deployment (workload)",
            cached::<_, Workload<Deployment>>(&objects.deployments, slim_child_view),
        ),
    ];
    let mut total = 0;
    println!("| kind | objects | bytes each |");
    println!("|---|---|---|");
    for (kind, (n, bytes)) in rows {
        println!("| {kind} | {n} | {} |", bytes / n.max(1) as isize);
        total += bytes;
    }
    println!("one cluster's children in the caches: {total} bytes");
    Ok(())
}
