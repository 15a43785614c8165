//! The `VirtualCluster` reconciler: a thin driver.
//!
//! validate (pure) -> Services -> PKI Secrets -> ConfigMaps,
//! NetworkPolicy, workloads (each built by a pure `desired_*` function and
//! written with server-side apply only when it differs) -> status computed
//! from the children (pure) -> status patched only when it changed.

use crate::apiserver::{
    desired_apiserver_deployment, desired_apiserver_service, published_endpoint,
};
use crate::apply::{Applied, FirstWrite, apply_owned, apply_secret, create_secret, read_secret};
use crate::cached::CachedService;
use crate::cluster::ClusterInputs;
use crate::context::Context;
use crate::error::{Error, NAMESPACE_DELETION_WAIT, Result, is_not_found};
use crate::meta::{CLUSTER_LABEL, ClusterNames, FINALIZER, MANAGED_BY};
use crate::secrets::{self, BUNDLE_FINGERPRINT, Exposure, PkiSecret};
use crate::status::{Observed, READY, Rollout, compute_status};
use crate::validate::validate_cluster;
use crate::{addons, controller_manager, etcd, nested, pki, scheduler};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use nestor_crds::{ExposureType, NodePool, VirtualCluster, VirtualClusterStatus};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How often a settled cluster is looked at again, to repair drift the
/// watches could not see. It reads only caches and writes nothing when
/// nothing changed.
pub const RESYNC: Duration = Duration::from_secs(600);

/// Reconciles one `VirtualCluster`. Its deletion needs no reconcile: the
/// garbage collector removes every child (and every pool, see
/// `nodepool::desired_pool_owner`), also while the operator is down.
pub async fn reconcile(vc: Arc<VirtualCluster>, ctx: Arc<Context>) -> Result<Action> {
    if let Some(index) = legacy_finalizer(&vc) {
        if vc.metadata.deletion_timestamp.is_some() {
            cleanup(&vc, &ctx).await?;
        } else if !pools_owned(&ctx, &vc) {
            // Until the pool reconciler has made this cluster the owner of
            // its pools, a deletion must still delete them itself.
            apply(vc, &ctx).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        release_finalizer(&ctx, &vc, index).await?;
        // The patch's watch event brings the cluster back, without it.
        return Ok(Action::await_change());
    }
    if vc.metadata.deletion_timestamp.is_some() {
        // Deleted in the foreground: the garbage collector is removing the
        // children, which must not be written again; the status says so.
        mark_deleting(&vc, &ctx).await;
        return Ok(Action::await_change());
    }
    apply(vc, &ctx).await
}

/// Whether every pool that joins `vc` (in the cache) has it as an owner.
fn pools_owned(ctx: &Context, vc: &VirtualCluster) -> bool {
    crate::nodepool::pools_joining(&ctx.stores.node_pools, vc)
        .all(|pool| crate::nodepool::desired_pool_owner(&pool, vc).is_none())
}

/// Where the finalizer that Nestor put on every cluster until it left
/// their deletion to the garbage collector sits, if it is there.
fn legacy_finalizer(vc: &VirtualCluster) -> Option<usize> {
    vc.finalizers().iter().position(|f| f == FINALIZER)
}

/// The patch that removes the finalizer at `index`, after testing that it
/// is still there (the list may have changed since it was read).
fn release_finalizer_patch(index: usize) -> json_patch::Patch {
    let path = format!("/metadata/finalizers/{index}");
    // Well-formed JSON patch operations.
    serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .expect("a JSON patch")
}

async fn release_finalizer(ctx: &Context, vc: &VirtualCluster, index: usize) -> Result<()> {
    let names = ClusterNames::new(vc);
    let api: Api<VirtualCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
    ctx.metrics.write("patch", "VirtualCluster");
    match api
        .patch(
            &names.cluster,
            &crate::meta::patch_params(),
            &Patch::Json::<()>(release_finalizer_patch(index)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(source) => Err(Error::PatchMetadata {
            what: "releasing the finalizer",
            kind: "VirtualCluster",
            namespace: names.namespace.clone(),
            name: names.cluster.clone(),
            source,
        }),
    }
}

/// Transient errors back off; errors that need a human back off slowly.
pub fn error_policy(_vc: Arc<VirtualCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.namespace_terminating() {
        debug!(error = %error, "the namespace is being deleted; waiting for it");
        return Action::requeue(NAMESPACE_DELETION_WAIT);
    }
    ctx.metrics
        .failures
        .get_or_create(&crate::metrics::ErrorLabels {
            controller: "virtualcluster",
            error: error.metric_label(),
        })
        .inc();
    warn!(error = %error, "reconcile failed");
    if error.needs_human() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(5))
    }
}

