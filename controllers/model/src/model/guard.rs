//! The authorization guard: the requests no tenant may make, whatever RBAC
//! it grants itself. A tenant's admin credential is bound to
//! `cluster-admin` through RBAC, and RBAC only adds; the guard runs before
//! RBAC in every nested API server's authorizer chain (a webhook authorizer
//! on loopback, served by the operator's binary in the API server's pod)
//! and denies, with a reason that says why:
//!
//! - creating, changing or deleting the admission policies that confine
//!   pods ([`PROTECTED_POLICIES`], and their bindings of the same names),
//!   or deleting policies or bindings by collection unless the request's
//!   label or field selector leaves Nestor's out (their labels are exactly
//!   [`PROTECTED_LABELS`]: no tenant can create them with others, or
//!   change them);
//! - impersonating the group `system:masters`, which no authorizer checks.
//!
//! (A certificate for `system:masters` cannot be requested either: the API
//! server refuses such a CertificateSigningRequest itself.)
//!
//! Only the cluster's own superusers (`system:masters`: the operator and
//! the break-glass credential) pass, because the API server never asks an
//! authorizer about them.

use crate::model::names::MANAGED_BY;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewStatus,
};

/// The admission policies (and bindings, of the same names) the guard
/// protects: those Nestor writes into every nested cluster. A tenant's own
/// policies, whatever their names, stay the tenant's.
pub const PROTECTED_POLICIES: [&str; 5] = [
    "nestor-pod-security-labels",
    "nestor-host-volumes",
    "nestor-proc-mount",
    "nestor-pod-baseline",
    "nestor-webhook-urls",
];
/// The labels of the protected policies and bindings, all of them: Nestor
/// writes them with these, and no one else may create or change them.
pub const PROTECTED_LABELS: [(&str, &str); 1] = [MANAGED_BY];

/// The loopback port the guard listens on in the API server's pod.
pub const PORT: u16 = 10260;

/// The resources the guard is asked about: the webhook's match condition
/// (CEL), so that the API server calls it for these requests only.
pub const MATCH_CONDITION: &str = "has(request.resourceAttributes) && has(request.resourceAttributes.resource) && request.resourceAttributes.resource in ['validatingadmissionpolicies', 'validatingadmissionpolicybindings', 'groups']";

/// Why a request is denied, or `None` when the guard has no opinion and
/// the next authorizer (RBAC) decides.
pub fn denial(attributes: &ResourceAttributes) -> Option<String> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let (group, resource, verb, name) = (
        text(&attributes.group),
        text(&attributes.resource),
        text(&attributes.verb),
        text(&attributes.name),
    );
    match (group.as_str(), resource.as_str(), verb.as_str()) {
        (
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies" | "validatingadmissionpolicybindings",
            verb,
        ) if (verb == "deletecollection" && !leaves_protected_out(attributes))
            || (matches!(verb, "create" | "update" | "patch" | "delete")
                && PROTECTED_POLICIES.contains(&name.as_str())) =>
        {
            Some(format!(
                "nestor: {resource} {} confine this cluster's pods and are managed by the platform; they cannot be changed or deleted from inside the cluster",
                PROTECTED_POLICIES.join(", ")
            ))
        }
        ("", "groups", "impersonate") if name == "system:masters" => Some(
            "nestor: impersonating system:masters would bypass authorization; it is reserved to the platform".into(),
        ),
        _ => None,
    }
}

/// Whether a collection request's selectors match none of the protected
/// objects: some label requirement their labels fail, or a name
/// requirement their names fail. Without selectors (or with selectors the
/// API server did not parse), they could match.
fn leaves_protected_out(attributes: &ResourceAttributes) -> bool {
    let labels = attributes
        .label_selector
        .as_ref()
        .and_then(|s| s.requirements.as_ref());
    let by_label = labels.is_some_and(|requirements| {
        requirements.iter().any(|r| {
            let value = PROTECTED_LABELS
                .iter()
                .find(|(k, _)| *k == r.key)
                .map(|(_, v)| *v);
            !holds(&r.operator, r.values.as_deref(), value)
        })
    });
    let fields = attributes
        .field_selector
        .as_ref()
        .and_then(|s| s.requirements.as_ref());
    let by_name = fields.is_some_and(|requirements| {
        requirements
            .iter()
            .filter(|r| r.key == "metadata.name")
            .any(|r| {
                PROTECTED_POLICIES
                    .iter()
                    .all(|name| !holds(&r.operator, r.values.as_deref(), Some(name)))
            })
    });
    by_label || by_name
}

/// Whether a selector requirement (label or field: `operator` and
/// `values`) holds for an object whose value under its key is `value`
/// (`None`: no such key). Unknown operators hold: they cannot be relied on
/// to leave anything out.
fn holds(operator: &str, values: Option<&[String]>, value: Option<&str>) -> bool {
    let listed = |v: &str| values.into_iter().flatten().any(|x| x == v);
    match operator {
        "In" => value.is_some_and(listed),
        "NotIn" => !value.is_some_and(listed),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => true,
    }
}

