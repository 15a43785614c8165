//! The `VirtualCluster` reconciler: a thin driver over the stages of
//! [`crate::build`].
//!
//! validate (pure) -> Services -> PKI Secrets -> workloads -> the API
//! server's clients once it serves -> the nested add-ons -> status computed
//! from what was applied (pure) -> status patched only when it changed.
//! A cluster has no finalizer: the garbage collector deletes its children
//! (and its pools, which the pool reconciler gives it as an owner).

mod backup;
mod encryption;
mod leaders;
mod pki;
mod snapshot;
mod stages;

use crate::build::apiserver::{host_of, node_address, published_endpoint};
use crate::build::desired_coredns_config;
use crate::build::nested_addons::NestedAddons;
use crate::build::pki_secrets::{BUNDLE_FINGERPRINT, Exposure};
use crate::client::apply::apply_holdable;
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::client::nested;
use crate::model::backup::BackupObserved;
use crate::model::cached::CachedService;
use crate::model::images;
use crate::model::inputs::ClusterInputs;
use crate::model::names::{ClusterNames, NESTED_ADDONS};
use crate::model::readable::unreadable;
use crate::model::status::{Observed, Rollout, compute_status, is_ready};
use crate::model::upgrade::{self, Steps};
use crate::model::validate::validate_cluster;
use crate::reconcile::nodepool::pools_joining;
use crate::reconcile::policy::{
    RESYNC, RETRY, previous_status, report_invalid, report_unreadable, update_status,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use nestor_crds::{ExposureType, UpgradeStatus, UpgradeStep, VirtualCluster, VirtualClusterStatus};

use std::sync::Arc;
use tracing::{info, warn};

/// Reconciles one `VirtualCluster`.
pub async fn reconcile(vc: Arc<VirtualCluster>, ctx: Arc<Context>) -> Result<Action> {
    if vc.metadata.deletion_timestamp.is_some() {
        // Deleted in the foreground: the garbage collector is removing the
        // children, which must not be written again; the status says so.
        mark_deleting(&vc, &ctx).await;
        return Ok(Action::await_change());
    }
    if let Some(why) = unreadable(&vc.metadata) {
        let observed = Observed {
            invalid: Some(why.to_string()),
            ..observe(&ctx, &ClusterNames::new(&vc))
        };
        return report_unreadable(&ctx, vc.as_ref(), why, status_now(&observed, &vc)).await;
    }
    apply(&vc, &ctx).await
}

fn status_now(
    observed: &Observed,
    vc: &VirtualCluster,
) -> impl FnOnce(Option<&VirtualClusterStatus>) -> VirtualClusterStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = vc.metadata.generation;
    move |previous| compute_status(observed, previous, generation, &now)
}

