//! What Nestor computes without a client, in two layers that import in
//! one direction:
//!
//! - [`model`]: names, labels, inputs, validation, status computation and
//!   the steps of a change of version. Imports nothing else of this crate.
//! - [`build`]: the `desired_*` builders, one file per component, and the
//!   PKI. Imports `model` only.
//!
//! The crate depends on no Kubernetes client and no async runtime, so
//! nothing here can reach an API server: the compiler holds that line.

pub mod build;
pub mod model;

pub use model::settings::OperatorSettings;
