//! Konnectivity (upstream `apiserver-network-proxy`): how the nested API
//! server reaches its cluster's network.
//!
//! The API server runs in a host pod, outside the nested pod and Service
//! networks. Every connection it opens into the cluster (admission and
//! conversion webhooks, aggregated APIs, `pods/proxy` and `services/proxy`,
//! and the kubelets for `logs`, `exec`, `attach` and `port-forward`) goes
//! through the `cluster` egress selector to a `proxy-server` container in
//! its own pod, over a Unix socket. Each node pod runs a `proxy-agent`
//! that dials out to the servers and opens the connections from inside the
//! node, where the cluster's pod and Service addresses route.
//!
//! - **Authenticated both ways.** Agents present their node's kubelet client
//!   certificate, which the server checks against this cluster's CA; the
//!   server presents the API server's serving certificate, which agents
//!   check against the same CA. An agent of another cluster holds neither.
//! - **Several replicas.** Each API server replica has its own server;
//!   `--server-count` tells agents how many distinct servers to hold a
//!   connection to, and they keep dialling the host Service until they do.
//! - **Node restarts.** Connections to a kubelet go to the agent that
//!   announced the kubelet's address (`destHost`); others to any agent.
//!   Keepalives drop a vanished node's agent within a minute.

use crate::build::podspec::{
    field_env, hardened_container_security_context, read_only_mount, resources_or,
};
use crate::model::inputs::ClusterInputs;
use crate::model::names::ClusterNames;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, Volume, VolumeMount,
};

/// The directory of the socket the API server and the proxy server share.
pub const SOCKET_DIR: &str = "/run/konnectivity";
/// The proxy server's socket, the API server's egress for `cluster`.
pub const SOCKET: &str = "/run/konnectivity/konnectivity-server.socket";
/// The port agents dial, in the pod and on the API server's Service.
pub const AGENT_PORT: i32 = 8132;
/// The proxy server's health port (`/healthz`), probed by the host kubelet.
pub const HEALTH_PORT: i32 = 8134;
/// The proxy server's admin port, on loopback only.
pub const ADMIN_PORT: i32 = 8133;
/// How often each side checks that the other is still there: a node pod
/// that vanished without closing its connections is dropped after missing
/// a keepalive.
pub const KEEPALIVE: &str = "30s";

/// The name of the volume holding the socket.
pub const SOCKET_VOLUME: &str = "konnectivity";

/// The API server's `EgressSelectorConfiguration`: traffic to the cluster
/// (nodes, pods, Services) through the proxy server; etcd and the control
/// plane directly.
pub fn egress_selector() -> String {
    format!(
        "apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: GRPC
    transport:
      uds:
        udsName: {SOCKET}
"
    )
}

/// Where node pods' agents dial the proxy servers: the API server's host
/// Service, whose name the servers' certificate covers.
pub fn agent_endpoint(names: &ClusterNames) -> String {
    format!("{}:{AGENT_PORT}", names.apiserver_host())
}

/// The volume the API server and the proxy server share the socket on.
pub fn socket_volume() -> Volume {
    Volume {
        name: SOCKET_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: None,
        }),
        ..Volume::default()
    }
}

/// The socket volume's mount, in both containers.
pub fn socket_mount() -> VolumeMount {
    VolumeMount {
        name: SOCKET_VOLUME.into(),
        mount_path: SOCKET_DIR.into(),
        ..VolumeMount::default()
    }
}

/// The proxy server's flags. `pki_dir` is where the API server's
/// certificates are mounted (the same volume, read-only).
fn args(inputs: &ClusterInputs, pki_dir: &str) -> Vec<String> {
    let pki = |f: &str| format!("{pki_dir}/{f}");
    vec![
        "--mode=grpc".into(),
        format!("--uds-name={SOCKET}"),
        "--delete-existing-uds-file=true".into(),
        // The API server's side is the socket only.
        "--server-port=0".into(),
        format!("--agent-port={AGENT_PORT}"),
        format!("--cluster-cert={}", pki("apiserver.crt")),
        format!("--cluster-key={}", pki("apiserver.key")),
        format!("--cluster-ca-cert={}", pki("ca.crt")),
        format!("--server-count={}", inputs.vc.spec.api_server.replicas),
        "--server-id=$(POD_NAME)".into(),
        "--proxy-strategies=destHost,default".into(),
        format!("--keepalive-time={KEEPALIVE}"),
        format!("--health-port={HEALTH_PORT}"),
        format!("--admin-port={ADMIN_PORT}"),
        "--admin-bind-address=127.0.0.1".into(),
        "--enable-profiling=false".into(),
    ]
}

/// The proxy server container of an API server pod.
pub fn server_container(inputs: &ClusterInputs, pki_dir: &str, pki_volume: &str) -> Container {
    Container {
        name: "konnectivity-server".into(),
        image: Some(inputs.images.konnectivity_server.clone()),
        command: Some(vec!["/proxy-server".into()]),
        args: Some(args(inputs, pki_dir)),
        env: Some(vec![field_env("POD_NAME", "metadata.name")]),
        ports: Some(vec![ContainerPort {
            name: Some("konnectivity".into()),
            container_port: AGENT_PORT,
            ..Default::default()
        }]),
        volume_mounts: Some(vec![read_only_mount(pki_volume, pki_dir), socket_mount()]),
        // Liveness only: the server is not "ready" until an agent connects,
        // and the API server must serve before any node exists.
        liveness_probe: Some(crate::build::podspec::http_probe(
            "/healthz",
            HEALTH_PORT,
            false,
            10,
            6,
        )),
        resources: Some(resources_or(&None, "10m", "24Mi")),
        security_context: Some(hardened_container_security_context()),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    #[test]
    fn the_egress_selector_sends_cluster_traffic_to_the_socket() {
        let config: serde_yaml::Value = serde_yaml::from_str(&egress_selector()).unwrap();
        let selections = config["egressSelections"].as_sequence().unwrap();
        assert_eq!(
            selections.len(),
            1,
            "etcd and the control plane stay direct"
        );
        assert_eq!(selections[0]["name"], "cluster");
        assert_eq!(selections[0]["connection"]["proxyProtocol"], "GRPC");
        assert_eq!(
            selections[0]["connection"]["transport"]["uds"]["udsName"],
            SOCKET
        );
    }

    #[test]
    fn agents_are_checked_against_the_cluster_ca_and_counted_per_replica() {
        let vc = fixtures::vc(json!({"apiServer": {"replicas": 3}}));
        let inputs = fixtures::inputs(&vc);
        let c = server_container(&inputs, "/etc/kubernetes/pki", "pki");
        let args = c.args.unwrap();
        for flag in [
            "--cluster-ca-cert=/etc/kubernetes/pki/ca.crt",
            "--server-count=3",
            "--server-port=0",
            "--admin-bind-address=127.0.0.1",
            "--proxy-strategies=destHost,default",
        ] {
            assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
        }
        assert_eq!(
            c.image.as_deref(),
            Some("registry.k8s.io/kas-network-proxy/proxy-server:v0.34.0")
        );
        assert!(c.readiness_probe.is_none());
        assert_eq!(
            agent_endpoint(&inputs.names),
            "demo-apiserver.tenants.svc:8132"
        );
    }
}
