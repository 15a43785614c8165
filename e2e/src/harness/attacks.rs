//! The attack suite's tally and what its attacks share: every attempt is
//! recorded, and the run ends with `N attacks tried, M succeeded`.

use crate::tools::Run;
use anyhow::{Result, bail, ensure};
use std::sync::atomic::{AtomicUsize, Ordering};

static TRIED: AtomicUsize = AtomicUsize::new(0);
static SUCCEEDED: AtomicUsize = AtomicUsize::new(0);

/// `N attacks tried, M succeeded`, once any attack ran.
pub fn summary() -> Option<String> {
    let tried = TRIED.load(Ordering::SeqCst);
    (tried > 0).then(|| {
        format!(
            "{tried} attacks tried, {} succeeded",
            SUCCEEDED.load(Ordering::SeqCst)
        )
    })
}

/// Counts one attempt whose outcome its test checks itself; see
/// [`count_success`].
pub fn count_attempt() {
    TRIED.fetch_add(1, Ordering::SeqCst);
}

/// Counts an attempt counted by [`count_attempt`] as one that got through.
pub fn count_success() {
    SUCCEEDED.fetch_add(1, Ordering::SeqCst);
}

/// Records one attempt that has no error text to check (a connection, a
/// lookup): `succeeded` says whether it got through.
pub fn record(what: &str, succeeded: bool) -> Result<()> {
    TRIED.fetch_add(1, Ordering::SeqCst);
    if succeeded {
        SUCCEEDED.fetch_add(1, Ordering::SeqCst);
        bail!("ATTACK SUCCEEDED: {what}");
    }
    Ok(())
}

/// Records one attempt: it must have failed, with `reason` in its error.
pub fn refused(what: &str, run: Run, reason: &str) -> Result<()> {
    TRIED.fetch_add(1, Ordering::SeqCst);
    if run.ok {
        SUCCEEDED.fetch_add(1, Ordering::SeqCst);
        bail!("ATTACK SUCCEEDED: {what}: {}", run.stdout.trim());
    }
    ensure!(
        run.stderr.contains(reason),
        "{what} was refused, but not because of {reason:?}: {}",
        run.stderr.trim()
    );
    Ok(())
}

/// A pod in A's `default` namespace with extra pod and container fields.
pub fn pod(name: &str, pod_fields: &str, container_fields: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
{pod_fields}
  containers:
  - name: main
    image: images.nestor.test/busybox:1.35
    command: [sleep, '3600']
{container_fields}"
    )
}

/// Who refuses a Pod Security label that lowers a namespace's level.
pub const LABELS: &str = "ValidatingAdmissionPolicy 'nestor-pod-security-labels'";