async fn publish(ctx: &Context, vc: &VirtualCluster, type_: EventType, reason: &str, note: String) {
    ctx.publish(vc, type_, reason, note).await;
}

async fn apply(vc: Arc<VirtualCluster>, ctx: &Context) -> Result<Action> {
    let names = ClusterNames::new(&vc);
    let valid = match validate_cluster(&names.cluster, &vc.spec) {
        Ok(valid) => valid,
        Err(invalid) => {
            let message = invalid.to_string();
            let previous = current_ready_message(&vc);
            if previous.as_deref() != Some(message.as_str()) {
                publish(ctx, &vc, EventType::Warning, "InvalidSpec", message.clone()).await;
            }
            let observed = Observed {
                invalid: Some(message),
                ..observe(ctx, &names)
            };
            update_status(ctx, &vc, &observed).await?;
            // Nothing provisioned is touched; wait for the user's change.
            return Ok(Action::await_change());
        }
    };
    let stores = &ctx.stores;
    let revision = stores
        .secrets
        .get(&ObjectRef::new(&names.ca_secret()).within(&names.namespace))
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned())
        .unwrap_or_default();
    let mut inputs = ClusterInputs::new(&vc, valid, &ctx.settings, revision);

    // Services first: the API server's address goes into its certificate.
    // Independent writes go out together; each group waits for the last.
    let (_, _, dns_service, api_service) = futures::try_join!(
        apply_owned(
            ctx,
            &stores.services,
            etcd::desired_etcd_peer_service(&inputs),
            FirstWrite::Create,
        ),
        apply_owned(
            ctx,
            &stores.services,
            etcd::desired_etcd_client_service(&inputs),
            FirstWrite::Create,
        ),
        apply_owned(
            ctx,
            &stores.services,
            addons::desired_dns_service(&inputs),
            FirstWrite::Create,
        ),
        apply_owned(
            ctx,
            &stores.services,
            desired_apiserver_service(&inputs),
            FirstWrite::Create,
        ),
    )?;
    let exposure = exposure(ctx, &vc, &names, api_service.object()).await?;

    inputs.pki_revision = ensure_pki(ctx, &vc, &inputs, &exposure).await?;

    let (_, _, etcd, apiserver) = futures::try_join!(
        apply_owned(
            ctx,
            &stores.config_maps,
            addons::desired_kube_proxy_config_map(&inputs),
            FirstWrite::Create,
        ),
        apply_owned(
            ctx,
            &stores.network_policies,
            etcd::desired_etcd_network_policy(&inputs),
            FirstWrite::Create,
        ),
        apply_owned(
            ctx,
            &stores.stateful_sets,
            etcd::desired_etcd_statefulset(&inputs),
            FirstWrite::Create,
        ),
        apply_owned(
            ctx,
            &stores.deployments,
            desired_apiserver_deployment(&inputs),
            FirstWrite::Create,
        ),
    )?;
    // The API server's clients start once it serves (and CoreDNS once its
    // RBAC is in the nested cluster), so that none of them crash-loops or
    // backs off while it comes up. Once started, they stay started.
    let serving = Rollout::from_deployment(apiserver.object()).ready >= 1;
    let addons_installed =
        ensure_nested_addons(ctx, &inputs, dns_service.object(), serving).await?;
    // Whether this write releases a Deployment the cache holds at zero
    // replicas (or does not hold yet), and whether it is started from now
    // on: once started, it stays started.
    let releases_and_started = |name: String, start: bool| {
        let held = stores
            .deployments
            .get(&ObjectRef::new(&name).within(&names.namespace))
            .is_none_or(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) == 0);
        (held && start, start || !held)
    };
    let (cm_releases, cm_started) = releases_and_started(names.controller_manager(), serving);
    let (scheduler_releases, scheduler_started) = releases_and_started(names.scheduler(), serving);
    let (dns_releases, dns_started) = releases_and_started(names.coredns(), addons_installed);
    // Held at zero replicas, they are created all the same: starting them
    // changes only values, so it is a plain apply (`FirstWrite::Release`).
    let (controller_manager, scheduler, coredns) = futures::try_join!(
        apply_owned(
            ctx,
            &stores.deployments,
            controller_manager::desired_controller_manager_deployment(&inputs, cm_started),
            FirstWrite::releasing(&stores.deployments, cm_releases, || {
                controller_manager::desired_controller_manager_deployment(&inputs, false)
            }),
        ),
        apply_owned(
            ctx,
            &stores.deployments,
            scheduler::desired_scheduler_deployment(&inputs, scheduler_started),
            FirstWrite::releasing(&stores.deployments, scheduler_releases, || {
                scheduler::desired_scheduler_deployment(&inputs, false)
            }),
        ),
        apply_owned(
            ctx,
            &stores.deployments,
            addons::desired_coredns_deployment(&inputs, dns_started),
            FirstWrite::releasing(&stores.deployments, dns_releases, || {
                addons::desired_coredns_deployment(&inputs, false)
            }),
        ),
    )?;
    let deployment = |applied: Applied<_>| Some(Rollout::from_deployment(applied.object()));
    // Status is computed from what the API server returned for each
    // workload (or the cache, when nothing was sent): never from a cache
    // that has not yet seen this reconcile's writes.
    let observed = Observed {
        etcd: Some(Rollout::from_statefulset(etcd.object())),
        apiserver: deployment(apiserver),
        controller_manager: deployment(controller_manager),
        scheduler: deployment(scheduler),
        coredns: deployment(coredns),
        endpoint: Some(exposure.admin_endpoint.clone()),
        admin_kubeconfig_secret: Some(names.admin_kubeconfig_secret()),
        ..Observed::default()
    };
    let status = update_status(ctx, &vc, &observed).await?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    let was_ready = vc.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == READY && c.status == "True")
    });
    if ready && !was_ready {
        info!(cluster = %names.cluster, namespace = %names.namespace, "virtual cluster is ready");
        publish(
            ctx,
            &vc,
            EventType::Normal,
            "Ready",
            "every control-plane component is ready".into(),
        )
        .await;
    } else if !ready && was_ready {
        let why = status
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        publish(ctx, &vc, EventType::Warning, "NotReady", why).await;
    }
    Ok(Action::requeue(RESYNC))
}

