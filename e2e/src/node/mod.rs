//! A real node for the test bed: containerd, runc, the CNI bridge plugin,
//! the kubelet and kube-proxy (iptables mode) on this machine, in a network
//! namespace of their own linked to the machine's (where the control plane
//! runs), plus what a real cluster has beside: CoreDNS, a NetworkPolicy
//! enforcer (kube-router in firewall-only mode, iptables and ipset on the
//! node's paths) and a default StorageClass with a host-path provisioner. Every image comes from
//! `e2e/testbed/build-images.sh`; nothing is pulled.
//!
//! The node changes the machine (network namespaces, links, iptables rules,
//! sysctls, mounts); `e2e/testbed/node-network.sh down` undoes all of it and
//! runs when the test bed stops.
//!
//! `settings` reads `node.env`, `netns` runs programs in the node's network
//! namespaces, `network` holds the machine-wide lock and the links,
//! `config` writes the components' configuration, `registry` and
//! `metadata` start the stand-ins beside the node, `addons` is the host
//! cluster's add-ons, and `start` starts it all in order.

mod addons;
mod config;
mod metadata;
mod netns;
mod network;
mod registry;
mod settings;
mod start;

pub use addons::addons_yaml;
pub use netns::node_command;
pub use network::{lock, network, unlock, wait_for_policy_enforcement};
pub use registry::{TOOLS_IMAGE, platform_helm_args, registry};
pub use settings::{host_ip, node_ip, setting};
pub use start::start;