/// The guard's answer to a SubjectAccessReview: denied with a reason, or
/// no opinion.
pub fn review(request: &SubjectAccessReview) -> SubjectAccessReview {
    let reason = request.spec.resource_attributes.as_ref().and_then(denial);
    SubjectAccessReview {
        metadata: Default::default(),
        spec: Default::default(),
        status: Some(SubjectAccessReviewStatus {
            allowed: false,
            denied: Some(reason.is_some()),
            reason,
            evaluation_error: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn attrs(group: &str, resource: &str, verb: &str, name: &str) -> ResourceAttributes {
        ResourceAttributes {
            group: Some(group.into()),
            resource: Some(resource.into()),
            verb: Some(verb.into()),
            name: (!name.is_empty()).then(|| name.into()),
            ..Default::default()
        }
    }

    const VAP: &str = "validatingadmissionpolicies";
    const BINDING: &str = "validatingadmissionpolicybindings";
    const ADMISSION: &str = "admissionregistration.k8s.io";

    #[test]
    fn the_confining_policies_cannot_be_changed_or_deleted() {
        for resource in [VAP, BINDING] {
            for verb in ["update", "patch", "delete"] {
                let why = denial(&attrs(
                    ADMISSION,
                    resource,
                    verb,
                    "nestor-pod-security-labels",
                ));
                assert!(
                    why.as_deref()
                        .is_some_and(|w| w.contains("managed by the platform")),
                    "{resource} {verb}: {why:?}"
                );
            }
            assert!(denial(&attrs(ADMISSION, resource, "deletecollection", "")).is_some());
            assert!(
                denial(&attrs(ADMISSION, resource, "create", "nestor-proc-mount")).is_some(),
                "no tenant makes one first, with labels of its own"
            );
            // The tenant's own policies, and reading Nestor's, are RBAC's.
            // (a chart's own `nestor-*` policy in a nested cluster included).
            for name in ["tenant-policy", "nestor-writes-managed-objects-only"] {
                for verb in ["update", "patch", "delete", "create"] {
                    assert_eq!(denial(&attrs(ADMISSION, resource, verb, name)), None);
                }
            }
            for verb in ["get", "list", "watch"] {
                assert_eq!(
                    denial(&attrs(ADMISSION, resource, verb, "nestor-proc-mount")),
                    None
                );
            }
        }
        // Same resource name in another group is not Nestor's.
        assert_eq!(
            denial(&attrs("example.com", VAP, "delete", "nestor-proc-mount")),
            None
        );
    }

    #[test]
    fn a_collection_delete_passes_only_when_its_selectors_leave_nestors_out() {
        use k8s_openapi::api::authorization::v1::{
            FieldSelectorAttributes, LabelSelectorAttributes,
        };
        let req = |key: &str, operator: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        };
        let by_labels = |requirements: Vec<LabelSelectorRequirement>| {
            let mut a = attrs(ADMISSION, VAP, "deletecollection", "");
            a.label_selector = Some(LabelSelectorAttributes {
                raw_selector: None,
                requirements: Some(requirements),
            });
            denial(&a)
        };
        // Upstream's Conformance test deletes its own, by its own label.
        assert_eq!(by_labels(vec![req("e2e-test-vap", "In", &["true"])]), None);
        assert_eq!(by_labels(vec![req("e2e-test-vap", "Exists", &[])]), None);
        assert_eq!(
            by_labels(vec![req(MANAGED_BY.0, "NotIn", &[MANAGED_BY.1])]),
            None
        );
        // Selectors Nestor's objects match.
        for matching in [
            vec![req(MANAGED_BY.0, "In", &[MANAGED_BY.1])],
            vec![req(MANAGED_BY.0, "Exists", &[])],
            vec![req("team", "DoesNotExist", &[])],
            vec![req("team", "NotIn", &["a"])],
            vec![req("team", "Unknown", &["a"])],
            vec![],
        ] {
            assert!(by_labels(matching.clone()).is_some(), "{matching:?}");
        }
        let by_name = |operator: &str, values: &[&str]| {
            let mut a = attrs(ADMISSION, BINDING, "deletecollection", "");
            a.field_selector = Some(FieldSelectorAttributes {
                raw_selector: None,
                requirements: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: operator.into(),
                        values: Some(values.iter().map(|v| v.to_string()).collect()),
                    },
                ]),
            });
            denial(&a)
        };
        assert_eq!(by_name("In", &["mine"]), None);
        assert!(by_name("In", &["mine", "nestor-host-volumes"]).is_some());
        assert!(by_name("NotIn", &["mine"]).is_some());
    }

    #[test]
    fn system_masters_cannot_be_impersonated() {
        assert!(denial(&attrs("", "groups", "impersonate", "system:masters")).is_some());
        assert_eq!(
            denial(&attrs("", "groups", "impersonate", "developers")),
            None
        );
        assert_eq!(denial(&attrs("", "users", "impersonate", "jane")), None);
    }

    #[test]
    fn a_review_is_a_denial_with_its_reason_or_no_opinion() {
        let mut request = SubjectAccessReview::default();
        request.spec.resource_attributes =
            Some(attrs(ADMISSION, VAP, "delete", "nestor-host-volumes"));
        let status = review(&request).status.unwrap();
        assert!(!status.allowed);
        assert_eq!(status.denied, Some(true));
        assert!(status.reason.unwrap().starts_with("nestor: "));

        request.spec.resource_attributes = Some(attrs("", "pods", "create", ""));
        let status = review(&request).status.unwrap();
        assert_eq!(
            (status.allowed, status.denied, status.reason),
            (false, Some(false), None)
        );

        request.spec.resource_attributes = None;
        assert_eq!(review(&request).status.unwrap().denied, Some(false));
    }

    #[test]
    fn the_match_condition_names_every_resource_the_guard_decides() {
        for resource in [VAP, BINDING, "groups"] {
            assert!(
                MATCH_CONDITION.contains(&format!("'{resource}'")),
                "{resource}"
            );
        }
    }
}
