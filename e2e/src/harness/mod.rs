//! The harness of the test targets `integration` and `e2e`: the shared
//! environment each sets up once ([`integration::Env`], [`e2e::Env`]) and
//! the helpers more than one of their test modules uses. The test targets
//! hold the tests and the list the runner ([`crate::suite`]) runs.

pub mod attacks;
pub mod data;
pub mod e2e;
pub mod host;
pub mod integration;
pub mod nested;
