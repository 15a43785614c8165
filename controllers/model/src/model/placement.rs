//! Where Nestor's pods run on the host: a spec's placement over the
//! operator's defaults, field by field, and for node pods a preference for
//! host nodes that run no other cluster's control plane.

use crate::model::names::{CLUSTER_LABEL, COMPONENT_LABEL, Component, MANAGED_BY};
use crate::model::settings::OperatorSettings;
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, PodSpec, Toleration, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use nestor_crds::{Placement, TaintEffect, TolerationOperator};

/// The control-plane components whose host nodes other clusters' node
/// pods avoid.
const CONTROL_PLANE: [Component; 5] = [
    Component::Etcd,
    Component::ApiServer,
    Component::ControllerManager,
    Component::Scheduler,
    Component::CoreDns,
];

/// `spec` over `default`, field by field.
pub fn merged(spec: &Placement, default: &Placement) -> Placement {
    Placement {
        runtime_class_name: spec
            .runtime_class_name
            .clone()
            .or_else(|| default.runtime_class_name.clone()),
        node_selector: if spec.node_selector.is_empty() {
            default.node_selector.clone()
        } else {
            spec.node_selector.clone()
        },
        tolerations: if spec.tolerations.is_empty() {
            default.tolerations.clone()
        } else {
            spec.tolerations.clone()
        },
        affinity: spec.affinity.clone().or_else(|| default.affinity.clone()),
        priority_class_name: spec
            .priority_class_name
            .clone()
            .or_else(|| default.priority_class_name.clone()),
    }
}

/// The control plane's placement.
pub fn control_plane(spec: &Placement, settings: &OperatorSettings) -> Placement {
    merged(spec, &settings.control_plane_placement)
}

/// A node pool's placement: for cluster `cluster` in `namespace`, with
/// the preference for host nodes without other clusters' control planes
/// added to its pod anti-affinity (unless the operator is told not to).
pub fn node_pool(
    spec: &Placement,
    settings: &OperatorSettings,
    namespace: &str,
    cluster: &str,
) -> Placement {
    let mut placement = merged(spec, &settings.node_pool_placement);
    if settings.spread_from_other_control_planes {
        let affinity = placement.affinity.get_or_insert_with(Affinity::default);
        let anti = affinity
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default);
        anti.preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .extend(avoid_other_control_planes(namespace, cluster));
    }
    placement
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    }
}

/// Two preferences: no control-plane pod of a cluster in another
/// namespace, and none of another cluster in this one, on the same host
/// node.
pub fn avoid_other_control_planes(namespace: &str, cluster: &str) -> Vec<WeightedPodAffinityTerm> {
    let components: Vec<&str> = CONTROL_PLANE.iter().map(|c| c.as_str()).collect();
    let control_plane = vec![
        requirement(MANAGED_BY.0, "In", &[MANAGED_BY.1]),
        requirement(COMPONENT_LABEL, "In", &components),
    ];
    let term = |extra: Option<LabelSelectorRequirement>, namespaces: Option<LabelSelector>| {
        let mut expressions = control_plane.clone();
        expressions.extend(extra);
        WeightedPodAffinityTerm {
            weight: 100,
            pod_affinity_term: PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_expressions: Some(expressions),
                    ..LabelSelector::default()
                }),
                namespace_selector: namespaces,
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            },
        }
    };
    vec![
        term(
            None,
            Some(LabelSelector {
                match_expressions: Some(vec![requirement(
                    "kubernetes.io/metadata.name",
                    "NotIn",
                    &[namespace],
                )]),
                ..LabelSelector::default()
            }),
        ),
        term(Some(requirement(CLUSTER_LABEL, "NotIn", &[cluster])), None),
    ]
}

/// Sets a pod spec's placement fields.
pub fn apply(pod: &mut PodSpec, placement: &Placement) {
    pod.runtime_class_name = placement.runtime_class_name.clone();
    pod.priority_class_name = placement.priority_class_name.clone();
    pod.node_selector =
        (!placement.node_selector.is_empty()).then(|| placement.node_selector.clone());
    pod.affinity = placement.affinity.clone();
    pod.tolerations = (!placement.tolerations.is_empty()).then(|| {
        placement
            .tolerations
            .iter()
            .map(|t| Toleration {
                key: t.key.clone(),
                operator: t.operator.map(|o| match o {
                    TolerationOperator::Equal => "Equal".into(),
                    TolerationOperator::Exists => "Exists".into(),
                }),
                value: t.value.clone(),
                effect: t.effect.map(|e| match e {
                    TaintEffect::NoSchedule => "NoSchedule".into(),
                    TaintEffect::PreferNoSchedule => "PreferNoSchedule".into(),
                    TaintEffect::NoExecute => "NoExecute".into(),
                }),
                toleration_seconds: t.toleration_seconds,
            })
            .collect()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn placement(value: serde_json::Value) -> Placement {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_spec_field_wins_and_an_empty_one_takes_the_default() {
        let default = placement(json!({
            "runtimeClassName": "gvisor",
            "nodeSelector": {"pool": "tenants"},
            "priorityClassName": "tenants"
        }));
        let spec = placement(json!({"runtimeClassName": "kata"}));
        let merged = merged(&spec, &default);
        assert_eq!(merged.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(merged.node_selector["pool"], "tenants");
        assert_eq!(merged.priority_class_name.as_deref(), Some("tenants"));
    }

    #[test]
    fn node_pods_prefer_nodes_without_other_control_planes() {
        let settings = OperatorSettings::default();
        let p = node_pool(&Placement::default(), &settings, "team-a", "demo");
        let preferred = p
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(preferred.len(), 2);
        let other_namespaces = &preferred[0].pod_affinity_term;
        let ns = other_namespaces.namespace_selector.as_ref().unwrap();
        assert_eq!(
            ns.match_expressions.as_ref().unwrap()[0].values.as_deref(),
            Some(&["team-a".to_string()][..])
        );
        let same_namespace = &preferred[1].pod_affinity_term;
        assert!(same_namespace.namespace_selector.is_none());
        let expressions = same_namespace
            .label_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert!(
            expressions
                .iter()
                .any(|e| e.key == CLUSTER_LABEL && e.operator == "NotIn")
        );
        assert!(expressions.iter().any(|e| e.key == COMPONENT_LABEL
            && e.values.as_ref().unwrap().contains(&"etcd".to_string())));
        let off = OperatorSettings {
            spread_from_other_control_planes: false,
            ..OperatorSettings::default()
        };
        assert!(
            node_pool(&Placement::default(), &off, "team-a", "demo")
                .affinity
                .is_none()
        );
    }

    #[test]
    fn a_pod_spec_gets_every_field() {
        let p = placement(json!({
            "runtimeClassName": "kata",
            "priorityClassName": "tenants",
            "nodeSelector": {"pool": "tenants"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
        }));
        let mut pod = PodSpec::default();
        apply(&mut pod, &p);
        assert_eq!(pod.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(pod.priority_class_name.as_deref(), Some("tenants"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "tenants");
        let t = &pod.tolerations.unwrap()[0];
        assert_eq!(
            (t.operator.as_deref(), t.effect.as_deref()),
            (Some("Exists"), Some("NoSchedule"))
        );
        let mut empty = PodSpec::default();
        apply(&mut empty, &Placement::default());
        assert_eq!(empty, PodSpec::default());
    }
}
