//! kube-proxy runs in every node pod, next to the kubelet, with the node's
//! own credentials; its configuration is a ConfigMap of the cluster.

use crate::model::inputs::ClusterInputs;
use crate::model::names::{Component, cluster_child_meta};
use k8s_openapi::api::core::v1::ConfigMap;
use nestor_crds::KubeProxyMode;
use nestor_crds::node_contract as contract;
use std::collections::BTreeMap;

/// kube-proxy's configuration, mounted by every node pod. Conntrack limits
/// are left to the host: a node pod cannot set those sysctls.
pub fn kube_proxy_config(inputs: &ClusterInputs) -> String {
    let mode = match inputs.vc.spec.addons.kube_proxy.mode {
        KubeProxyMode::Iptables => "iptables",
        KubeProxyMode::Nftables => "nftables",
    };
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: {mode}\nclusterCIDR: {}\nclientConnection:\n  kubeconfig: {}\nconntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\nmetricsBindAddress: 127.0.0.1:10249\nhealthzBindAddress: 0.0.0.0:10256\n",
        inputs.valid.pod_cidr,
        contract::KUBE_PROXY_KUBECONFIG,
    )
}

/// The ConfigMap holding kube-proxy's configuration.
pub fn desired_kube_proxy_config_map(inputs: &ClusterInputs) -> ConfigMap {
    ConfigMap {
        metadata: cluster_child_meta(
            inputs.vc,
            inputs.names.kube_proxy_config(),
            Component::KubeProxy,
        ),
        data: Some(BTreeMap::from([(
            contract::KUBE_PROXY_CONFIG.into(),
            kube_proxy_config(inputs),
        )])),
        ..ConfigMap::default()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    #[test]
    fn kube_proxy_mode_follows_spec() {
        let vc = fixtures::vc(json!({"addons": {"kubeProxy": {"mode": "nftables"}}}));
        let cm = desired_kube_proxy_config_map(&fixtures::inputs(&vc));
        let text = &cm.data.unwrap()["config.conf"];
        assert!(text.contains("mode: nftables") && text.contains("clusterCIDR: 10.244.0.0/16"));
    }
}
