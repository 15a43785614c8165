//! The owner reference that makes a pool go with its cluster.

use kube_core::{Resource, ResourceExt};
use nestor_crds::{NodePool, VirtualCluster};

/// The server-side apply body that makes `vc` an owner of `pool`, so that
/// the garbage collector deletes the pool with its cluster (and the
/// cluster's deletion needs no finalizer); `None` when the pool has that
/// owner already, or the cluster is being deleted (deleted with
/// `--cascade=orphan`, its pools must stay: the garbage collector has
/// taken the reference away and it must not come back). Not its
/// controller: the pool is the user's object. Its other owner references,
/// if any, are left as they are (server-side apply merges the list by UID).
/// Nor does it block the owner's deletion: a pool's finalizer needs the
/// operator, and a cluster deleted in the foreground must not wait for it.
pub fn desired_pool_owner(pool: &NodePool, vc: &VirtualCluster) -> Option<serde_json::Value> {
    let uid = vc.metadata.uid.as_deref()?;
    if vc.metadata.deletion_timestamp.is_some()
        || pool.owner_references().iter().any(|o| o.uid == uid)
    {
        return None;
    }
    let owner = vc.owner_ref(&())?;
    Some(serde_json::json!({
        "apiVersion": NodePool::api_version(&()),
        "kind": NodePool::kind(&()),
        "metadata": {
            "name": pool.metadata.name,
            "namespace": pool.metadata.namespace,
            "ownerReferences": [owner],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures::{self, pool};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    #[test]
    fn a_pool_is_owned_by_its_cluster_once() {
        let vc = fixtures::vc(json!({}));
        let mut pool = pool();
        let body = desired_pool_owner(&pool, &vc).expect("not owned yet");
        assert_eq!(
            body,
            json!({
                "apiVersion": "nestor.dev/v1alpha1",
                "kind": "NodePool",
                "metadata": {
                    "name": "workers",
                    "namespace": "tenants",
                    "ownerReferences": [{
                        "apiVersion": "nestor.dev/v1alpha1",
                        "kind": "VirtualCluster",
                        "name": "demo",
                        "uid": "00000000-0000-0000-0000-000000000001",
                    }],
                },
            }),
            "an owner, neither the controller nor blocking its deletion"
        );
        // Someone else's owner reference does not count, and stays (the
        // body names only Nestor's).
        let mut other = vc.owner_ref(&()).unwrap();
        other.uid = "someone-else".into();
        pool.metadata.owner_references = Some(vec![other.clone()]);
        assert_eq!(desired_pool_owner(&pool, &vc), Some(body));
        pool.metadata.owner_references = Some(vec![other, vc.owner_ref(&()).unwrap()]);
        assert_eq!(desired_pool_owner(&pool, &vc), None, "owned already");
        let mut unsaved = vc.clone();
        unsaved.metadata.uid = None;
        assert_eq!(desired_pool_owner(&pool, &unsaved), None, "no UID to name");
        let mut orphaning = vc.clone();
        orphaning.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        pool.metadata.owner_references = None;
        assert_eq!(
            desired_pool_owner(&pool, &orphaning),
            None,
            "a cluster being deleted takes no pool"
        );
    }
}
