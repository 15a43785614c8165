//! The backup stage: reads the cluster's backup Jobs, lets the pure plan
//! ([`crate::model::backup::plan`]) decide, checks the destination before
//! a Job starts, and starts and deletes Jobs. A cluster without
//! `spec.backup` costs nothing here unless its status still lists backups.
//!
//! A finished Job is read from its pod once: the operator writes what the
//! pod reported on the Job (`nestor.dev/backup-report`) and publishes an
//! Event, so later passes read the Job alone.

use crate::build::backup::{ACCESS_KEY_ID, CA_KEY, SECRET_ACCESS_KEY, desired_backup_job};
use crate::client::context::Context;
use crate::client::error::{Error, Result};
use crate::model::backup::{
    BACKUP_SUCCEEDED, BackupFacts, BackupJob, BackupObserved, FailureReason, Outcome,
    REPORT_ANNOTATION, Report, outcome_of_pod, plan,
};
use crate::model::inputs::ClusterInputs;
use crate::model::names::{CLUSTER_LABEL, COMPONENT_LABEL, Component};
use crate::reconcile::policy::RETRY;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::events::EventType;
use nestor_crds::{BACKUP_LABEL, BACKUP_NOW_ANNOTATION, BackupSpec, VirtualCluster};
use std::time::Duration;
use tracing::info;

/// What the stage found, and when it wants to look again.
pub(super) struct BackupPass {
    pub observed: BackupObserved,
    /// `None`: no sooner than the usual resync.
    pub again_in: Option<Duration>,
}

fn job_error(verb: &'static str, ns: &str, name: &str, source: kube::Error) -> Error {
    Error::ApplyChild {
        verb,
        kind: "Job",
        namespace: ns.to_string(),
        name: name.to_string(),
        source,
    }
}

/// Runs the backup stage of one pass. `etcd_ready`: a quorum of etcd
/// members serves.
pub(super) async fn ensure_backups(
    ctx: &Context,
    vc: &VirtualCluster,
    inputs: &ClusterInputs<'_>,
    etcd_ready: bool,
    now: Timestamp,
) -> Result<BackupPass> {
    let ns = &inputs.names.namespace;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let Some(spec) = &vc.spec.backup else {
        // Turned off: the Jobs that are left go (looked for only while the
        // status still speaks of backups).
        let spoke_of_backups = vc.status.as_ref().is_some_and(|s| {
            !s.backups.is_empty()
                || s.backup_request.is_some()
                || s.conditions.iter().any(|c| c.type_ == BACKUP_SUCCEEDED)
        });
        if spoke_of_backups {
            for job in list_jobs(&jobs, inputs).await? {
                delete_job(ctx, &jobs, ns, &job.name_any()).await?;
            }
        }
        return Ok(BackupPass {
            observed: BackupObserved::Off,
            again_in: None,
        });
    };
    let mut found = Vec::new();
    for job in list_jobs(&jobs, inputs).await? {
        let outcome = outcome_of(ctx, vc, &jobs, &job).await?;
        found.push(BackupJob {
            name: job.name_any(),
            outcome,
        });
    }
    let status = vc.status.as_ref();
    let facts = BackupFacts {
        cluster: &inputs.names.cluster,
        spec,
        // Unknown, the latest slot is made up rather than none ever.
        created: vc
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::MIN, |t| t.0),
        asked: vc
            .annotations()
            .get(BACKUP_NOW_ANNOTATION)
            .map(String::as_str),
        records: status.map(|s| s.backups.as_slice()).unwrap_or_default(),
        served: status.and_then(|s| s.backup_request.as_deref()),
        jobs: &found,
        etcd_ready,
        now,
    };
    let mut planned = plan(&facts);
    for name in &planned.delete {
        delete_job(ctx, &jobs, ns, name).await?;
    }
    let mut running = found.iter().any(|j| j.outcome.is_none());
    if let Some(start) = &planned.start {
        match destination_problem(ctx, ns, spec).await? {
            Some((reason, message)) => {
                // Nothing starts, and nothing counts as served: the same
                // slot or request starts once the destination is fixed.
                if let BackupObserved::On { request, last, .. } = &mut planned.observed {
                    *request = facts.served.map(str::to_string);
                    *last = Some(Outcome::Failed { reason, message });
                }
            }
            None => {
                let job = desired_backup_job(inputs, spec, start);
                ctx.metrics.write("create", "Job");
                match jobs.create(&PostParams::default(), &job).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(job_error("creating", ns, &start.job, e)),
                }
                info!(cluster = %inputs.names.cluster, namespace = %ns, job = %start.job, backup = %start.name, "starting a backup");
                running = true;
            }
        }
    }
    let next = match &planned.observed {
        BackupObserved::On {
            next: Some(next), ..
        } => {
            let seconds = (next.as_second() - now.as_second()).max(1);
            Some(Duration::from_secs(seconds.unsigned_abs()))
        }
        _ => None,
    };
    // A running Job is not watched: it is read again soon.
    let again_in = if running { Some(RETRY * 2) } else { next };
    Ok(BackupPass {
        observed: planned.observed,
        again_in,
    })
}

async fn list_jobs(jobs: &Api<Job>, inputs: &ClusterInputs<'_>) -> Result<Vec<Job>> {
    let selector = format!(
        "{CLUSTER_LABEL}={},{COMPONENT_LABEL}={}",
        inputs.names.cluster,
        Component::EtcdBackup.as_str()
    );
    jobs.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .map_err(|source| Error::Read {
            what: format!(
                "backup Jobs of {}/{}",
                inputs.names.namespace, inputs.names.cluster
            ),
            source,
        })
}

