//! What the builders of a virtual cluster's children are given.

use crate::model::images::{self, Images};
use crate::model::names::ClusterNames;
use crate::model::settings::OperatorSettings;
use crate::model::validate::ValidCluster;
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
    /// Whether the cluster's pods are confined to the Pod Security
    /// baseline (the default) or may be privileged (the platform admin's
    /// opt-in for the host namespace).
    pub workloads: WorkloadPolicy,
    /// The image of the authorization guard beside the API server.
    pub guard_image: String,
    /// The generations of the keys that encrypt Secrets at rest, hashed:
    /// the API server restarts when they change.
    pub encryption_revision: String,
    /// Where the control plane's pods run on the host.
    pub placement: nestor_crds::Placement,
    /// What node pods may reach on the host network.
    pub network: crate::model::network::HostNetwork,
}

/// What a nested cluster's pods may do on their node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum WorkloadPolicy {
    /// Pod Security `baseline`, enforced in every namespace and guarded
    /// against the tenant: no privileged pod, no host namespace, path or
    /// port, no added capability beyond the baseline set.
    Confined,
    /// Anything a node pod can do, on the host platform admin's opt-in.
    Privileged,
}

impl<'a> ClusterInputs<'a> {
    pub fn new(
        vc: &'a VirtualCluster,
        valid: ValidCluster,
        settings: &OperatorSettings,
        pki_revision: String,
    ) -> Self {
        let images = images::resolve(&vc.spec, settings, valid.version.minor);
        let names = ClusterNames::new(vc);
        let workloads = if settings.allows_privileged(&names.namespace) {
            WorkloadPolicy::Privileged
        } else {
            WorkloadPolicy::Confined
        };
        Self {
            names,
            vc,
            valid,
            images,
            pki_revision,
            workloads,
            guard_image: settings.guard_image.clone(),
            encryption_revision: String::new(),
            placement: crate::model::placement::control_plane(&vc.spec.placement, settings),
            network: settings.network.clone(),
        }
    }

    /// The same cluster at `at`'s version and images (the cluster as it
    /// runs while a change rolls out), with these revisions; `None` when
    /// `at`'s version does not parse.
    pub fn at<'b>(
        &self,
        at: &'b VirtualCluster,
        settings: &OperatorSettings,
    ) -> Option<ClusterInputs<'b>> {
        let version = crate::model::validate::parse_version(&at.spec.version)?;
        let valid = ValidCluster {
            version,
            ..self.valid.clone()
        };
        let mut inputs = ClusterInputs::new(at, valid, settings, self.pki_revision.clone());
        inputs.encryption_revision = self.encryption_revision.clone();
        Some(inputs)
    }
}

/// A VirtualCluster and its inputs for tests (this crate's, and with the
/// feature `fixtures`, other crates').
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use super::*;
    use crate::model::validate::validate_cluster;
    use nestor_crds::{
        ClusterReference, NodePool, NodePoolSpec, NodeTaint, TaintEffect, VirtualClusterSpec,
    };
    use std::collections::BTreeMap;

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
        let settings = OperatorSettings::default();
        let valid = validate_cluster("demo", &vc.spec, &settings.platform()).unwrap();
        ClusterInputs::new(vc, valid, &settings, "ca-fp".into())
    }

    /// A pool `workers` of two nodes joining `demo`, with a label and a
    /// taint.
    pub fn pool() -> NodePool {
        let mut p = NodePool::new(
            "workers",
            NodePoolSpec {
                cluster_ref: ClusterReference {
                    name: "demo".into(),
                },
                replicas: 2,
                labels: BTreeMap::from([("team".into(), "a".into())]),
                taints: vec![NodeTaint {
                    key: "dedicated".into(),
                    value: Some("a".into()),
                    effect: TaintEffect::NoSchedule,
                }],
                ..NodePoolSpec::default()
            },
        );
        p.metadata.namespace = Some("tenants".into());
        p.metadata.uid = Some("00000000-0000-0000-0000-000000000002".into());
        p.metadata.generation = Some(1);
        p
    }
}