async fn apply(vc: &VirtualCluster, ctx: &Context) -> Result<Action> {
    let names = ClusterNames::new(vc);
    let valid = match validate_cluster(&names.cluster, &vc.spec, &ctx.settings.platform()) {
        Ok(valid) => valid,
        Err(invalid) => return refuse(ctx, vc, &names, invalid.to_string()).await,
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // A change of version or images rolls out step by step: what a step
    // has not reached yet is built as it runs (`from`). The status Nestor
    // last wrote counts, should the cache not have it yet: a step the
    // record has passed stays passed.
    let previous = previous_status(ctx, vc);
    let change = upgrade::change(&vc.spec, previous.as_ref(), &now);
    let from_vc = change.as_ref().map(|c| at_target(vc, &c.from));
    let revision = cached_pki_revision(ctx, &names);
    let mut inputs = ClusterInputs::new(vc, valid, &ctx.settings, revision);
    // Services first: the API server's address goes into its certificate.
    let services = stages::apply_services(ctx, &inputs).await?;
    let exposure = exposure(ctx, vc, &names, services.apiserver.object()).await?;
    inputs.pki_revision = pki::ensure_pki(ctx, vc, &inputs, &exposure).await?;
    inputs.encryption_revision = encryption::ensure_encryption(ctx, &inputs).await?;
    let from = from_vc.as_ref().and_then(|at| inputs.at(at, &ctx.settings));
    let mut steps = Steps::new(change.as_ref());
    let control_plane = stages::apply_control_plane(
        ctx,
        &inputs,
        from.as_ref(),
        change.as_ref(),
        &mut steps,
        &now,
    )
    .await?;
    let apiserver = control_plane.apiserver_rollout();
    let migrating = encryption::migrating(ctx, vc, &inputs, &apiserver).await;
    let serving = apiserver.ready >= 1;
    let addons_installed =
        ensure_nested_addons(ctx, vc, &inputs, services.dns.object(), serving).await?;
    let clients = stages::apply_clients(
        ctx,
        vc,
        &inputs,
        from.as_ref(),
        &mut steps,
        serving,
        addons_installed,
    )
    .await?;
    steps.pools_run(change.as_ref().is_some_and(|c| pools_run(ctx, vc, &c.to)));
    let record = steps.record(&vc.spec, previous.as_ref(), &now);
    announce_upgrade(ctx, vc, previous.as_ref(), record.as_ref()).await;
    let upgrading = record
        .as_ref()
        .is_some_and(|r| !matches!(r.step, UpgradeStep::Complete | UpgradeStep::RolledBack));
    // Status is computed from what the API server returned for each
    // workload (or the cache, when nothing was sent): never from a cache
    // that has not yet seen this reconcile's writes.
    let backups =
        backup::ensure_backups(ctx, vc, &inputs, control_plane.etcd_quorum(), now.0).await?;
    let observed = stages::observed(
        &names,
        exposure,
        control_plane,
        &clients,
        record,
        backups.observed,
    );
    let status = update_status(ctx, vc, status_now(&observed, vc)).await?;
    announce_readiness(ctx, vc, &names, &status).await;
    let soon = migrating || upgrading;
    let resync = RESYNC.min(ctx.settings.addons_recheck);
    Ok(Action::requeue(if soon {
        RETRY
    } else {
        backups.again_in.map_or(resync, |at| at.min(resync))
    }))
}

/// Reports a spec that does not validate, changing nothing that runs.
async fn refuse(
    ctx: &Context,
    vc: &VirtualCluster,
    names: &ClusterNames,
    message: String,
) -> Result<Action> {
    let observed = Observed {
        invalid: Some(message.clone()),
        ..observe(ctx, names)
    };
    report_invalid(ctx, vc, &message, status_now(&observed, vc)).await
}

/// The roots' fingerprint as the cache has it (empty before they exist).
fn cached_pki_revision(ctx: &Context, names: &ClusterNames) -> String {
    ctx.stores
        .secrets
        .get(&ObjectRef::new(&names.ca_secret()).within(&names.namespace))
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned())
        .unwrap_or_default()
}

/// The cluster as it is built at `target` (a version and images).
fn at_target(vc: &VirtualCluster, target: &upgrade::Target) -> VirtualCluster {
    let mut at = vc.clone();
    at.spec.version = target.version.clone();
    at.spec.images = target.images.clone();
    at.status = None;
    at
}

/// Whether every pool that follows the cluster's version runs `to` on
/// every node: its kubelet version and its node image (a pool with its own
/// version keeps it).
fn pools_run(ctx: &Context, vc: &VirtualCluster, to: &upgrade::Target) -> bool {
    let image = images::pool_node_image(&ctx.settings, &to.images, &to.version);
    pools_joining(&ctx.stores.node_pools, vc)
        .filter(|p| p.spec.version.is_none())
        .all(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.replicas == p.spec.replicas
                    && s.updated_replicas == p.spec.replicas
                    && (p.spec.replicas == 0
                        || (s.version.as_deref() == Some(to.version.as_str())
                            && s.image.as_deref() == Some(image.as_str())))
            })
        })
}

/// An Event each time a change of version or images reaches a new step.
async fn announce_upgrade(
    ctx: &Context,
    vc: &VirtualCluster,
    previous: Option<&VirtualClusterStatus>,
    record: Option<&UpgradeStatus>,
) {
    let Some(record) = record else { return };
    let before = previous
        .and_then(|s| s.upgrade.as_ref())
        .filter(|u| u.target == record.target)
        .map(|u| u.step);
    if before == Some(record.step) {
        return;
    }
    let (kind, reason) = match record.step {
        UpgradeStep::RolledBack => (EventType::Warning, "RolledBack"),
        UpgradeStep::Complete => (EventType::Normal, "Upgraded"),
        _ => (EventType::Normal, "Upgrading"),
    };
    let note = match record.step {
        UpgradeStep::RolledBack => record.message.clone().unwrap_or_default(),
        step => format!(
            "{} to {}: {}",
            record.from,
            record.to,
            crate::model::status::describe_step(step)
        ),
    };
    info!(cluster = %vc.name_any(), namespace = %vc.namespace().unwrap_or_default(), step = ?record.step, "{note}");
    ctx.publish(vc, kind, reason, note).await;
}

