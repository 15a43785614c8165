//! A pool's node configuration: the kubelet's and containerd's, in one
//! ConfigMap that node pods mount.

use crate::model::hash::inputs_hash;
use crate::model::names::{PoolNames, pool_child_meta};
use k8s_openapi::api::core::v1::ConfigMap;
use nestor_crds::node_contract as contract;
use nestor_crds::{NodePool, VirtualCluster};
use std::collections::BTreeMap;

/// The kubelet's configuration for the pool's nodes. Nested pods get the
/// nested cluster's DNS only (`resolvConf: ""`): the node pod's own
/// resolver is the host cluster's, which tenants must not see. The kubelet
/// asks the nested cluster for its serving certificate
/// (`serverTLSBootstrap`), which Nestor approves after checking it names
/// the node pod and nothing else, so the nested API server can verify the
/// kubelets it calls.
///
/// A node pod's filesystem is the host's disk, shared with everything else
/// on the host, so its fill level says nothing about this node: with the
/// kubelet's default thresholds (`imagefs.available<15%`) a host disk that
/// is 86 % full makes every nested node evict every pod and garbage-collect
/// the sandbox image. Disk pressure is the host kubelet's to handle (it
/// evicts the node pod itself), so nested kubelets evict on memory only and
/// never collect images for space, as kind does for its nodes.
pub fn kubelet_config(pool: &NodePool, vc: &VirtualCluster) -> String {
    let config = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": contract::mounted(contract::BOOTSTRAP_DIR, contract::CA_CERT)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": false,
        "failSwapOn": false,
        "protectKernelDefaults": true,
        // Nested containers get the runtime's default seccomp profile
        // unless their pod asks for another (Pod Security baseline refuses
        // `Unconfined`).
        "seccompDefault": true,
        "clusterDNS": [vc.spec.networking.dns_service_ip],
        "clusterDomain": vc.spec.networking.cluster_domain,
        "containerRuntimeEndpoint": format!("unix://{}", contract::CONTAINERD_SOCKET),
        "rotateCertificates": true,
        "serverTLSBootstrap": true,
        "healthzBindAddress": "0.0.0.0",
        "healthzPort": contract::KUBELET_HEALTHZ_PORT,
        "resolvConf": "",
        "registerWithTaints": pool.spec.taints,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
            "imagefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
    });
    // JSON is YAML; the kubelet reads either.
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// containerd's configuration in a node pod: the CRI plugin with the
/// cluster's sandbox image, the CNI plugins of the node image, and the
/// operator's registry mirrors (how node pods reach images when the
/// upstream registries are out of reach).
pub fn containerd_config(sandbox_image: &str, mirrors: &BTreeMap<String, Vec<String>>) -> String {
    // TOML basic strings take JSON's escapes.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let mut out = format!(
        "version = 2\nroot = \"/var/lib/containerd\"\nstate = \"/run/containerd\"\n\n[grpc]\n  address = {}\n\n[{cri}]\n  sandbox_image = {}\n  restrict_oom_score_adj = true\n\n[{cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\n[{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[{cri}.cni]\n  bin_dir = \"/opt/cni/bin\"\n  conf_dir = \"/etc/cni/net.d\"\n",
        quote(contract::CONTAINERD_SOCKET),
        quote(sandbox_image)
    );
    for (host, endpoints) in mirrors {
        let list = endpoints
            .iter()
            .map(|e| quote(e))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "\n[{cri}.registry.mirrors.{}]\n  endpoint = [{list}]\n",
            quote(host)
        ));
    }
    out
}

/// The ConfigMap holding the kubelet's and containerd's configuration.
pub fn desired_node_config_map(
    pool: &NodePool,
    vc: &VirtualCluster,
    sandbox_image: &str,
    mirrors: &BTreeMap<String, Vec<String>>,
) -> ConfigMap {
    ConfigMap {
        metadata: pool_child_meta(pool, PoolNames::new(pool).config_map()),
        data: Some(BTreeMap::from([
            (contract::KUBELET_CONFIG.into(), kubelet_config(pool, vc)),
            (
                contract::CONTAINERD_CONFIG.into(),
                containerd_config(sandbox_image, mirrors),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// A hash of a node ConfigMap's content: on the pod template, so that node
/// pods restart (one at a time) when their configuration changes.
pub fn node_config_hash(config: &ConfigMap) -> String {
    inputs_hash(
        config
            .data
            .iter()
            .flatten()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
    )
}

/// The annotation that carries [`node_config_hash`].
pub const CONFIG_HASH: &str = "nestor.dev/config-hash";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures::{self, pool};
    use serde_json::json;

    #[test]
    fn containerd_uses_the_sandbox_image_and_the_mirrors() {
        let mirrors = BTreeMap::from([(
            "registry.k8s.io".to_string(),
            vec![
                "http://10.0.0.1:5000".to_string(),
                "https://m.example".to_string(),
            ],
        )]);
        let toml = containerd_config("mirror.example/pause:3.10", &mirrors);
        assert!(toml.contains("sandbox_image = \"mirror.example/pause:3.10\""));
        assert!(toml.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"registry.k8s.io\"]\n  endpoint = [\"http://10.0.0.1:5000\", \"https://m.example\"]"
        ));
        assert!(toml.contains("bin_dir = \"/opt/cni/bin\""));
        assert!(!containerd_config("p", &BTreeMap::new()).contains("mirrors"));
        let kubelet: serde_json::Value =
            serde_yaml::from_str(&kubelet_config(&pool(), &fixtures::vc(json!({})))).unwrap();
        assert_eq!(kubelet["serverTLSBootstrap"], true);
        assert_eq!(kubelet["resolvConf"], "");
    }

    #[test]
    fn kubelet_config_carries_dns_and_taints() {
        let vc = fixtures::vc(json!({}));
        let text = kubelet_config(&pool(), &vc);
        let config: serde_json::Value =
            serde_yaml::from_str(&text).expect("kubelet config is YAML");
        assert_eq!(config["kind"], "KubeletConfiguration");
        assert_eq!(config["clusterDNS"], json!(["10.96.0.10"]));
        assert_eq!(config["clusterDomain"], "cluster.local");
        assert_eq!(config["failCgroupV1"], false);
        assert_eq!(config["seccompDefault"], true);
        assert_eq!(config["cgroupDriver"], "cgroupfs");
        assert_eq!(config["registerWithTaints"][0]["key"], "dedicated");
        assert_eq!(config["registerWithTaints"][0]["effect"], "NoSchedule");
    }

    #[test]
    fn kubelets_leave_the_shared_host_disk_to_the_host() {
        let text = kubelet_config(&pool(), &fixtures::vc(json!({})));
        let config: serde_json::Value =
            serde_yaml::from_str(&text).expect("kubelet config is YAML");
        let eviction = &config["evictionHard"];
        for signal in [
            "nodefs.available",
            "nodefs.inodesFree",
            "imagefs.available",
            "imagefs.inodesFree",
        ] {
            assert_eq!(eviction[signal], "0%", "{signal}");
        }
        assert_eq!(eviction["memory.available"], "100Mi");
        assert_eq!(config["imageGCHighThresholdPercent"], 100);
    }
}
