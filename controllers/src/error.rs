//! Errors of the reconcilers. Each variant names the action that failed;
//! none carries secret material (Secret writes keep only the status code).

use crate::pki::PkiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {kind} {namespace}/{name}: {source}")]
    ApplyChild {
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
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        _ => (0, "connection".into()),
    }
}

/// True for a 404 from the API server.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
