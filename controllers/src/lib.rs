//! Nestor's reconcilers.
//!
//! The modules split by concern. Each component module holds pure
//! `desired_*` builders that turn a validated spec into complete k8s-openapi
//! objects; the two reconcilers ([`virtualcluster`], [`nodepool`]) are thin
//! drivers: fetch, validate, build, apply with server-side apply, compute
//! status, patch status.

pub mod addons;
pub mod apiserver;
pub mod apply;
pub mod cached;
pub mod cluster;
pub mod context;
pub mod controller_manager;
pub mod desired;
pub mod error;
pub mod etcd;
pub mod images;
pub mod kubeconfig;
pub mod meta;
pub mod metrics;
pub mod nested;
pub mod nested_nodes;
pub mod nodepool;
pub mod pki;
pub mod podspec;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod status;
pub mod validate;
pub mod virtualcluster;

pub use context::{Context, OperatorSettings};
pub use error::{Error, Result};
