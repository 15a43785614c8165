//! A host-path volume provisioner for the test bed's single node, so that
//! etcd's PersistentVolumeClaims bind as they would on a real cluster.
//!
//! It serves the StorageClass [`STORAGE_CLASS`] (the test bed's default,
//! `WaitForFirstConsumer`): for each pending claim the scheduler has
//! placed, it makes a directory and a PersistentVolume bound to the claim;
//! when a volume is released, it removes both.

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const STORAGE_CLASS: &str = "nestor-local";
pub const PROVISIONER: &str = "nestor.dev/testbed-hostpath";

/// The default StorageClass the provisioner serves.
pub fn storage_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(STORAGE_CLASS.into()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".into(),
                "true".into(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..StorageClass::default()
    }
}

fn volume_for(claim: &PersistentVolumeClaim, node: &str, dir: &Path) -> Option<PersistentVolume> {
    let uid = claim.metadata.uid.clone()?;
    let spec = claim.spec.clone()?;
    let capacity = spec.resources?.requests?;
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("pvc-{uid}")),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".into(),
                PROVISIONER.into(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(
                capacity
                    .into_iter()
                    .filter(|(k, _)| k == "storage")
                    .collect(),
            ),
            access_modes: spec.access_modes,
            persistent_volume_reclaim_policy: Some("Delete".into()),
            storage_class_name: Some(STORAGE_CLASS.into()),
            host_path: Some(HostPathVolumeSource {
                path: dir.join(&uid).display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                name: claim.metadata.name.clone(),
                namespace: claim.metadata.namespace.clone(),
                uid: Some(uid),
                ..ObjectReference::default()
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.into()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    })
}

async fn provision(client: &kube::Client, dir: &Path) -> Result<()> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    for claim in claims.list(&ListParams::default()).await?.items {
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let ours = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            == Some(STORAGE_CLASS);
        let node = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("volume.kubernetes.io/selected-node"))
            .cloned();
        if let (true, true, Some(node)) = (pending, ours, node)
            && let Some(pv) = volume_for(&claim, &node, dir)
        {
            let path = dir.join(claim.metadata.uid.as_deref().unwrap_or_default());
            std::fs::create_dir_all(&path)?;
            // Any pod user may write (host paths ignore fsGroup).
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
            match volumes.create(&PostParams::default(), &pv).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for pv in volumes.list(&ListParams::default()).await?.items {
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
            .map(String::as_str)
            == Some(PROVISIONER);
        let released = pv
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Released" || p == "Failed");
        if ours && released {
            if let Some(path) = pv
                .spec
                .as_ref()
                .and_then(|s| s.host_path.as_ref())
                .map(|h| PathBuf::from(&h.path))
                && path.starts_with(dir)
            {
                let _ = std::fs::remove_dir_all(&path);
            }
            let _ = volumes
                .delete(
                    &pv.metadata.name.clone().unwrap_or_default(),
                    &DeleteParams::default(),
                )
                .await;
        }
    }
    Ok(())
}

/// Serves claims until the process ends: a pass at every change of a claim
/// or volume.
pub async fn run(client: kube::Client, dir: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&dir)?;
    let claims = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let volumes = watcher(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let mut changes = std::pin::pin!(futures::stream::select(claims, volumes));
    while changes.next().await.is_some() {
        if let Err(e) = provision(&client, &dir).await {
            eprintln!("provisioner: {e:#}");
        }
    }
    Ok(())
}