/// Writes the add-ons' objects into the nested cluster (RBAC for CoreDNS
/// and node bootstrapping, `kube-system/kube-dns`) once its API server
/// serves, and again whenever they change. The hash of what was written is
/// kept on the CoreDNS ConfigMap, so a settled cluster costs no request.
/// Returns whether they are in place.
async fn ensure_nested_addons(
    ctx: &Context,
    inputs: &ClusterInputs<'_>,
    dns_service: &CachedService,
    serving: bool,
) -> Result<bool> {
    let names = &inputs.names;
    let cached = ctx
        .stores
        .config_maps
        .get(&ObjectRef::new(&names.coredns()).within(&names.namespace));
    let written = cached
        .as_ref()
        .and_then(|cm| cm.annotations().get(addons::NESTED_ADDONS).cloned());
    let host_dns_ip = dns_service.cluster_ip().unwrap_or_default().to_string();
    let wanted = addons::NestedAddons::new(inputs, &host_dns_ip);
    let hash = wanted.hash();
    let writing = serving && !host_dns_ip.is_empty() && written.as_deref() != Some(hash.as_str());
    let installed = if writing {
        let client = nested::client(ctx, names).await?;
        for role in &wanted.roles {
            nested::apply(ctx, &client, names, role).await?;
        }
        for binding in &wanted.bindings {
            nested::apply(ctx, &client, names, binding).await?;
        }
        nested::apply(ctx, &client, names, &wanted.dns_service).await?;
        nested::apply(ctx, &client, names, &wanted.dns_endpoints).await?;
        info!(cluster = %names.cluster, namespace = %names.namespace, "wrote the add-ons into the nested cluster");
        Some(hash)
    } else {
        written.clone()
    };
    // Writing the add-ons changes only the value of the annotation (or
    // adds it): the ConfigMap is released like a held Deployment.
    let first = FirstWrite::releasing(&ctx.stores.config_maps, writing, || {
        addons::desired_coredns_config_map(inputs, written.as_deref())
    });
    apply_owned(
        ctx,
        &ctx.stores.config_maps,
        addons::desired_coredns_config_map(inputs, installed.as_deref()),
        first,
    )
    .await?;
    Ok(installed.is_some())
}

