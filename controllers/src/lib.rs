//! Nestor's reconcilers, in layers that import in one direction only:
//!
//! - [`model`] and [`build`]: the crate `nestor-model` (names, inputs,
//!   validation, status, the `desired_*` builders and the PKI), which has
//!   no client: a builder cannot reach the API server.
//! - [`client`]: the client side: the apply engine, Secret I/O, cache views
//!   and slimming, nested clients, errors and metrics. Imports `model` and
//!   `build`.
//! - [`reconcile`]: the two thin drivers and the policy they share.
//! - [`runtime`]: wiring only: watches, caches, controllers.

pub mod client;
pub mod reconcile;
pub mod runtime;

pub use client::context::Context;
pub use client::error::{Error, Result};
pub use nestor_model::OperatorSettings;
pub use nestor_model::{build, model};
