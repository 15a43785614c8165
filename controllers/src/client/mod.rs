//! The client side: the apply engine that writes owned children, Secret
//! I/O, what the caches keep and how it is slimmed, clients for nested
//! clusters, errors and metrics.

pub mod apply;
pub mod context;
pub mod error;
pub mod kept;
pub mod metrics;
#[cfg(test)]
pub(crate) mod mock;
pub mod nested;
pub mod nested_nodes;
pub mod secrets;
pub mod slim;