fn current_ready_message(vc: &VirtualCluster) -> Option<String> {
    vc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.message.clone())
}

/// Where the API server is published and which names its certificate needs.
async fn exposure(
    ctx: &Context,
    vc: &VirtualCluster,
    names: &ClusterNames,
    service: &CachedService,
) -> Result<Exposure> {
    let node_address = if vc.spec.api_server.exposure == ExposureType::NodePort {
        first_node_address(ctx).await?
    } else {
        None
    };
    let endpoint = published_endpoint(names, service, node_address.as_deref());
    let mut extra_sans: Vec<String> = Vec::new();
    if let Some(ip) = service.cluster_ip() {
        extra_sans.push(ip.to_string());
    }
    if let Some(host) = endpoint.as_deref().and_then(host_of) {
        extra_sans.push(host);
    }
    extra_sans.sort();
    extra_sans.dedup();
    Ok(Exposure {
        admin_endpoint: endpoint.unwrap_or_else(|| names.internal_endpoint()),
        extra_sans,
    })
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        rest.rsplit_once(':').map(|(h, _)| h).unwrap_or(rest)
    };
    Some(host.to_string())
}

async fn first_node_address(ctx: &Context) -> Result<Option<String>> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let list = nodes
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|source| Error::Read {
            what: "nodes".into(),
            source,
        })?;
    let Some(name) = list.items.first().and_then(|n| n.metadata.name.clone()) else {
        return Ok(None);
    };
    let node = nodes.get(&name).await.map_err(|source| Error::Read {
        what: format!("node {name}"),
        source,
    })?;
    Ok(node
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address))
}