async fn delete_job(ctx: &Context, jobs: &Api<Job>, ns: &str, name: &str) -> Result<()> {
    ctx.metrics.write("delete", "Job");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(job_error("deleting", ns, name, e)),
    }
}

/// How `job` ended (`None` while it runs). Read from the annotation the
/// operator wrote, or once from the pod, then written there with an Event.
async fn outcome_of(
    ctx: &Context,
    vc: &VirtualCluster,
    jobs: &Api<Job>,
    job: &Job,
) -> Result<Option<Outcome>> {
    if let Some(report) = job
        .annotations()
        .get(REPORT_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Report>(text).ok())
    {
        return Ok(Some(report.into()));
    }
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let ended = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    let failure = ended("Failed");
    if ended("Complete").is_none() && failure.is_none() {
        return Ok(None);
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await
        .map_err(|source| Error::Read {
            what: format!("the pod of Job {ns}/{name}"),
            source,
        })?;
    let pod = listed.items.into_iter().next().and_then(|p| p.status);
    let failure = failure.map(|c| {
        (
            c.reason.as_deref().unwrap_or("Failed"),
            c.message.as_deref().unwrap_or_default(),
        )
    });
    let outcome = outcome_of_pod(pod.as_ref(), failure);
    let report = serde_json::to_string(&Report::from(outcome.clone())).unwrap_or_default();
    let patch = serde_json::json!({"metadata": {"annotations": {REPORT_ANNOTATION: report}}});
    ctx.metrics.write("patch", "Job");
    jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| job_error("annotating", &ns, &name, e))?;
    announce(ctx, vc, &outcome).await;
    Ok(Some(outcome))
}

/// One Event per finished backup.
async fn announce(ctx: &Context, vc: &VirtualCluster, outcome: &Outcome) {
    let (kind, reason, note) = match outcome {
        Outcome::Succeeded { record, .. } => (
            EventType::Normal,
            BACKUP_SUCCEEDED,
            format!(
                "backup {} verified: {} bytes at revision {}, at {}",
                record.name, record.size_bytes, record.revision, record.location
            ),
        ),
        Outcome::Failed { reason, message } => {
            (EventType::Warning, reason.as_str(), message.clone())
        }
    };
    info!(cluster = %vc.name_any(), namespace = %vc.namespace().unwrap_or_default(), reason, "{note}");
    ctx.publish(vc, kind, reason, note).await;
}

/// Why the destination may not be used, if it may not: each Secret and
/// claim it names must exist in the namespace and carry the label
/// `nestor.dev/backup: "true"` (the platform's mark), and the Secrets
/// their keys. No value of a Secret is read beyond its keys' presence.
async fn destination_problem(
    ctx: &Context,
    ns: &str,
    spec: &BackupSpec,
) -> Result<Option<(FailureReason, String)>> {
    let marked = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(BACKUP_LABEL).map(String::as_str) == Some("true")
    };
    let not_allowed = |field: &str, kind: &str, name: &str, missing: bool| {
        let why = if missing {
            "does not exist".to_string()
        } else {
            format!(
                "is not labelled {BACKUP_LABEL}=true (the platform's mark of what may hold or reach backups)"
            )
        };
        Some((
            FailureReason::DestinationNotAllowed,
            format!("{field}: {kind} {ns}/{name} {why}"),
        ))
    };
    if let Some(volume) = &spec.destination.volume {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        let name = &volume.claim_name;
        let claim = claims.get_opt(name).await.map_err(|source| Error::Read {
            what: format!("PersistentVolumeClaim {ns}/{name}"),
            source,
        })?;
        let field = "spec.backup.destination.volume.claimName";
        return Ok(match claim {
            None => not_allowed(field, "PersistentVolumeClaim", name, true),
            Some(c) if !marked(c.labels()) => {
                not_allowed(field, "PersistentVolumeClaim", name, false)
            }
            Some(_) => None,
        });
    }
    let Some(s3) = &spec.destination.s3 else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut wanted = vec![(
        "spec.backup.destination.s3.credentialsSecret",
        &s3.credentials_secret,
        vec![ACCESS_KEY_ID, SECRET_ACCESS_KEY],
    )];
    if let Some(ca) = &s3.ca_secret {
        wanted.push(("spec.backup.destination.s3.caSecret", ca, vec![CA_KEY]));
    }
    for (field, name, keys) in wanted {
        let secret = secrets.get_opt(name).await.map_err(|e| match e {
            kube::Error::Api(s) => Error::ReadSecret {
                namespace: ns.to_string(),
                name: name.clone(),
                code: s.code,
                reason: s.reason,
            },
            source => Error::Read {
                what: format!("Secret {ns}/{name}"),
                source,
            },
        })?;
        let Some(secret) = secret else {
            return Ok(not_allowed(field, "Secret", name, true));
        };
        if !marked(secret.labels()) {
            return Ok(not_allowed(field, "Secret", name, false));
        }
        let has = |key: &str| {
            secret.data.as_ref().is_some_and(|d| d.contains_key(key))
                || secret
                    .string_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(key))
        };
        let missing: Vec<&str> = keys.into_iter().filter(|k| !has(k)).collect();
        if !missing.is_empty() {
            return Ok(Some((
                FailureReason::CredentialsMissing,
                format!(
                    "{field}: Secret {ns}/{name} has no key {}",
                    missing.join(" and no key ")
                ),
            )));
        }
    }
    Ok(None)
}
