//! The two reconcilers, thin drivers over the layers below: validate
//! (pure), build (pure), apply, compute status (pure), patch status. What
//! both share (the error policy, the written-status guard, the invalid-spec
//! path) is in [`policy`].

pub mod nodepool;
pub mod policy;
pub mod virtualcluster;
