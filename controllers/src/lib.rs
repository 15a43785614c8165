//! Nestor's reconcilers, in layers that import in one direction only:
//!
//! - [`model`]: names, labels, inputs, validation and status computation.
//!   Pure; imports nothing else of this crate.
//! - [`build`]: the pure `desired_*` builders, one file per component, and
//!   the PKI. Imports `model` only: a builder cannot reach the client.
//! - [`client`]: the client side: the apply engine, Secret I/O, cache views
//!   and slimming, nested clients, errors and metrics. Imports `model` and
//!   `build`.
//! - [`reconcile`]: the two thin drivers and the policy they share.
//! - [`runtime`]: wiring only: watches, caches, controllers.

pub mod build;
pub mod client;
pub mod model;
pub mod reconcile;
pub mod runtime;

pub use client::context::Context;
pub use client::error::{Error, Result};
pub use model::settings::OperatorSettings;
