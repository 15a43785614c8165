//! The authorization guard: the requests no tenant may make, whatever RBAC
//! it grants itself. A tenant's admin credential is bound to
//! `cluster-admin` through RBAC, and RBAC only adds; the guard runs before
//! RBAC in every nested API server's authorizer chain (a webhook authorizer
//! on loopback, served by the operator's binary in the API server's pod)
//! and denies, with a reason that says why:
//!
//! - changing or deleting the admission policies that confine pods
//!   ([`PROTECTED_POLICIES`], and their bindings of the same names), or
//!   deleting such objects by collection;
//! - impersonating the group `system:masters`, which no authorizer checks.
//!
//! (A certificate for `system:masters` cannot be requested either: the API
//! server refuses such a CertificateSigningRequest itself.)
//!
//! Only the cluster's own superusers (`system:masters`: the operator and
//! the break-glass credential) pass, because the API server never asks an
//! authorizer about them.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewStatus,
};

/// The admission policies (and bindings, of the same names) the guard
/// protects: those Nestor writes into every nested cluster. A tenant's own
/// policies, whatever their names, stay the tenant's.
pub const PROTECTED_POLICIES: [&str; 3] = [
    "nestor-pod-security-labels",
    "nestor-host-volumes",
    "nestor-proc-mount",
];
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
        ) if verb == "deletecollection"
            || (matches!(verb, "update" | "patch" | "delete")
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
