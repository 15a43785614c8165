//! The stages of a cluster's reconcile, each one call of the driver: the
//! Services; the control plane's data and API servers; their clients. Each
//! returns what the API server answered for its workloads, typed, and the
//! status is computed from those alone. During a change of version or
//! images each stage asks [`Steps`] which form each component takes.

use super::{leaders, snapshot};
use crate::build::pki_secrets::Exposure;
use crate::build::{ClientStarts, ClusterClients, ClusterServices, ClusterWorkloads, Start};
use crate::client::apply::{Applied, FirstWrite, apply_holdable, apply_owned};
use crate::client::context::Context;
use crate::client::error::Result;
use crate::model::backup::BackupObserved;
use crate::model::cached::{CachedService, Workload};
use crate::model::inputs::ClusterInputs;
use crate::model::names::ClusterNames;
use crate::model::status::{Observed, Rollout};
use crate::model::upgrade::{self, Change, Snapshot, Steps};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::{ObjectRef, Store};
use nestor_crds::{ImagesSpec, UpgradeStatus, VirtualCluster};

/// The Services that later stages read back.
pub(super) struct AppliedServices {
    pub dns: Applied<CachedService>,
    pub apiserver: Applied<CachedService>,
}

/// Every Service, written together (independent writes go out at once;
/// each stage waits for the last).
pub(super) async fn apply_services(
    ctx: &Context,
    inputs: &ClusterInputs<'_>,
) -> Result<AppliedServices> {
    let ClusterServices {
        etcd_peer,
        etcd_client,
        dns,
        apiserver,
    } = ClusterServices::desired(inputs);
    let create = |service| apply_owned(ctx, &ctx.stores.services, service, FirstWrite::Create);
    let (_, _, dns, apiserver) = futures::try_join!(
        create(etcd_peer),
        create(etcd_client),
        create(dns),
        create(apiserver),
    )?;
    Ok(AppliedServices { dns, apiserver })
}

/// etcd and the API servers, as applied.
pub(super) struct AppliedControlPlane {
    pub etcd: Applied<Workload<StatefulSet>>,
    pub apiserver: Applied<Workload<Deployment>>,
    /// The `spec.images` the API servers were built from.
    pub apiserver_images: ImagesSpec,
}

impl AppliedControlPlane {
    pub(super) fn apiserver_rollout(&self) -> Rollout {
        Rollout::from_deployment(self.apiserver.object())
    }

    /// A quorum of etcd's members is ready: a snapshot can be taken.
    pub(super) fn etcd_quorum(&self) -> bool {
        let etcd = Rollout::from_statefulset(self.etcd.object());
        etcd.ready > etcd.desired / 2
    }
}

/// The snapshot a change takes first, the configuration, the network
/// policies and etcd together, then the API servers. `from` is the cluster
/// as it runs during a change.
pub(super) async fn apply_control_plane(
    ctx: &Context,
    inputs: &ClusterInputs<'_>,
    from: Option<&ClusterInputs<'_>>,
    change: Option<&Change>,
    steps: &mut Steps<'_>,
    now: &Time,
) -> Result<AppliedControlPlane> {
    let stores = &ctx.stores;
    let taken = match (change, from) {
        (Some(c), Some(from)) if steps.needs_snapshot() => {
            snapshot::ensure_snapshot(ctx, from, &c.record).await?
        }
        _ => Snapshot::NotNeeded,
    };
    steps.snapshot(taken);
    let ClusterWorkloads {
        kube_proxy_config,
        apiserver_config,
        network_policies,
        etcd,
        apiserver,
    } = ClusterWorkloads::desired(inputs);
    let (from_etcd, from_apiserver) = from
        .map(|from| {
            let workloads = ClusterWorkloads::desired(from);
            (workloads.etcd, workloads.apiserver)
        })
        .unzip();
    let config = |map| apply_owned(ctx, &stores.config_maps, map, FirstWrite::Create);
    let policy = |p| apply_owned(ctx, &stores.network_policies, p, FirstWrite::Create);
    let etcd = upgrade::either(steps.etcd_at_to(), etcd, from_etcd);
    let (_, _, _, etcd) = futures::try_join!(
        config(kube_proxy_config),
        config(apiserver_config),
        futures::future::try_join_all(network_policies.into_iter().map(policy)),
        apply_owned(ctx, &stores.stateful_sets, etcd, FirstWrite::Create),
    )?;
    steps.etcd_applied(&Rollout::from_statefulset(etcd.object()));
    // Past its deadline, a new API server that does not serve is rolled
    // back (decided from the cache, before this pass writes it).
    let spec = &inputs.vc.spec.upgrade;
    let serving = cached_rollout(&stores.deployments, &inputs.names, inputs.names.apiserver())
        .is_some_and(|r| r.replaced());
    let timeout = upgrade::timeout(spec);
    steps.roll_back_if_overdue(timeout, &spec.api_server_timeout, now, serving);
    let at_to = steps.apiserver_at_to();
    let apiserver_images = upgrade::either(at_to, inputs, from).vc.spec.images.clone();
    let apiserver = upgrade::either(at_to, apiserver, from_apiserver);
    let apiserver = apply_owned(ctx, &stores.deployments, apiserver, FirstWrite::Create).await?;
    steps.apiserver_applied(&Rollout::from_deployment(apiserver.object()));
    Ok(AppliedControlPlane {
        etcd,
        apiserver,
        apiserver_images,
    })
}

