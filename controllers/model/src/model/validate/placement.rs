//! Placement fields: names, labels, tolerations and affinity as the API
//! server checks them in a pod spec, refused here first; and refused
//! altogether where the platform admin enforces its own placement.

use super::Problems;
use super::fields::{excerpt, is_dns_name, is_label_value, label_key_problem};
use k8s_openapi::api::core::v1::{
    Affinity, NodeSelectorRequirement, PodAffinityTerm, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use nestor_crds::{Placement, TaintEffect, TolerationOperator};

/// What a spec's placement may name: each field a tenant sets must be
/// listed here (the Helm value `placement.allowed`), so no edit widens the
/// platform's placement (a runtime class other than the sandbox, a
/// priority class that preempts others, a toleration of a dedicated
/// node's taint). Empty: a spec may set no placement field.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedPlacement {
    #[serde(default)]
    pub runtime_class_names: Vec<String>,
    #[serde(default)]
    pub priority_class_names: Vec<String>,
    /// Taint keys a spec may tolerate (`""`: every taint, with operator
    /// Exists and no key).
    #[serde(default)]
    pub toleration_keys: Vec<String>,
    /// Node label keys a spec's `nodeSelector` may name.
    #[serde(default)]
    pub node_selector_keys: Vec<String>,
    /// Whether a spec may set `affinity`.
    #[serde(default)]
    pub affinity: bool,
}

/// Parses `placement.allowed` (JSON).
pub fn parse_allowed_placement(text: &str) -> Result<AllowedPlacement, String> {
    serde_json::from_str(text).map_err(|e| format!("placement.allowed: {e}"))
}

/// A tenant's `spec.placement`: sound, and within what the platform
/// allows (nothing at all where it enforces its own).
pub(crate) fn check_tenant_placement(
    problems: &mut Problems,
    placement: &Placement,
    platform: &super::Platform,
) {
    let field = "spec.placement";
    check_placement(problems, field, placement, platform.placement_enforced);
    if !platform.placement_enforced {
        check_allowed(problems, field, placement, &platform.placement_allowed);
    }
}

