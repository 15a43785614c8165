//! Image references of a virtual cluster's components.

use crate::model::image_ref::{node_image_is_of, repository};
use crate::model::settings::OperatorSettings;
use nestor_crds::VirtualClusterSpec;

/// Tag of the etcd image for a Kubernetes minor version (the version kubeadm
/// pairs with it).
pub fn etcd_tag(minor: u64) -> &'static str {
    if minor >= 34 { "3.6.5-0" } else { "3.5.21-0" }
}

/// Tag of the sandbox (pause) image node pods' containerd uses.
pub const PAUSE_TAG: &str = "3.10";

/// The sandbox image of a cluster's nodes, from its registry.
pub fn pause_image(settings: &OperatorSettings, registry: Option<&str>) -> String {
    let registry = registry.unwrap_or(&settings.default_registry);
    format!("{}/pause:{PAUSE_TAG}", registry.trim_end_matches('/'))
}

/// Tag of the CoreDNS image.
pub const COREDNS_TAG: &str = "v1.12.1";

/// Tag of Konnectivity's proxy-server image (apiserver-network-proxy); the
/// node image carries the proxy-agent of the same version.
pub const KONNECTIVITY_TAG: &str = "v0.34.0";

/// Every image a virtual cluster runs, resolved from the spec's overrides,
/// its registry and the operator's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub etcd: String,
    pub apiserver: String,
    pub controller_manager: String,
    pub scheduler: String,
    pub coredns: String,
    pub konnectivity_server: String,
    pub node: String,
}

/// Resolves image references. `minor` is the version's minor number.
pub fn resolve(spec: &VirtualClusterSpec, settings: &OperatorSettings, minor: u64) -> Images {
    let registry = spec
        .images
        .registry
        .as_deref()
        .unwrap_or(&settings.default_registry)
        .trim_end_matches('/');
    let version = &spec.version;
    let pick = |given: &Option<String>, default: String| given.clone().unwrap_or(default);
    Images {
        etcd: pick(
            &spec.images.etcd,
            format!("{registry}/etcd:{}", etcd_tag(minor)),
        ),
        apiserver: pick(
            &spec.images.api_server,
            format!("{registry}/kube-apiserver:v{version}"),
        ),
        controller_manager: pick(
            &spec.images.controller_manager,
            format!("{registry}/kube-controller-manager:v{version}"),
        ),
        scheduler: pick(
            &spec.images.scheduler,
            format!("{registry}/kube-scheduler:v{version}"),
        ),
        coredns: pick(
            &spec.images.core_dns,
            format!("{registry}/coredns/coredns:{COREDNS_TAG}"),
        ),
        konnectivity_server: pick(
            &spec.images.konnectivity_server,
            format!("{registry}/kas-network-proxy/proxy-server:{KONNECTIVITY_TAG}"),
        ),
        node: pick(
            &spec.images.node,
            node_image(settings, spec.images.registry.as_deref(), version),
        ),
    }
}

/// A pool's node image for kubelet `version`: from the cluster's explicit
/// node image's repository (as it is, digest included, for the version it
/// is tagged with), or from the images' registry. The tag is always the
/// kubelet version, so no spec runs a kubelet other than its version.
pub fn pool_node_image(
    settings: &OperatorSettings,
    images: &nestor_crds::ImagesSpec,
    version: &str,
) -> String {
    match &images.node {
        Some(node) if node_image_is_of(node, version) => node.clone(),
        Some(node) => format!("{}:v{version}", repository(node)),
        None => node_image(settings, images.registry.as_deref(), version),
    }
}

/// The node image for a kubelet version: the operator's node repository, or
/// the spec's registry when one is set (mirrors carry every image).
pub fn node_image(settings: &OperatorSettings, registry: Option<&str>, version: &str) -> String {
    match registry {
        Some(registry) => format!("{}/nestor-node:v{version}", registry.trim_end_matches('/')),
        None => format!("{}:v{version}", settings.node_image_repository),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_image_is_tied_to_its_kubelet_version() {
        assert!(node_image_is_of("r.example/nestor-node:v1.35.4", "1.35.4"));
        assert!(node_image_is_of(
            "r.example:5000/n/nestor-node:v1.35.4@sha256:0123",
            "1.35.4"
        ));
        for other in [
            "r.example/nestor-node:latest",
            "r.example/nestor-node:v1.34.5",
            "r.example/nestor-node",
            "r.example:5000/nestor-node",
            "r.example/nestor-node@sha256:0123",
        ] {
            assert!(!node_image_is_of(other, "1.35.4"), "{other}");
        }
        let images = |node: &str| nestor_crds::ImagesSpec {
            node: Some(node.into()),
            ..Default::default()
        };
        let settings = OperatorSettings::default();
        let pinned = "r.example:5000/n/nestor-node:v1.35.4@sha256:0123";
        assert_eq!(
            pool_node_image(&settings, &images(pinned), "1.35.4"),
            pinned
        );
        // A pool of another version takes the same repository at its own tag.
        assert_eq!(
            pool_node_image(&settings, &images(pinned), "1.34.5"),
            "r.example:5000/n/nestor-node:v1.34.5"
        );
    }
}
