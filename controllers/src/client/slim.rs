//! What the caches keep of the objects the operator watches: each watched
//! object is shrunk before it is cached, to what the reconcilers read.

use crate::client::apply::changed_by_someone_else;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::PartialObjectMeta;

/// The prefix of the annotations Nestor reads from its children.
const NESTOR_ANNOTATIONS: &str = "nestor.dev/";

/// Shrinks a watched VirtualCluster or NodePool before it is cached: drops
/// its managed fields and labels (nothing reads them) and the
/// last-applied annotation. The creation time stays: no backup slot before
/// it is made up.
pub fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    // Looked up by name; selected by label on the server.
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Shrinks the metadata of an owned child before it is cached, keeping only
/// what reconcilers read: its name, generation, owners and Nestor's own
/// annotations. Who wrote it last is reduced to its verdict: the managed
/// fields are kept only when they show a write by someone else after
/// Nestor's last apply ([`changed_by_someone_else`] reads the same answer
/// from what is kept).
pub fn slim_child_meta(meta: &mut ObjectMeta) {
    if changed_by_someone_else(meta) {
        // Only who wrote and when: the field sets go.
        for entry in meta.managed_fields.iter_mut().flatten() {
            entry.fields_v1 = None;
            entry.fields_type = None;
            entry.api_version = None;
        }
    } else {
        meta.managed_fields = None;
    }
    meta.labels = None;
    meta.creation_timestamp = None;
    // Caches are looked up by name; nothing reads a child's identity.
    meta.uid = None;
    meta.resource_version = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(NESTOR_ANNOTATIONS));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Slims an owned child cached as a view ([`crate::model::cached`]): its metadata.
pub fn slim_child_view<K: Resource>(obj: &mut K) {
    slim_child_meta(obj.meta_mut());
}

/// Slims an owned child of which only the metadata is cached.
pub fn slim_child<K>(obj: &mut PartialObjectMeta<K>) {
    slim_child_meta(&mut obj.metadata);
    obj.types = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::mock::entry;
    use crate::model::names::{APPLIED_HASH, FIELD_MANAGER};

    #[test]
    fn cached_children_keep_only_what_reconcilers_read() {
        let mut meta = ObjectMeta {
            name: Some("c".into()),
            uid: Some("u".into()),
            resource_version: Some("7".into()),
            generation: Some(3),
            labels: Some([("a".to_string(), "b".to_string())].into()),
            annotations: Some(
                [
                    (APPLIED_HASH.to_string(), "h".to_string()),
                    (
                        "deployment.kubernetes.io/revision".to_string(),
                        "2".to_string(),
                    ),
                ]
                .into(),
            ),
            managed_fields: Some(vec![
                entry(FIELD_MANAGER, "2026-01-01T00:00:00Z", None),
                entry("kube-controller-manager", "2026-01-02T00:00:00Z", None),
            ]),
            ..ObjectMeta::default()
        };
        slim_child_meta(&mut meta);
        assert_eq!(meta.name.as_deref(), Some("c"));
        assert_eq!(meta.generation, Some(3));
        assert!(meta.uid.is_none() && meta.resource_version.is_none() && meta.labels.is_none());
        assert_eq!(
            meta.annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            [APPLIED_HASH]
        );
        assert!(
            meta.managed_fields.is_none(),
            "no foreign write: no entries kept"
        );
        assert!(!changed_by_someone_else(&meta));
    }

    #[test]
    fn a_foreign_write_survives_slimming() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(FIELD_MANAGER, "2026-01-01T00:00:00Z", None),
                entry("kubectl-edit", "2026-01-02T00:00:00Z", None),
            ]),
            ..ObjectMeta::default()
        };
        slim_child_meta(&mut meta);
        assert!(changed_by_someone_else(&meta));
        assert!(
            meta.managed_fields
                .iter()
                .flatten()
                .all(|e| e.fields_v1.is_none())
        );
    }
}