/// The API server's clients, as applied.
pub(super) struct AppliedClients {
    pub controller_manager: Applied<Workload<Deployment>>,
    pub scheduler: Applied<Workload<Deployment>>,
    pub coredns: Applied<Workload<Deployment>>,
}

/// The controller-manager and the scheduler (started once the API server
/// serves), then CoreDNS (started once its RBAC is in the nested cluster,
/// `addons_installed`): none of them crash-loops or backs off while the
/// API server comes up, and once started they stay started. During a
/// change the managers follow every API server, and CoreDNS follows them.
pub(super) async fn apply_clients(
    ctx: &Context,
    vc: &VirtualCluster,
    inputs: &ClusterInputs<'_>,
    from: Option<&ClusterInputs<'_>>,
    steps: &mut Steps<'_>,
    serving: bool,
    addons_installed: bool,
) -> Result<AppliedClients> {
    let (stores, names) = (&ctx.stores, &inputs.names);
    let start =
        |name: String, ready: bool| Start::new(ready, is_held(&stores.deployments, names, &name));
    let starts = || ClientStarts {
        controller_manager: start(names.controller_manager(), serving),
        scheduler: start(names.scheduler(), serving),
        coredns: start(names.coredns(), addons_installed),
    };
    // Destructured without `..`: a client added to the stage and not
    // applied here does not compile.
    let ClusterClients {
        controller_manager,
        scheduler,
        coredns,
    } = ClusterClients::desired(inputs, starts());
    let (from_cm, from_scheduler, from_coredns) = match from {
        Some(from) => {
            let f = ClusterClients::desired(from, starts());
            (
                Some(f.controller_manager),
                Some(f.scheduler),
                Some(f.coredns),
            )
        }
        None => (None, None, None),
    };
    let at_to = steps.managers_at_to();
    let holdable = |d| apply_holdable(ctx, &stores.deployments, d);
    let (controller_manager, scheduler) = futures::try_join!(
        holdable(upgrade::either(at_to, controller_manager, from_cm)),
        holdable(upgrade::either(at_to, scheduler, from_scheduler)),
    )?;
    let rollout =
        |applied: &Applied<Workload<Deployment>>| Rollout::from_deployment(applied.object());
    // Rolled, the step waits until a new replica of each leads.
    let ask = steps.leaders_to_check(&rollout(&controller_manager), &rollout(&scheduler));
    let led = match ask {
        Some(version) => leaders::new_ones_lead(ctx, vc, names, version).await,
        None => false,
    };
    steps.managers_led(led);
    let coredns = upgrade::either(steps.addons_at_to(), coredns, from_coredns);
    let coredns = holdable(coredns).await?;
    steps.addons_applied(&rollout(&coredns));
    Ok(AppliedClients {
        controller_manager,
        scheduler,
        coredns,
    })
}

/// A cached Deployment's rollout.
pub(super) fn cached_rollout(
    store: &Store<Workload<Deployment>>,
    names: &ClusterNames,
    name: String,
) -> Option<Rollout> {
    store
        .get(&ObjectRef::new(&name).within(&names.namespace))
        .map(|d| Rollout::from_deployment(&d))
}

/// Whether the cache holds `name` at zero replicas, or not at all.
fn is_held(store: &Store<Workload<Deployment>>, names: &ClusterNames, name: &str) -> bool {
    store
        .get(&ObjectRef::new(name).within(&names.namespace))
        .is_none_or(|d| d.replicas().unwrap_or(0) == 0)
}

/// What the status is computed from: the workloads as applied in this
/// pass, where the API server is published, and the change's record.
pub(super) fn observed(
    names: &ClusterNames,
    exposure: Exposure,
    control_plane: AppliedControlPlane,
    clients: &AppliedClients,
    record: Option<UpgradeStatus>,
    backup: BackupObserved,
) -> Observed {
    let deployment =
        |applied: &Applied<Workload<Deployment>>| Some(Rollout::from_deployment(applied.object()));
    // Both destructured and built without `..`: a workload applied and not
    // observed, or observed and not reported, does not compile.
    let AppliedControlPlane {
        etcd,
        apiserver,
        apiserver_images,
    } = control_plane;
    let AppliedClients {
        controller_manager,
        scheduler,
        coredns,
    } = clients;
    Observed {
        invalid: None,
        deleting: false,
        etcd: Some(Rollout::from_statefulset(etcd.object())),
        apiserver: deployment(&apiserver),
        controller_manager: deployment(controller_manager),
        scheduler: deployment(scheduler),
        coredns: deployment(coredns),
        endpoint: Some(exposure.admin_endpoint),
        admin_kubeconfig_secret: Some(names.admin_kubeconfig_secret()),
        apiserver_images: Some(apiserver_images),
        upgrade: Some(record),
        backup,
    }
}