/// Makes sure every PKI Secret exists and matches its inputs. Returns the
/// roots' fingerprint. The roots are generated only when their Secret does
/// not exist; a damaged one is reported, never replaced.
async fn ensure_pki(
    ctx: &Context,
    vc: &VirtualCluster,
    inputs: &ClusterInputs<'_>,
    exposure: &Exposure,
) -> Result<String> {
    let names = &inputs.names;
    let cached = |kind: PkiSecret| {
        ctx.stores
            .secrets
            .get(&ObjectRef::new(&kind.name(names)).within(&names.namespace))
    };
    let ca_cached = cached(PkiSecret::Ca);
    let known_fp = ca_cached
        .as_ref()
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned());
    let now = k8s_openapi::jiff::Timestamp::now();
    let stale = |fp: &str| -> Vec<PkiSecret> {
        PkiSecret::ALL[1..]
            .iter()
            .copied()
            .filter(|kind| {
                let expected = secrets::inputs_hash(*kind, inputs, exposure, fp);
                !cached(*kind).is_some_and(|s| {
                    secrets::is_current(s.metadata.annotations.as_ref(), &expected, now)
                })
            })
            .collect()
    };
    if let Some(fp) = known_fp.filter(|fp| stale(fp).is_empty()) {
        return Ok(fp);
    }
    let pki_error = |source| Error::Pki {
        namespace: names.namespace.clone(),
        name: names.cluster.clone(),
        source,
    };
    let ca_name = names.ca_secret();
    // Not in the cache: most likely a new cluster, so the roots are created
    // straight away. Created, never applied: roots are not overwritten,
    // even by a second leader during a hand-over.
    let fresh = match ca_cached {
        Some(_) => None,
        None => {
            let bundle = pki::generate_ca_bundle(&names.cluster).map_err(pki_error)?;
            let secret = secrets::desired_pki_secret(PkiSecret::Ca, inputs, exposure, &bundle)
                .map_err(pki_error)?;
            create_secret(ctx, &secret).await?.then_some(bundle)
        }
    };
    let (bundle, created) = match fresh {
        Some(bundle) => (bundle, true),
        // Cached, or created meanwhile by another writer (a 409): read them.
        None => {
            let secret = read_secret(ctx, &names.namespace, &ca_name)
                .await?
                .ok_or_else(|| Error::PkiRace {
                    namespace: names.namespace.clone(),
                    name: ca_name.clone(),
                })?;
            let bundle = secrets::bundle_from_secret(&secret).ok_or_else(|| Error::DamagedCa {
                namespace: names.namespace.clone(),
                name: ca_name.clone(),
            })?;
            (bundle, false)
        }
    };
    let fp = secrets::bundle_fingerprint(&bundle);
    // The cache may not have seen this operator's last writes yet: confirm
    // with the API server (one list of the cluster's Secrets' metadata)
    // before issuing anything again. Roots just created have signed
    // nothing yet, so there is nothing to confirm.
    let candidates = stale(&fp);
    let live = if candidates.is_empty() || created {
        Default::default()
    } else {
        cluster_secrets_metadata(ctx, names).await?
    };
    let to_issue: Vec<PkiSecret> = candidates
        .into_iter()
        .filter(|kind| {
            let expected = secrets::inputs_hash(*kind, inputs, exposure, &fp);
            !live
                .get(&kind.name(names))
                .is_some_and(|a| secrets::is_current(Some(a), &expected, now))
        })
        .collect();
    let built = to_issue
        .iter()
        .map(|kind| secrets::desired_pki_secret(*kind, inputs, exposure, &bundle))
        .collect::<Result<Vec<Secret>, _>>()
        .map_err(pki_error)?;
    // Leaves signed by roots created just now are new: they are created,
    // which costs the API server a quarter of an apply (`nestor-bench
    // writes`: 1.0 against 4.4 ms of CPU for a Secret). One that exists
    // (a 409: left by earlier roots) is applied over. Renewals are applies,
    // which take over the fields the create gave Nestor.
    futures::future::try_join_all(built.iter().map(|secret| async move {
        if created && create_secret(ctx, secret).await? {
            return Ok(());
        }
        apply_secret(ctx, secret).await
    }))
    .await?;
    let issued: Vec<String> = to_issue.iter().map(|k| k.name(names)).collect();
    let provisioned_before = vc.status.as_ref().is_some_and(|s| !s.conditions.is_empty());
    if created && provisioned_before {
        publish(
            ctx,
            vc,
            EventType::Warning,
            "PKIRegenerated",
            "the CA Secret was gone: generated new roots of trust; earlier kubeconfigs, node certificates and service-account tokens no longer work".into(),
        )
        .await;
    } else if created {
        publish(
            ctx,
            vc,
            EventType::Normal,
            "PKICreated",
            format!(
                "generated the cluster's CAs and issued {}",
                issued.join(", ")
            ),
        )
        .await;
    } else if !issued.is_empty() {
        publish(
            ctx,
            vc,
            EventType::Normal,
            "CertificatesIssued",
            format!(
                "issued {} again because what they cover changed",
                issued.join(", ")
            ),
        )
        .await;
    }
    Ok(fp)
}

