//! Request sequences of the apply engine, against a mock API server.

use super::*;
use crate::client::mock::{Asked, MockHandle, entry, failure, mock_context, serve};
use crate::model::hash::desired_hash;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::PartialObjectMeta;

fn operations(patch: &json_patch::Patch) -> Vec<serde_json::Value> {
    let value = serde_json::to_value(patch).unwrap();
    value.as_array().unwrap().clone()
}

fn desired_config_map() -> k8s_openapi::api::core::v1::ConfigMap {
    let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
    cm.metadata.name = Some("vc-kube-proxy".into());
    cm.metadata.namespace = Some("ns".into());
    cm.data = Some([("k".to_string(), "v".to_string())].into());
    cm
}

fn already_exists() -> (u16, serde_json::Value) {
    failure(409, "AlreadyExists", "")
}

fn config_map_meta(managers: &[(&str, &str)]) -> serde_json::Value {
    let entries: Vec<_> = managers
        .iter()
        .map(|(manager, operation)| {
            serde_json::json!({"manager": manager, "operation": operation,
                "apiVersion": "v1", "time": "2026-01-01T00:00:00Z"})
        })
        .collect();
    serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": "vc-kube-proxy", "namespace": "ns",
            "annotations": {APPLIED_HASH: "stale"}, "managedFields": entries}})
}

/// Writes the test ConfigMap as `first` says, the server answering
/// with `responses`; returns what was written and what the client asked.
async fn write_config_map(
    ctx: &Context,
    handle: MockHandle,
    responses: Vec<(u16, serde_json::Value)>,
    first: FirstWrite,
) -> (
    Applied<PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>>,
    Vec<Asked>,
) {
    let server = serve(handle, responses);
    let written = apply_owned(ctx, &ctx.stores.config_maps, desired_config_map(), first)
        .await
        .unwrap();
    (written, server.await.unwrap())
}

#[tokio::test]
async fn a_new_child_is_created_once() {
    let (ctx, handle) = mock_context();
    let created = config_map_meta(&[(FIELD_MANAGER, "Update")]);
    let (written, asked) =
        write_config_map(&ctx, handle, vec![(201, created)], FirstWrite::Create).await;
    assert!(matches!(written, Applied::Written(_)));
    let (method, uri, _, accept) = &asked[0];
    assert_eq!(method, "POST");
    assert_eq!(
        uri,
        "/api/v1/namespaces/ns/configmaps?&fieldManager=nestor-operator"
    );
    assert_eq!(accept, METADATA_ONLY, "only metadata comes back");
}

#[tokio::test]
async fn a_child_that_exists_is_adopted_then_applied() {
    let (ctx, handle) = mock_context();
    let created = config_map_meta(&[(FIELD_MANAGER, "Update")]);
    let adopted = config_map_meta(&[(FIELD_MANAGER, "Apply")]);
    let responses = vec![
        already_exists(),
        (200, created),
        (200, adopted.clone()),
        (200, adopted),
    ];
    let (written, asked) = write_config_map(&ctx, handle, responses, FirstWrite::Create).await;
    assert!(matches!(written, Applied::Written(_)));
    let methods: Vec<_> = asked.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(methods, ["POST", "GET", "PATCH", "PATCH"]);
    assert_eq!(asked[1].1, "/api/v1/namespaces/ns/configmaps/vc-kube-proxy");
    assert_eq!(asked[2].2, "application/json-patch+json", "the adoption");
    assert_eq!(asked[3].2, "application/apply-patch+yaml", "then the apply");
    assert!(
        asked[3].1.contains("fieldManager=nestor-operator") && asked[3].1.contains("force=true")
    );
    assert!(asked.iter().all(|a| a.3 == METADATA_ONLY));
}

#[tokio::test]
async fn a_child_already_as_desired_is_not_written() {
    let (ctx, handle) = mock_context();
    let mut live = config_map_meta(&[(FIELD_MANAGER, "Update")]);
    live["metadata"]["annotations"][APPLIED_HASH] = desired_hash(&desired_config_map()).into();
    let responses = vec![already_exists(), (200, live)];
    let (written, asked) = write_config_map(&ctx, handle, responses, FirstWrite::Create).await;
    assert!(
        matches!(written, Applied::Unchanged(_)),
        "a cache behind its own create"
    );
    assert_eq!(asked.len(), 2);
}

#[tokio::test]
async fn a_passing_form_is_applied_at_once() {
    let (ctx, handle) = mock_context();
    let applied = config_map_meta(&[(FIELD_MANAGER, "Apply")]);
    let (_, asked) = write_config_map(&ctx, handle, vec![(200, applied)], FirstWrite::Apply).await;
    let (method, _, content_type, _) = &asked[0];
    assert_eq!(
        (method.as_str(), content_type.as_str()),
        ("PATCH", "application/apply-patch+yaml")
    );
}

/// A store holding `live` only.
fn store_of<K>(live: K) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    use kube::runtime::{reflector::store::Writer, watcher};
    let mut writer = Writer::default();
    writer.apply_watcher_event(&watcher::Event::Apply(live));
    writer.as_reader()
}

