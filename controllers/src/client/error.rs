//! Errors of the reconcilers. Each variant names the action that failed;
//! none carries secret material (Secret writes keep only the status code).

use crate::build::pki::PkiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{verb} {kind} {namespace}/{name}: {source}")]
    ApplyChild {
        /// What was being done: applying, creating, reading or adopting.
        verb: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("writing Secret {namespace}/{name} failed with HTTP {code} ({reason})")]
    WriteSecret {
        namespace: String,
        name: String,
        code: u16,
        reason: String,
    },

    #[error("reading Secret {namespace}/{name} failed with HTTP {code} ({reason})")]
    ReadSecret {
        namespace: String,
        name: String,
        code: u16,
        reason: String,
    },

    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error(
        "the CA Secret {namespace}/{name} exists but does not hold a complete CA bundle; restore it from a backup or delete the VirtualCluster (Nestor never replaces a cluster's roots of trust on its own)"
    )]
    DamagedCa { namespace: String, name: String },

    #[error(
        "the CA Secret of {namespace}/{name} was created or deleted by another writer meanwhile; retrying"
    )]
    PkiRace { namespace: String, name: String },

    #[error("issuing certificates for {namespace}/{name}: {source}")]
    Pki {
        namespace: String,
        name: String,
        #[source]
        source: PkiError,
    },

    #[error("patching the status of {kind} {namespace}/{name}: {source}")]
    PatchStatus {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("{what} of {kind} {namespace}/{name}: {source}")]
    PatchMetadata {
        /// What the patch was for: the owner reference, the finalizer.
        what: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("cleaning up {what}: {source}")]
    Cleanup {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error("talking to the nested API server of {namespace}/{name}: {message}")]
    Nested {
        namespace: String,
        name: String,
        message: String,
    },

    #[error("{kind} has no {field}")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },

    /// A cleanup that is under way and must be looked at again (the
    /// finalizer stays until it is done).
    #[error("still cleaning up: {0}")]
    CleanupPending(String),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable label per variant, for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ApplyChild { .. } => "apply_child",
            Error::WriteSecret { .. } => "write_secret",
            Error::ReadSecret { .. } => "read_secret",
            Error::Read { .. } => "read",
            Error::DamagedCa { .. } => "damaged_ca",
            Error::Pki { .. } => "pki",
            Error::PkiRace { .. } => "pki_race",
            Error::PatchStatus { .. } => "patch_status",
            Error::PatchMetadata { .. } => "patch_metadata",
            Error::Cleanup { .. } => "cleanup",
            Error::Nested { .. } => "nested",
            Error::MissingField { .. } => "missing_field",
            Error::CleanupPending(_) => "cleanup_pending",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }

    /// A cleanup still under way: not a failure.
    pub fn is_pending(&self) -> bool {
        matches!(self.innermost(), Error::CleanupPending(_))
    }

    /// A write refused because the namespace is being deleted: the cluster
    /// goes with it, so this is not a failure to report, and the reconcile
    /// waits for the deletion instead of retrying every few seconds.
    pub fn namespace_terminating(&self) -> bool {
        match self.innermost() {
            Error::ApplyChild { source, .. }
            | Error::PatchStatus { source, .. }
            | Error::PatchMetadata { source, .. }
            | Error::Cleanup { source, .. } => is_namespace_terminating(source),
            Error::WriteSecret { reason, .. } => reason == NAMESPACE_TERMINATING,
            _ => false,
        }
    }

    /// Errors a retry cannot fix without a human; they back off slowly.
    pub fn needs_human(&self) -> bool {
        matches!(self.innermost(), Error::DamagedCa { .. })
    }

    fn innermost(&self) -> &Error {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.innermost(),
                _ => self,
            },
            other => other,
        }
    }
}

/// The HTTP status code and reason of a kube error, without its message
/// (which, for a Secret, could echo content).
pub fn code_and_reason(err: &kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(_) if is_namespace_terminating(err) => (403, NAMESPACE_TERMINATING.into()),
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        _ => (0, "connection".into()),
    }
}

/// How long a reconcile refused by a namespace's deletion waits before it
/// looks again (the deletion itself triggers the cleanup at once).
pub const NAMESPACE_DELETION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The cause the API server gives for a write into a namespace that is
/// being deleted.
const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";

fn is_namespace_terminating(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .any(|c| c.reason == NAMESPACE_TERMINATING))
}

/// True for a 404 from the API server.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn forbidden(cause: Option<&str>) -> kube::Error {
        let mut status = serde_json::json!({"code": 403, "reason": "Forbidden"});
        if let Some(cause) = cause {
            status["details"] = serde_json::json!({"causes": [{"reason": cause}]});
        }
        kube::Error::Api(Box::new(serde_json::from_value::<Status>(status).unwrap()))
    }

    #[test]
    fn a_namespace_being_deleted_is_told_apart_from_other_refusals() {
        let apply = |source| Error::ApplyChild {
            verb: "creating",
            kind: "Service",
            namespace: "ns".into(),
            name: "vc-apiserver".into(),
            source,
        };
        assert!(apply(forbidden(Some(NAMESPACE_TERMINATING))).namespace_terminating());
        assert!(!apply(forbidden(None)).namespace_terminating(), "RBAC");
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
            apply(forbidden(Some(NAMESPACE_TERMINATING))),
        )));
        assert!(wrapped.namespace_terminating());
        // A Secret write keeps the cause, never the message.
        let (code, reason) = code_and_reason(&forbidden(Some(NAMESPACE_TERMINATING)));
        let secret = Error::WriteSecret {
            namespace: "ns".into(),
            name: "vc-ca".into(),
            code,
            reason,
        };
        assert!(secret.namespace_terminating());
        assert_eq!(code_and_reason(&forbidden(None)), (403, "Forbidden".into()));
    }
}
