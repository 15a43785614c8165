//! What a `NodePool` owns: a StatefulSet of node pods (kubelet, containerd,
//! kube-proxy, CNI plugins) that join a virtual cluster the way kubeadm
//! nodes do, their configuration, and their bootstrap token.
//!
//! Node credentials come from TLS bootstrapping: each pool has a bootstrap
//! token that may only create node client certificate requests, which the
//! nested controller-manager approves and signs with the cluster CA. Each
//! node ends with its own certificate; no key is shared by all nodes.
//!
//! Node pods are the one privileged part of Nestor: containerd and the
//! kubelet must create containers, mounts and network namespaces. They run
//! without host networking, host PID or host paths, on volumes of their own.

pub mod bootstrap;
pub mod config;
pub mod owner;
pub mod statefulset;