/// The annotations of every Secret of a cluster, by name, from the API
/// server (metadata only).
async fn cluster_secrets_metadata(
    ctx: &Context,
    names: &ClusterNames,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let selector = format!(
        "{CLUSTER_LABEL}={},{}={}",
        names.cluster, MANAGED_BY.0, MANAGED_BY.1
    );
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            let (code, reason) = crate::error::code_and_reason(&e);
            Error::ReadSecret {
                namespace: names.namespace.clone(),
                name: format!("{selector} (list)"),
                code,
                reason,
            }
        })?;
    Ok(list
        .items
        .into_iter()
        .map(|m| {
            (
                m.metadata.name.unwrap_or_default(),
                m.metadata.annotations.unwrap_or_default(),
            )
        })
        .collect())
}

/// Reads the children's rollouts from the caches.
fn observe(ctx: &Context, names: &ClusterNames) -> Observed {
    let stores = &ctx.stores;
    let deployment = |name: String| {
        stores
            .deployments
            .get(&ObjectRef::new(&name).within(&names.namespace))
            .map(|d| Rollout::from_deployment(&d))
    };
    Observed {
        etcd: stores
            .stateful_sets
            .get(&ObjectRef::new(&names.etcd()).within(&names.namespace))
            .map(|s| Rollout::from_statefulset(&s)),
        apiserver: deployment(names.apiserver()),
        controller_manager: deployment(names.controller_manager()),
        scheduler: deployment(names.scheduler()),
        coredns: deployment(names.coredns()),
        ..Observed::default()
    }
}

/// Patches the status when it differs from what is stored.
async fn update_status(
    ctx: &Context,
    vc: &VirtualCluster,
    observed: &Observed,
) -> Result<VirtualClusterStatus> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // The object that triggered this reconcile may predate this operator's
    // last status write (the cache lags under load); the status it last
    // wrote for this generation is the better "previous".
    let uid = vc.metadata.uid.clone().unwrap_or_default();
    let written = ctx
        .written_status
        .lock()
        .ok()
        .and_then(|mut m| match m.get(&uid) {
            // The cache has caught up: it no longer needs a stand-in.
            Some(s) if vc.status.as_ref() == Some(s) => {
                m.remove(&uid);
                None
            }
            s => s.cloned().filter(|s| {
                s.observed_generation >= vc.status.as_ref().and_then(|s| s.observed_generation)
            }),
        });
    let previous = written.as_ref().or(vc.status.as_ref());
    let status = compute_status(observed, previous, vc.metadata.generation, &now);
    if previous == Some(&status) {
        return Ok(status);
    }
    let namespace = vc.namespace().unwrap_or_default();
    let name = vc.name_any();
    let api: Api<VirtualCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.metrics.write("patch_status", "VirtualCluster");
    api.patch_status(
        &name,
        &crate::meta::patch_params(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: "VirtualCluster",
        namespace,
        name,
        source,
    })?;
    if let Ok(mut written) = ctx.written_status.lock() {
        written.insert(uid, status.clone());
    }
    Ok(status)
}

/// Reports a cluster that is being deleted as `Deleting` (written only
/// once: the status is patched only when it changes). Best effort: the
/// object is going away.
async fn mark_deleting(vc: &VirtualCluster, ctx: &Context) {
    let observed = Observed {
        deleting: true,
        ..observe(ctx, &ClusterNames::new(vc))
    };
    if let Err(e) = update_status(ctx, vc, &observed).await {
        warn!(error = %e, "could not mark the cluster as deleting");
    }
}