/// Checks that every field a tenant's `placement` sets is one the platform
/// allows (`placement.allowed`).
pub(crate) fn check_allowed(
    problems: &mut Problems,
    field: &str,
    placement: &Placement,
    allowed: &AllowedPlacement,
) {
    let listed = |list: &[String]| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.iter()
                .map(|v| format!("'{}'", excerpt(v)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut refuse = |here: String, what: String, list: &[String], value: &str| {
        problems.push(
            &here,
            format!(
                "{what} is not one this platform allows (allowed: {}; Helm value placement.allowed.{value})",
                listed(list)
            ),
        );
    };
    for (name, value, list) in [
        (
            "runtimeClassName",
            &placement.runtime_class_name,
            &allowed.runtime_class_names,
        ),
        (
            "priorityClassName",
            &placement.priority_class_name,
            &allowed.priority_class_names,
        ),
    ] {
        if let Some(value) = value
            && !list.contains(value)
        {
            refuse(
                format!("{field}.{name}"),
                format!("'{}'", excerpt(value)),
                list,
                &format!("{name}s"),
            );
        }
    }
    for key in placement.node_selector.keys() {
        if !allowed.node_selector_keys.contains(key) {
            refuse(
                format!("{field}.nodeSelector"),
                format!("the node label '{}'", excerpt(key)),
                &allowed.node_selector_keys,
                "nodeSelectorKeys",
            );
        }
    }
    for (i, t) in placement.tolerations.iter().enumerate() {
        let key = t.key.clone().unwrap_or_default();
        if !allowed.toleration_keys.contains(&key) {
            let what = if key.is_empty() {
                "a toleration of every taint".to_string()
            } else {
                format!("the taint '{}'", excerpt(&key))
            };
            refuse(
                format!("{field}.tolerations[{i}]"),
                what,
                &allowed.toleration_keys,
                "tolerationKeys",
            );
        }
    }
    if placement.affinity.is_some() && !allowed.affinity {
        problems.push(
            &format!("{field}.affinity"),
            "this platform does not let a spec set affinity (Helm value placement.allowed.affinity)",
        );
    }
}

/// Checks `placement` under `field` (e.g. `spec.placement`).
pub(crate) fn check_placement(
    problems: &mut Problems,
    field: &str,
    placement: &Placement,
    enforced: bool,
) {
    if enforced && !placement.is_empty() {
        problems.push(
            field,
            "this platform places Nestor's pods itself (Helm value placement.enforced); leave it empty",
        );
        return;
    }
    for (name, value) in [
        ("runtimeClassName", &placement.runtime_class_name),
        ("priorityClassName", &placement.priority_class_name),
    ] {
        if let Some(value) = value
            && !is_dns_name(value, false)
        {
            problems.push(
                &format!("{field}.{name}"),
                format!("'{}' is not a DNS subdomain", excerpt(value)),
            );
        }
    }
    for (key, value) in &placement.node_selector {
        label(problems, &format!("{field}.nodeSelector"), key, Some(value));
    }
    for (i, t) in placement.tolerations.iter().enumerate() {
        let here = format!("{field}.tolerations[{i}]");
        let key = t.key.as_deref().unwrap_or_default();
        let exists = t.operator == Some(TolerationOperator::Exists);
        if key.is_empty() && !exists {
            problems.push(&here, "an empty key needs operator Exists");
        }
        if !key.is_empty()
            && let Some(why) = label_key_problem(key)
        {
            problems.push(&format!("{here}.key"), format!("'{}' {why}", excerpt(key)));
        }
        if exists && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            problems.push(
                &format!("{here}.value"),
                "must be empty with operator Exists",
            );
        }
        if t.toleration_seconds.is_some() && t.effect != Some(TaintEffect::NoExecute) {
            problems.push(
                &format!("{here}.tolerationSeconds"),
                "only applies to effect NoExecute",
            );
        }
    }
    if let Some(affinity) = &placement.affinity {
        check_affinity(problems, &format!("{field}.affinity"), affinity);
    }
}

fn label(problems: &mut Problems, field: &str, key: &str, value: Option<&str>) {
    if let Some(why) = label_key_problem(key) {
        problems.push(
            field,
            format!("'{}' is not a label key: {why}", excerpt(key)),
        );
    }
    if let Some(value) = value
        && !is_label_value(value)
    {
        problems.push(
            &format!("{field}.{}", excerpt(key)),
            format!("'{}' is not a label value", excerpt(value)),
        );
    }
}

fn check_affinity(problems: &mut Problems, field: &str, affinity: &Affinity) {
    if let Some(node) = &affinity.node_affinity {
        let here = format!("{field}.nodeAffinity");
        if let Some(required) = &node.required_during_scheduling_ignored_during_execution {
            if required.node_selector_terms.is_empty() {
                problems.push(
                    &format!("{here}.requiredDuringSchedulingIgnoredDuringExecution"),
                    "needs at least one nodeSelectorTerm",
                );
            }
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                for r in term.match_expressions.iter().flatten() {
                    node_requirement(problems, &format!("{here}.required[{i}]"), r);
                }
            }
        }
        for (i, p) in node
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{here}.preferred[{i}]");
            weight(problems, &at, p.weight);
            for r in p.preference.match_expressions.iter().flatten() {
                node_requirement(problems, &at, r);
            }
        }
    }
    let pod_terms = [
        (
            "podAffinity",
            affinity.pod_affinity.as_ref().map(|a| {
                (
                    &a.required_during_scheduling_ignored_during_execution,
                    &a.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
        (
            "podAntiAffinity",
            affinity.pod_anti_affinity.as_ref().map(|a| {
                (
                    &a.required_during_scheduling_ignored_during_execution,
                    &a.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
    ];
    for (name, terms) in pod_terms {
        let Some((required, preferred)) = terms else {
            continue;
        };
        let here = format!("{field}.{name}");
        for (i, term) in required.iter().flatten().enumerate() {
            pod_term(problems, &format!("{here}.required[{i}]"), term);
        }
        for (
            i,
            WeightedPodAffinityTerm {
                weight: w,
                pod_affinity_term,
            },
        ) in preferred.iter().flatten().enumerate()
        {
            let at = format!("{here}.preferred[{i}]");
            weight(problems, &at, *w);
            pod_term(problems, &at, pod_affinity_term);
        }
    }
}

fn weight(problems: &mut Problems, field: &str, weight: i32) {
    if !(1..=100).contains(&weight) {
        problems.push(
            &format!("{field}.weight"),
            format!("{weight} is not 1 to 100"),
        );
    }
}

/// The operator and values of a requirement, as the API server checks them.
fn requirement(
    problems: &mut Problems,
    field: &str,
    key: &str,
    operator: &str,
    values: &[String],
    numeric: bool,
) {
    label(problems, &format!("{field}.key"), key, None);
    let ok = match operator {
        "In" | "NotIn" => !values.is_empty(),
        "Exists" | "DoesNotExist" => values.is_empty(),
        "Gt" | "Lt" if numeric => values.len() == 1 && values[0].parse::<i64>().is_ok(),
        _ => {
            problems.push(
                &format!("{field}.operator"),
                format!("'{}' is not an operator here", excerpt(operator)),
            );
            return;
        }
    };
    if !ok {
        problems.push(
            &format!("{field}.values"),
            format!("do not fit operator {operator} (In and NotIn need values, Exists and DoesNotExist none, Gt and Lt one integer)"),
        );
    }
    for value in values.iter().filter(|v| !is_label_value(v)) {
        problems.push(
            &format!("{field}.values"),
            format!("'{}' is not a label value", excerpt(value)),
        );
    }
}

fn node_requirement(problems: &mut Problems, field: &str, r: &NodeSelectorRequirement) {
    let values = r.values.clone().unwrap_or_default();
    requirement(problems, field, &r.key, &r.operator, &values, true);
}

fn selector(problems: &mut Problems, field: &str, selector: &LabelSelector) {
    for (key, value) in selector.match_labels.iter().flatten() {
        label(problems, &format!("{field}.matchLabels"), key, Some(value));
    }
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.clone().unwrap_or_default();
        requirement(
            problems,
            &format!("{field}.matchExpressions"),
            &r.key,
            &r.operator,
            &values,
            false,
        );
    }
}

fn pod_term(problems: &mut Problems, field: &str, term: &PodAffinityTerm) {
    if term.topology_key.is_empty() {
        problems.push(&format!("{field}.topologyKey"), "may not be empty");
    } else {
        label(
            problems,
            &format!("{field}.topologyKey"),
            &term.topology_key,
            None,
        );
    }
    for s in [&term.label_selector, &term.namespace_selector]
        .into_iter()
        .flatten()
    {
        selector(problems, field, s);
    }
    for ns in term.namespaces.iter().flatten() {
        if !is_dns_name(ns, false) || ns.contains('.') {
            problems.push(
                &format!("{field}.namespaces"),
                format!("'{}' is not a namespace name", excerpt(ns)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: serde_json::Value, enforced: bool) -> Vec<String> {
        let placement: Placement = serde_json::from_value(value).unwrap();
        let mut problems = Problems::default();
        check_placement(&mut problems, "spec.placement", &placement, enforced);
        problems.0
    }

    #[test]
    fn a_sound_placement_passes() {
        let ok = json!({
            "runtimeClassName": "kata",
            "priorityClassName": "tenant-nodes",
            "nodeSelector": {"node-role.example.com/tenants": "true"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"},
                {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
            ],
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                ]}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}}
                ]}
            }
        });
        assert_eq!(check(ok.clone(), false), Vec::<String>::new());
        assert_eq!(
            check(ok, true),
            [
                "spec.placement: this platform places Nestor's pods itself (Helm value placement.enforced); leave it empty"
            ]
        );
        assert!(check(json!({}), true).is_empty());
    }

    #[test]
    fn a_tenant_sets_only_what_the_platform_allows() {
        let placement: Placement = serde_json::from_value(json!({
            "runtimeClassName": "runc",
            "priorityClassName": "system-node-critical",
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": [{"operator": "Exists"}, {"key": "dedicated", "operator": "Exists"}],
            "affinity": {}
        }))
        .unwrap();
        let check = |allowed: &AllowedPlacement| {
            let mut problems = Problems::default();
            check_allowed(&mut problems, "spec.placement", &placement, allowed);
            problems.0
        };
        assert_eq!(
            check(&AllowedPlacement::default()),
            [
                "spec.placement.runtimeClassName: 'runc' is not one this platform allows (allowed: none; Helm value placement.allowed.runtimeClassNames)",
                "spec.placement.priorityClassName: 'system-node-critical' is not one this platform allows (allowed: none; Helm value placement.allowed.priorityClassNames)",
                "spec.placement.nodeSelector: the node label 'node-role.kubernetes.io/control-plane' is not one this platform allows (allowed: none; Helm value placement.allowed.nodeSelectorKeys)",
                "spec.placement.tolerations[0]: a toleration of every taint is not one this platform allows (allowed: none; Helm value placement.allowed.tolerationKeys)",
                "spec.placement.tolerations[1]: the taint 'dedicated' is not one this platform allows (allowed: none; Helm value placement.allowed.tolerationKeys)",
                "spec.placement.affinity: this platform does not let a spec set affinity (Helm value placement.allowed.affinity)",
            ]
        );
        let all = AllowedPlacement {
            runtime_class_names: vec!["runc".into()],
            priority_class_names: vec!["system-node-critical".into()],
            toleration_keys: vec!["".into(), "dedicated".into()],
            node_selector_keys: vec!["node-role.kubernetes.io/control-plane".into()],
            affinity: true,
        };
        assert!(check(&all).is_empty());
        let mut most = all.clone();
        most.toleration_keys = vec!["dedicated".into()];
        assert_eq!(
            check(&most),
            [
                "spec.placement.tolerations[0]: a toleration of every taint is not one this platform allows (allowed: 'dedicated'; Helm value placement.allowed.tolerationKeys)"
            ]
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        for (value, expected) in [
            (
                json!({"runtimeClassName": "Kata_VM"}),
                "spec.placement.runtimeClassName: 'Kata_VM' is not a DNS subdomain",
            ),
            (
                json!({"priorityClassName": "-x"}),
                "spec.placement.priorityClassName",
            ),
            (
                json!({"nodeSelector": {"bad key!": "x"}}),
                "spec.placement.nodeSelector: 'bad key!' is not a label key",
            ),
            (
                json!({"nodeSelector": {"ok": "-bad-"}}),
                "spec.placement.nodeSelector.ok: '-bad-' is not a label value",
            ),
            (
                json!({"tolerations": [{"value": "x"}]}),
                "spec.placement.tolerations[0]: an empty key needs operator Exists",
            ),
            (
                json!({"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]}),
                "spec.placement.tolerations[0].value: must be empty with operator Exists",
            ),
            (
                json!({"tolerations": [{"key": "a", "tolerationSeconds": 5, "effect": "NoSchedule"}]}),
                "spec.placement.tolerations[0].tolerationSeconds: only applies to effect NoExecute",
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}),
                "needs at least one nodeSelectorTerm",
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]}}}}),
                "'Near' is not an operator here",
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}}}),
                "do not fit operator In",
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["many"]}]}]}}}}),
                "do not fit operator Gt",
            ),
            (
                json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "preference": {}}]}}}),
                "spec.placement.affinity.nodeAffinity.preferred[0].weight: 0 is not 1 to 100",
            ),
            (
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": ""}]}}}),
                "spec.placement.affinity.podAffinity.required[0].topologyKey: may not be empty",
            ),
            (
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "h", "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}]}}}),
                "'Gt' is not an operator here",
            ),
        ] {
            let problems = check(value.clone(), false).join("; ");
            assert!(problems.contains(expected), "{value}: {problems}");
        }
    }
}
