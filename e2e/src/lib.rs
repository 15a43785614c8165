//! Nestor's test bed: genuine upstream Kubernetes components (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler) started on
//! loopback with their own certificates, ports and data, and helpers that
//! run the real operator binary against them.
//!
//! Every process is tracked by PID and stopped by PID on drop; processes
//! started for tests also die with the test process (`PR_SET_PDEATHSIG`).
//!
//! [`harness`] holds what the test targets `integration` and `e2e` share:
//! each one's environment and the helpers more than one of its test files
//! uses.

pub mod harness;
pub mod kubeconfig;
pub mod node;
pub mod operator;
pub mod paths;
pub mod process;
pub mod provisioner;
pub mod s3;
pub mod suite;
pub mod support;
pub mod testbed;
pub mod tools;

pub use operator::Operator;
pub use testbed::TestBed;