/// For a cluster that still carries the finalizer of an older Nestor:
/// removes what the garbage collector would not remove for such a cluster
/// (its pools, which have no owner reference to it until this version's
/// pool reconciler gives them one, and etcd volumes claimed before their
/// StatefulSet's retention policy deleted them with it).
async fn cleanup(vc: &VirtualCluster, ctx: &Context) -> Result<()> {
    let names = ClusterNames::new(vc);
    mark_deleting(vc, ctx).await;
    // The cache is ready before any reconcile: it holds every pool.
    let pools: Api<NodePool> = Api::namespaced(ctx.client.clone(), &names.namespace);
    for pool in crate::nodepool::pools_joining(&ctx.stores.node_pools, vc) {
        ctx.metrics.write("delete", "NodePool");
        match pools
            .delete(&pool.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(Error::Cleanup {
                    what: format!("node pool {}", pool.name_any()),
                    source,
                });
            }
        }
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let selector = format!(
        "{CLUSTER_LABEL}={},{}={}",
        names.cluster, MANAGED_BY.0, MANAGED_BY.1
    );
    let list = claims
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Cleanup {
            what: "etcd volumes".into(),
            source,
        })?;
    for claim in list.items {
        let name = claim.metadata.name.unwrap_or_default();
        ctx.metrics.write("delete", "PersistentVolumeClaim");
        match claims.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(Error::Cleanup {
                    what: format!("volume {name}"),
                    source,
                });
            }
        }
    }
    info!(cluster = %names.cluster, namespace = %names.namespace, "virtual cluster cleaned up");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures;
    use serde_json::json;

    /// A cluster deleted in the foreground is reported `Deleting` once, and
    /// nothing else is written while the garbage collector removes its
    /// children.
    #[tokio::test]
    async fn a_cluster_deleted_in_the_foreground_is_only_marked_deleting() {
        let (ctx, handle) = crate::apply::tests::mock_context();
        let ctx = Arc::new(ctx);
        let mut vc = fixtures::vc(json!({}));
        vc.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let server =
            crate::apply::tests::serve(handle, vec![(200, serde_json::to_value(&vc).unwrap())]);
        let vc = Arc::new(vc);
        for _ in 0..2 {
            let action = reconcile(vc.clone(), ctx.clone()).await.unwrap();
            assert_eq!(action, Action::await_change());
        }
        let asked = server.await.unwrap();
        let (method, uri, content, _) = &asked[0];
        assert_eq!(method, "PATCH");
        assert!(uri.starts_with(
            "/apis/nestor.dev/v1alpha1/namespaces/tenants/virtualclusters/demo/status"
        ));
        assert_eq!(content, "application/merge-patch+json");
        let written = ctx
            .written_status
            .lock()
            .unwrap()
            .get(vc.metadata.uid.as_deref().unwrap())
            .cloned();
        assert_eq!(
            written.and_then(|s| s.phase),
            Some(nestor_crds::VirtualClusterPhase::Deleting)
        );
        let writes: u64 = ctx
            .metrics
            .writes
            .get_or_create(&crate::metrics::WriteLabels {
                verb: "patch_status",
                kind: "VirtualCluster",
            })
            .get();
        assert_eq!(writes, 1, "the second reconcile writes nothing");
    }

    #[test]
    fn the_legacy_finalizer_alone_is_released_where_it_was_read() {
        let mut vc = fixtures::vc(json!({}));
        assert_eq!(legacy_finalizer(&vc), None, "a cluster of this version");
        vc.metadata.finalizers = Some(vec!["example.com/keep".into(), FINALIZER.into()]);
        let index = legacy_finalizer(&vc).expect("an older Nestor's cluster");
        let patch = release_finalizer_patch(index);
        let mut doc = serde_json::to_value(&vc).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["example.com/keep"]));
        // The list changed since it was read: the patch fails, nothing is
        // removed, and the next reconcile reads it again.
        let mut moved = serde_json::to_value(&vc).unwrap();
        moved["metadata"]["finalizers"] = json!([FINALIZER]);
        assert!(json_patch::patch(&mut moved, &patch).is_err());
        assert_eq!(moved["metadata"]["finalizers"], json!([FINALIZER]));
    }
}
