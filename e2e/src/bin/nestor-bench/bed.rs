//! The benchmark's test beds: one per phase, with Nestor's CRDs.

use anyhow::Result;
use nestor_e2e::process::Lifetime;
use nestor_e2e::testbed::TestBedOptions;
use nestor_e2e::tools::kubectl_ok;
use nestor_e2e::{TestBed, paths};
use std::path::Path;

/// A test bed of its own for one phase, with Nestor's CRDs established.
///
/// Every phase starts from the same state. On one test bed shared by every
/// phase, each phase would begin where the earlier ones left it, their
/// objects deleted: the API server's memory and etcd's database grow from
/// phase to phase, and the deletions take minutes to die down, an effect
/// that cannot be told apart from the machine's drift. A fresh test bed
/// per phase removes the question.
pub(crate) async fn fresh_bed(
    dir: &Path,
    options: &TestBedOptions,
) -> Result<(TestBed, kube::Client)> {
    let mut bed = TestBed::start(dir, Lifetime::Tied, options).await?;
    match install_crds(&bed).await {
        Ok(admin) => Ok((bed, admin)),
        Err(e) => {
            bed.keep_logs();
            eprintln!("bench: logs kept in {}", dir.join("logs").display());
            Err(e)
        }
    }
}

async fn install_crds(bed: &TestBed) -> Result<kube::Client> {
    kubectl_ok(
        &bed.kubeconfig,
        &[
            "apply",
            "--server-side",
            "-f",
            &paths::repo_root()
                .join("crds/nestor.dev_crds.yaml")
                .display()
                .to_string(),
        ],
        None,
    )?;
    kubectl_ok(
        &bed.kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd/virtualclusters.nestor.dev",
            "crd/nodepools.nestor.dev",
        ],
        None,
    )?;
    bed.client().await
}
