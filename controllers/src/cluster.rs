//! What the builders of a virtual cluster's children are given.

use crate::context::OperatorSettings;
use crate::images::{self, Images};
use crate::meta::ClusterNames;
use crate::validate::ValidCluster;
use nestor_crds::VirtualCluster;

/// Annotation on pod templates naming the cluster CA's fingerprint, so pods
/// restart when the roots of trust change.
pub const PKI_REVISION: &str = "nestor.dev/pki-revision";

/// A validated virtual cluster with everything its builders derive from.
#[derive(Clone, Debug)]
pub struct ClusterInputs<'a> {
    pub vc: &'a VirtualCluster,
    pub names: ClusterNames,
    pub valid: ValidCluster,
    pub images: Images,
    /// Fingerprint of the cluster CA certificate.
    pub pki_revision: String,
}

impl<'a> ClusterInputs<'a> {
    pub fn new(
        vc: &'a VirtualCluster,
        valid: ValidCluster,
        settings: &OperatorSettings,
        pki_revision: String,
    ) -> Self {
        let images = images::resolve(&vc.spec, settings, valid.version.minor);
        Self {
            names: ClusterNames::new(vc),
            vc,
            valid,
            images,
            pki_revision,
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::validate::validate_cluster;
    use nestor_crds::VirtualClusterSpec;

    /// A defaulted `VirtualCluster` named `demo` in namespace `tenants`, as
    /// the apiserver would store `spec: {}`.
    pub fn vc(spec: serde_json::Value) -> VirtualCluster {
        let spec: VirtualClusterSpec = serde_json::from_value(spec).unwrap();
        let mut vc = VirtualCluster::new("demo", spec);
        vc.metadata.namespace = Some("tenants".into());
        vc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
        vc.metadata.generation = Some(1);
        vc
    }

    pub fn inputs(vc: &VirtualCluster) -> ClusterInputs<'_> {
        let valid = validate_cluster("demo", &vc.spec).unwrap();
        ClusterInputs::new(vc, valid, &OperatorSettings::default(), "ca-fp".into())
    }
}