#[tokio::test]
async fn a_released_child_is_applied_at_once_and_created_when_missing() {
    let (mut ctx, handle) = mock_context();
    let held: PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap> =
        serde_json::from_value(config_map_meta(&[])).unwrap();
    ctx.stores.config_maps = store_of(held);
    let applied = config_map_meta(&[(FIELD_MANAGER, "Update"), (FIELD_MANAGER, "Apply")]);
    let (_, asked) =
        write_config_map(&ctx, handle, vec![(200, applied)], FirstWrite::Release).await;
    let (method, _, content_type, _) = &asked[0];
    assert_eq!(
        (asked.len(), method.as_str(), content_type.as_str()),
        (1, "PATCH", "application/apply-patch+yaml"),
        "neither read nor adopted: the held form had the same fields"
    );

    // Not in the cache: created, as a lasting form is.
    let (ctx, handle) = mock_context();
    let created = config_map_meta(&[(FIELD_MANAGER, "Update")]);
    let (_, asked) =
        write_config_map(&ctx, handle, vec![(201, created)], FirstWrite::Release).await;
    let methods: Vec<_> = asked.into_iter().map(|a| a.0).collect();
    assert_eq!(methods, ["POST"]);
}

#[test]
fn only_a_child_held_in_this_builds_form_is_released() {
    let held = desired_config_map();
    let cached = |hash: &str| {
        let mut live = config_map_meta(&[]);
        live["metadata"]["annotations"][APPLIED_HASH] = hash.into();
        let live: PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap> =
            serde_json::from_value(live).unwrap();
        store_of(live)
    };
    let this_build = cached(&desired_hash(&held));
    type CachedConfigMap = PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>;
    let releasing = |store: &Store<CachedConfigMap>, releases: bool| {
        FirstWrite::releasing(store, releases.then_some(&held))
    };
    assert_eq!(releasing(&this_build, true), FirstWrite::Release);
    // Not released by this write: written as any held child.
    assert_eq!(releasing(&this_build, false), FirstWrite::Create);
    // Held by another build, whose fields may differ: read and adopted.
    assert_eq!(releasing(&cached("other"), true), FirstWrite::Create);
    let empty: Store<CachedConfigMap> =
        kube::runtime::reflector::store::Writer::default().as_reader();
    assert_eq!(releasing(&empty, true), FirstWrite::Create);
}

#[test]
fn created_fields_are_adopted_as_applied_ones() {
    let applied = |mut e: ManagedFieldsEntry| {
        e.operation = Some("Apply".into());
        e
    };
    let at = "2026-01-01T00:00:00Z";
    let meta = |entries| ObjectMeta {
        managed_fields: Some(entries),
        ..ObjectMeta::default()
    };
    // Applied from the start, or not Nestor's: nothing to do.
    assert!(adopt_created_fields(&meta(vec![applied(entry(FIELD_MANAGER, at, None))])).is_none());
    assert!(adopt_created_fields(&meta(vec![entry("kubectl", at, None)])).is_none());
    // Created by Nestor: the entry (second here) becomes its apply entry.
    let patch = adopt_created_fields(&meta(vec![
        entry("kube-controller-manager", at, None),
        entry(FIELD_MANAGER, at, None),
    ]))
    .expect("a patch");
    let ops = operations(&patch);
    assert_eq!(ops.len(), 3);
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["path"], "/metadata/managedFields/1/manager");
    assert_eq!(ops[1]["value"], "Update");
    assert_eq!(ops[2]["op"], "replace");
    assert_eq!(ops[2]["path"], "/metadata/managedFields/1/operation");
    assert_eq!(ops[2]["value"], "Apply");
    // Both entries: the created one goes.
    let patch = adopt_created_fields(&meta(vec![
        applied(entry(FIELD_MANAGER, at, None)),
        entry(FIELD_MANAGER, at, None),
    ]))
    .expect("a patch");
    let ops = operations(&patch);
    assert_eq!(ops[2]["op"], "remove");
    assert_eq!(ops[2]["path"], "/metadata/managedFields/1");
}

#[test]
fn drift_means_a_newer_foreign_write_to_the_main_resource() {
    let mut meta = ObjectMeta {
        managed_fields: Some(vec![
            entry(FIELD_MANAGER, "2026-01-01T00:00:00Z", None),
            entry("kube-controller-manager", "2026-01-02T00:00:00Z", None),
            entry("kubectl", "2026-01-02T00:00:00Z", Some("scale")),
        ]),
        ..ObjectMeta::default()
    };
    assert!(!changed_by_someone_else(&meta));
    meta.managed_fields
        .as_mut()
        .unwrap()
        .push(entry("kubectl-edit", "2026-01-03T00:00:00Z", None));
    assert!(changed_by_someone_else(&meta));
    meta.managed_fields
        .as_mut()
        .unwrap()
        .push(entry(FIELD_MANAGER, "2026-01-04T00:00:00Z", None));
    assert!(
        !changed_by_someone_else(&meta),
        "our later apply settles it"
    );
    meta.managed_fields.as_mut().unwrap().push(entry(
        "kubectl-patch",
        "2026-01-04T00:00:00Z",
        None,
    ));
    assert!(
        changed_by_someone_else(&meta),
        "a write in the same second may have come after ours"
    );
}
