//! The etcd snapshot before a version change: its volume and its Job
//! (built in [`crate::build::snapshot`]), created once and read back. Only
//! a cluster whose version or images change pays for this: one read of
//! the Job per reconcile while the snapshot is taken, none after.

use crate::build::snapshot::{
    BACKOFF_LIMIT, desired_snapshot_claim, desired_snapshot_job, snapshot_location,
};
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::model::inputs::ClusterInputs;
use crate::model::upgrade::Snapshot;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use nestor_crds::UpgradeStatus;
use tracing::info;

fn child_error(
    verb: &'static str,
    kind: &'static str,
    ns: &str,
    name: &str,
    source: kube::Error,
) -> Error {
    Error::ApplyChild {
        verb,
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        source,
    }
}

/// Creates the snapshot volume and Job when missing and says how the
/// snapshot stands. `inputs` are those of the version that runs (its etcd
/// image carries etcdctl).
pub(super) async fn ensure_snapshot(
    ctx: &Context,
    inputs: &ClusterInputs<'_>,
    record: &UpgradeStatus,
) -> Result<Snapshot> {
    let ns = &inputs.names.namespace;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let claim = desired_snapshot_claim(inputs);
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let present = claims
        .get_opt(&claim_name)
        .await
        .map_err(|e| child_error("reading", "PersistentVolumeClaim", ns, &claim_name, e))?;
    if present.is_none() {
        ctx.metrics.write("create", "PersistentVolumeClaim");
        match claims.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(child_error(
                    "creating",
                    "PersistentVolumeClaim",
                    ns,
                    &claim_name,
                    e,
                ));
            }
        }
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let job = desired_snapshot_job(inputs, record);
    let name = job.metadata.name.clone().unwrap_or_default();
    let Some(current) = jobs
        .get_opt(&name)
        .await
        .map_err(|e| child_error("reading", "Job", ns, &name, e))?
    else {
        ctx.metrics.write("create", "Job");
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(child_error("creating", "Job", ns, &name, e)),
        }
        info!(cluster = %inputs.names.cluster, namespace = %ns, job = %name, "taking an etcd snapshot before the version change");
        return Ok(Snapshot::Running);
    };
    let status = current.status.unwrap_or_default();
    if status.succeeded.unwrap_or(0) > 0 {
        return Ok(Snapshot::Taken(snapshot_location(inputs)));
    }
    let failed = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    if failed.is_some() || status.failed.unwrap_or(0) > BACKOFF_LIMIT {
        let why = failed
            .and_then(|c| c.reason)
            .unwrap_or_else(|| "BackoffLimitExceeded".into());
        ctx.metrics.write("delete", "Job");
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match jobs.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(child_error("deleting", "Job", ns, &name, e)),
        }
        return Ok(Snapshot::Failed(format!("Job {name}: {why}")));
    }
    Ok(Snapshot::Running)
}
