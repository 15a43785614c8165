//! The contract between the operator and the node agent (`nestor-node`):
//! where a node pod finds what the operator mounts into it, under which
//! keys the operator writes it, and the ports and variables they share.
//!
//! The operator's builders write these keys and mount these directories;
//! the node agent reads these paths. Both import them from here, so that
//! neither side can change one without the other.

/// Where a node pod's configuration is mounted (the node agent's
/// `--config-dir`).
pub const CONFIG_DIR: &str = "/etc/nestor";

/// The bootstrap Secret (`<pool>-bootstrap`), mounted at
/// `CONFIG_DIR/BOOTSTRAP_DIR`.
pub const BOOTSTRAP_DIR: &str = "bootstrap";
/// Key of the kubeconfig that authenticates with the bootstrap token.
pub const BOOTSTRAP_KUBECONFIG: &str = "bootstrap-kubeconfig";
/// Key of the nested cluster's CA certificate (the kubelet's client CA).
pub const CA_CERT: &str = "ca.crt";
/// Key of the bootstrap token's id.
pub const TOKEN_ID: &str = "token-id";
/// Key of the bootstrap token's secret.
pub const TOKEN_SECRET: &str = "token-secret";

/// The node ConfigMap (`<pool>-node-config`), mounted at
/// `CONFIG_DIR/NODE_CONFIG_DIR`.
pub const NODE_CONFIG_DIR: &str = "node";
/// Key of the kubelet's configuration.
pub const KUBELET_CONFIG: &str = "kubelet-config.yaml";
/// Key of containerd's configuration.
pub const CONTAINERD_CONFIG: &str = "containerd.toml";

/// The cluster's kube-proxy ConfigMap (`<vc>-kube-proxy`), mounted at
/// `CONFIG_DIR/KUBE_PROXY_DIR`.
pub const KUBE_PROXY_DIR: &str = "kube-proxy";
/// Key of kube-proxy's configuration.
pub const KUBE_PROXY_CONFIG: &str = "config.conf";

/// Where the node agent writes kube-proxy's kubeconfig (the node's own
/// credentials), which kube-proxy's configuration names.
pub const KUBE_PROXY_KUBECONFIG: &str = "/var/lib/kube-proxy/kubeconfig";

/// containerd's socket, where the kubelet finds it.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// The kubelet's API port.
pub const KUBELET_PORT: i32 = 10250;
/// The kubelet's health port, probed by the host kubelet.
pub const KUBELET_HEALTHZ_PORT: i32 = 10248;

/// The environment variable holding the node's name (the pod's name).
pub const NODE_NAME_ENV: &str = "NODE_NAME";
/// The environment variable holding the pod's IP on the host network.
pub const POD_IP_ENV: &str = "POD_IP";

/// The path of `key` in the mounted directory `dir`.
pub fn mounted(dir: &str, key: &str) -> String {
    format!("{CONFIG_DIR}/{dir}/{key}")
}