/// A Normal Event when the cluster turns Ready, a Warning when it stops
/// being Ready.
async fn announce_readiness(
    ctx: &Context,
    vc: &VirtualCluster,
    names: &ClusterNames,
    status: &VirtualClusterStatus,
) {
    let ready = is_ready(&status.conditions);
    let was_ready = vc.status.as_ref().is_some_and(|s| is_ready(&s.conditions));
    if ready && !was_ready {
        info!(cluster = %names.cluster, namespace = %names.namespace, "virtual cluster is ready");
        ctx.publish(
            vc,
            EventType::Normal,
            "Ready",
            "every control-plane component is ready".into(),
        )
        .await;
    } else if !ready && was_ready {
        let why = crate::reconcile::policy::ready_message::<VirtualCluster>(Some(status))
            .unwrap_or_default()
            .to_string();
        ctx.publish(vc, EventType::Warning, "NotReady", why).await;
    }
}

/// Writes the add-ons' objects into the nested cluster (the confining
/// admission policies, the admin binding, RBAC for CoreDNS, node
/// bootstrapping and the kubelet client, `kube-system/kube-dns`) once its
/// API server serves, and again whenever they change. The hash of what was
/// written is kept on the CoreDNS ConfigMap. Whatever confines the cluster
/// is also read back on every resync (at least every
/// `settings.addons_recheck`), and any object that is missing or changed
/// is written again at once, with a Warning Event: nothing a superuser's
/// request or a lost write did to them outlasts a resync. Returns whether
/// they are in place.
async fn ensure_nested_addons(
    ctx: &Context,
    vc: &VirtualCluster,
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
        .and_then(|cm| cm.annotations().get(NESTED_ADDONS).cloned());
    let host_dns_ip = dns_service.cluster_ip().unwrap_or_default().to_string();
    let wanted = NestedAddons::new(inputs, &host_dns_ip);
    let hash = wanted.hash();
    let current = written.as_deref() == Some(hash.as_str());
    let writing = serving && !host_dns_ip.is_empty() && !current;
    // Reconciles come at least every recheck (see the requeue), a little
    // late or early: a tenth of slack keeps every one of them reading.
    let every = ctx.settings.addons_recheck.mul_f64(0.9);
    let checking = serving && current && ctx.nested.addons_due(names, every);
    if writing || checking {
        let client = nested::client(ctx, vc).await?;
        let repaired = nested::write_addons(ctx, &client, names, &wanted, checking).await?;
        ctx.nested.addons_checked(names);
        if writing {
            info!(cluster = %names.cluster, namespace = %names.namespace, "wrote the add-ons into the nested cluster");
        } else if !repaired.is_empty() {
            let what = repaired.join(", ");
            warn!(cluster = %names.cluster, namespace = %names.namespace, repaired = %what, "wrote missing or changed add-ons into the nested cluster again");
            ctx.publish(
                vc,
                EventType::Warning,
                "AddonsRepaired",
                format!("written again after they went missing or were changed in the nested cluster: {what}"),
            )
            .await;
        }
    }
    let installed = if writing { Some(hash) } else { written.clone() };
    // Writing the add-ons changes only the value of the annotation (or
    // adds it): the ConfigMap is released like a held Deployment.
    let config = desired_coredns_config(inputs, installed.as_deref(), writing, written.as_deref());
    apply_holdable(ctx, &ctx.stores.config_maps, config).await?;
    Ok(installed.is_some())
}

/// Where the API server is published and which names its certificate needs.
async fn exposure(
    ctx: &Context,
    vc: &VirtualCluster,
    names: &ClusterNames,
    service: &CachedService,
) -> Result<Exposure> {
    let node_address = if vc.spec.api_server.exposure == ExposureType::NodePort {
        let published = vc
            .status
            .as_ref()
            .and_then(|s| s.endpoint.as_deref())
            .and_then(host_of);
        node_address(published.as_deref(), &host_node_addresses(ctx).await?)
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

/// Every host node's name and InternalIP.
async fn host_node_addresses(ctx: &Context) -> Result<Vec<(String, String)>> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Read {
            what: "nodes".into(),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|node| {
            let name = node.metadata.name?;
            let ip = node
                .status?
                .addresses?
                .into_iter()
                .find(|a| a.type_ == "InternalIP")?
                .address;
            Some((name, ip))
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
        invalid: None,
        deleting: false,
        endpoint: None,
        admin_kubeconfig_secret: None,
        apiserver_images: None,
        // The cache says nothing of them: the last records stay.
        upgrade: None,
        backup: BackupObserved::NotLooked,
    }
}

/// Reports a cluster that is being deleted as `Deleting` (written only
/// once: the status is patched only when it changes). Best effort: the
/// object is going away.
async fn mark_deleting(vc: &VirtualCluster, ctx: &Context) {
    let observed = Observed {
        deleting: true,
        ..observe(ctx, &ClusterNames::new(vc))
    };
    if let Err(e) = update_status(ctx, vc, status_now(&observed, vc)).await {
        warn!(error = %e, "could not mark the cluster as deleting");
    }
}
