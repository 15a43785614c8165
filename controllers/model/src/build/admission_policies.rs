//! The admission policies Nestor writes into every nested cluster,
//! guarded against the tenant ([`crate::model::guard`]): they confine the
//! tenant's pods whatever labels, webhooks or RBAC the tenant adds.

use crate::model::guard::PROTECTED_POLICIES;
use crate::model::inputs::WorkloadPolicy;
use crate::model::names::nested_meta;
use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation,
};

/// The Pod Security labels a namespace may carry in a confined cluster.
const LABEL_RULES: [(&str, &str, &str); 2] = [
    (
        "enforce",
        "['baseline', 'restricted']",
        "may only be baseline or restricted",
    ),
    ("enforce-version", "['latest']", "may only be latest"),
];

/// Admission policies beyond Pod Security admission, guarded against the
/// tenant ([`crate::model::guard`]):
///
/// - namespaces cannot lower the enforced Pod Security level, through the
///   namespace itself or through any of its subresources (`status` and
///   `finalize` keep metadata changes);
/// - persistent volumes cannot name a node's file system (a pod's
///   `hostPath` is Pod Security's, a PersistentVolume's is not);
/// - no container unmasks `/proc` (baseline allows it in a user namespace);
/// - every pod meets Pod Security `baseline` whatever its namespace's
///   labels say ([`baseline_validations`]): confinement does not rest on
///   a label;
/// - no webhook is called by URL (admission webhooks and CRD conversion
///   webhooks): the API server would dial a URL from its own pod on the
///   host, while a webhook named by its Service is reached through the
///   cluster's own nodes, like the rest of the tenant's traffic.
///
/// In a cluster whose pods may be privileged they only audit.
pub fn confining_policies(
    workloads: WorkloadPolicy,
) -> (
    Vec<ValidatingAdmissionPolicy>,
    Vec<ValidatingAdmissionPolicyBinding>,
) {
    let labels: Vec<Validation> = LABEL_RULES
        .iter()
        .map(|(suffix, allowed, says)| {
            let key = format!("pod-security.kubernetes.io/{suffix}");
            refusal(
                format!(
                    "!has(object.metadata.labels) || !('{key}' in object.metadata.labels) || object.metadata.labels['{key}'] in {allowed}"
                ),
                format!(
                    "nestor: this cluster's pods are confined to Pod Security baseline; the namespace label {key} {says}"
                ),
            )
        })
        .collect();
    let volumes = vec![refusal(
        "!has(object.spec.hostPath) && !has(object.spec.local)".into(),
        "nestor: this cluster's pods are confined; a PersistentVolume may not use a node's file system (hostPath, local)".into(),
    )];
    let proc_mount = CONTAINER_LISTS
        .into_iter()
        .map(|list| {
            refusal(
                each_container(list, &unset_or("securityContext.procMount", "!= 'Unmasked'")),
                format!(
                    "nestor: this cluster's pods are confined; spec.{list}[*].securityContext.procMount may not be Unmasked"
                ),
            )
        })
        .collect();
    let action = match workloads {
        WorkloadPolicy::Confined => "Deny",
        WorkloadPolicy::Privileged => "Audit",
    };
    let core = |resources: &[&str]| rule("", "v1", resources);
    let [
        labels_name,
        volumes_name,
        proc_mount_name,
        baseline_name,
        webhooks_name,
    ] = PROTECTED_POLICIES;
    [
        (
            labels_name,
            vec![core(&[
                "namespaces",
                "namespaces/status",
                "namespaces/finalize",
            ])],
            labels,
        ),
        (volumes_name, vec![core(&["persistentvolumes"])], volumes),
        (
            proc_mount_name,
            vec![core(&["pods", "pods/ephemeralcontainers"])],
            proc_mount,
        ),
        (
            baseline_name,
            vec![core(&["pods", "pods/ephemeralcontainers"])],
            baseline_validations(),
        ),
        (
            webhooks_name,
            vec![
                rule(
                    "admissionregistration.k8s.io",
                    "*",
                    &[
                        "validatingwebhookconfigurations",
                        "mutatingwebhookconfigurations",
                    ],
                ),
                rule("apiextensions.k8s.io", "*", &["customresourcedefinitions"]),
            ],
            webhook_url_validations(),
        ),
    ]
    .into_iter()
    .map(|(name, rules, validations)| {
        let name = name.to_string();
        let policy = ValidatingAdmissionPolicy {
            metadata: nested_meta(&name, None),
            spec: Some(ValidatingAdmissionPolicySpec {
                failure_policy: Some("Fail".into()),
                match_constraints: Some(MatchResources {
                    resource_rules: Some(rules),
                    ..MatchResources::default()
                }),
                validations: Some(validations),
                ..ValidatingAdmissionPolicySpec::default()
            }),
            ..ValidatingAdmissionPolicy::default()
        };
        let binding = ValidatingAdmissionPolicyBinding {
            metadata: nested_meta(&name, None),
            spec: Some(ValidatingAdmissionPolicyBindingSpec {
                policy_name: Some(name.clone()),
                validation_actions: Some(vec![action.into()]),
                ..ValidatingAdmissionPolicyBindingSpec::default()
            }),
        };
        (policy, binding)
    })
    .unzip()
}

/// Creates and updates of `resources` in `group` (every version when
/// `version` is `*`).
fn rule(group: &str, version: &str, resources: &[&str]) -> NamedRuleWithOperations {
    NamedRuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec![version.into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        ..NamedRuleWithOperations::default()
    }
}

fn refusal(expression: String, message: String) -> Validation {
    Validation {
        expression,
        message: Some(message),
        reason: Some("Forbidden".into()),
        ..Validation::default()
    }
}

/// The lists of a pod's containers (each its own CEL type).
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Capabilities Pod Security `baseline` lets a container add.
const BASELINE_CAPABILITIES: &str = "['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT']";

/// Sysctls Pod Security `baseline` (version `latest`) lets a pod set.
const BASELINE_SYSCTLS: &str = "['kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range', 'net.ipv4.ip_local_reserved_ports', 'net.ipv4.tcp_syncookies', 'net.ipv4.ping_group_range', 'net.ipv4.ip_unprivileged_port_start', 'net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_fin_timeout', 'net.ipv4.tcp_keepalive_intvl', 'net.ipv4.tcp_keepalive_probes', 'net.ipv4.tcp_rmem', 'net.ipv4.tcp_wmem']";

/// SELinux types Pod Security `baseline` allows.
const BASELINE_SELINUX_TYPES: &str =
    "['', 'container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t']";

/// `path` (dotted, below `root`) is unset, or its value passes `test`
/// (CEL after the value, such as `!= 'Unmasked'` or `.all(...)`).
fn unset_or_at(root: &str, path: &str, test: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    let mut checks = Vec::new();
    for i in 0..parts.len() {
        let parent = std::iter::once(root)
            .chain(parts[..i].iter().copied())
            .collect::<Vec<_>>()
            .join(".");
        checks.push(format!("!has({parent}.{})", parts[i]));
    }
    let gap = if test.starts_with('.') { "" } else { " " };
    format!("{} || {root}.{path}{gap}{test}", checks.join(" || "))
}

/// [`unset_or_at`] for a container `c`.
fn unset_or(path: &str, test: &str) -> String {
    unset_or_at("c", path, test)
}

/// `check` (on a container `c`) holds for every container of `list`.
fn each_container(list: &str, check: &str) -> String {
    let each = format!("object.spec.{list}.all(c, {check})");
    if list == "containers" {
        each
    } else {
        format!("!has(object.spec.{list}) || {each}")
    }
}

/// Pod Security `baseline`, as admission policy validations on the pod
/// itself: no host namespace, privileged container, host process, added
/// capability beyond baseline's, `hostPath` volume, host port, unconfined
/// seccomp or AppArmor profile, SELinux user, role or unusual type, or
/// unsafe sysctl. The same rules Pod Security admission enforces, but
/// decided by no label a tenant could change.
fn baseline_validations() -> Vec<Validation> {
    let says = |field: &str, what: &str| {
        format!(
            "nestor: this cluster's pods are confined to Pod Security baseline whatever their namespace's labels; {field} {what}"
        )
    };
    let pod = |path: &str, test: &str| unset_or_at("object.spec", path, test);
    let mut checks: Vec<Validation> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .map(|field| {
            refusal(
                pod(field, "== false"),
                says(&format!("spec.{field}"), "may not be true"),
            )
        })
        .collect();
    checks.extend([
        refusal(
            "!has(object.spec.volumes) || object.spec.volumes.all(v, !has(v.hostPath))".into(),
            says("spec.volumes[*].hostPath", "may not be set"),
        ),
        refusal(
            pod("securityContext.seccompProfile.type", "!= 'Unconfined'"),
            says("spec.securityContext.seccompProfile.type", "may not be Unconfined"),
        ),
        refusal(
            pod("securityContext.appArmorProfile.type", "!= 'Unconfined'"),
            says("spec.securityContext.appArmorProfile.type", "may not be Unconfined"),
        ),
        refusal(
            pod("securityContext.seLinuxOptions.type", &format!("in {BASELINE_SELINUX_TYPES}")),
            says("spec.securityContext.seLinuxOptions.type", "may only be a container type"),
        ),
        refusal(
            format!(
                "({}) && ({})",
                pod("securityContext.seLinuxOptions.user", "== ''"),
                pod("securityContext.seLinuxOptions.role", "== ''")
            ),
            says("spec.securityContext.seLinuxOptions", "may not set a user or role"),
        ),
        refusal(
            pod("securityContext.windowsOptions.hostProcess", "== false"),
            says("spec.securityContext.windowsOptions.hostProcess", "may not be true"),
        ),
        refusal(
            pod(
                "securityContext.sysctls",
                &format!(".all(s, s.name in {BASELINE_SYSCTLS})"),
            ),
            says("spec.securityContext.sysctls", "may only set the safe sysctls"),
        ),
        refusal(
            "!has(object.metadata.annotations) || object.metadata.annotations.all(k, !k.startsWith('container.apparmor.security.beta.kubernetes.io/') || object.metadata.annotations[k] == 'runtime/default' || object.metadata.annotations[k].startsWith('localhost/'))".into(),
            says("metadata.annotations[container.apparmor.security.beta.kubernetes.io/*]", "may only be runtime/default or localhost/*"),
        ),
    ]);
    let container_checks: [(&str, String, &str); 8] = [
        (
            "securityContext.privileged",
            unset_or("securityContext.privileged", "== false"),
            "may not be true",
        ),
        (
            "securityContext.capabilities.add",
            unset_or(
                "securityContext.capabilities.add",
                &format!(".all(a, a in {BASELINE_CAPABILITIES})"),
            ),
            "may only add the baseline capabilities",
        ),
        (
            "ports[*].hostPort",
            "!has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == 0)".into(),
            "may not be set",
        ),
        (
            "securityContext.seccompProfile.type",
            unset_or("securityContext.seccompProfile.type", "!= 'Unconfined'"),
            "may not be Unconfined",
        ),
        (
            "securityContext.appArmorProfile.type",
            unset_or("securityContext.appArmorProfile.type", "!= 'Unconfined'"),
            "may not be Unconfined",
        ),
        (
            "securityContext.seLinuxOptions.type",
            unset_or(
                "securityContext.seLinuxOptions.type",
                &format!("in {BASELINE_SELINUX_TYPES}"),
            ),
            "may only be a container type",
        ),
        (
            "securityContext.seLinuxOptions",
            format!(
                "({}) && ({})",
                unset_or("securityContext.seLinuxOptions.user", "== ''"),
                unset_or("securityContext.seLinuxOptions.role", "== ''")
            ),
            "may not set a user or role",
        ),
        (
            "securityContext.windowsOptions.hostProcess",
            unset_or("securityContext.windowsOptions.hostProcess", "== false"),
            "may not be true",
        ),
    ];
    for list in CONTAINER_LISTS {
        for (field, check, what) in &container_checks {
            checks.push(refusal(
                each_container(list, check),
                says(&format!("spec.{list}[*].{field}"), what),
            ));
        }
    }
    checks
}

/// No webhook by URL: admission webhooks and CRD conversion webhooks name
/// a Service of the cluster or nothing.
fn webhook_url_validations() -> Vec<Validation> {
    let says = |field: &str| {
        format!(
            "nestor: {field} may not be set; name a Service of this cluster (clientConfig.service) instead, which the API server reaches through the cluster's nodes"
        )
    };
    vec![
        refusal(
            "!has(object.webhooks) || object.webhooks.all(w, !has(w.clientConfig.url))".into(),
            says("webhooks[*].clientConfig.url"),
        ),
        refusal(
            "!has(object.spec) || !has(object.spec.conversion) || !has(object.spec.conversion.webhook) || !has(object.spec.conversion.webhook.clientConfig) || !has(object.spec.conversion.webhook.clientConfig.url)".into(),
            says("spec.conversion.webhook.clientConfig.url"),
        ),
        refusal(
            format!(
                "!has(object.webhooks) || object.webhooks.all(w, !has(w.clientConfig.service) || !({}))",
                names_the_api_server("w.clientConfig.service")
            ),
            api_server_says("webhooks[*].clientConfig.service"),
        ),
        refusal(
            format!(
                "!has(object.spec) || !has(object.spec.conversion) || !has(object.spec.conversion.webhook) || !has(object.spec.conversion.webhook.clientConfig) || !has(object.spec.conversion.webhook.clientConfig.service) || !({})",
                names_the_api_server("object.spec.conversion.webhook.clientConfig.service")
            ),
            api_server_says("spec.conversion.webhook.clientConfig.service"),
        ),
    ]
}

/// Whether a webhook's `service` (CEL) is the API server's own
/// `default/kubernetes`: upstream calls such a webhook with the API
/// server's loopback superuser credential, on the path the webhook names.
fn names_the_api_server(service: &str) -> String {
    format!("{service}.namespace == 'default' && {service}.name == 'kubernetes'")
}

fn api_server_says(field: &str) -> String {
    format!(
        "nestor: {field} may not name default/kubernetes: the API server would call itself as its own superuser on the webhook's path"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confining_policies_deny_and_only_audit_when_privileged() {
        let (policies, bindings) = confining_policies(WorkloadPolicy::Confined);
        let names: Vec<_> = policies
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "nestor-pod-security-labels",
                "nestor-host-volumes",
                "nestor-proc-mount",
                "nestor-pod-baseline",
                "nestor-webhook-urls"
            ]
        );
        for (policy, binding) in policies.iter().zip(&bindings) {
            let spec = binding.spec.as_ref().unwrap();
            assert_eq!(spec.policy_name, policy.metadata.name);
            assert_eq!(
                spec.validation_actions.as_deref(),
                Some(&["Deny".to_string()][..])
            );
            assert_eq!(
                policy.spec.as_ref().unwrap().failure_policy.as_deref(),
                Some("Fail")
            );
        }
        let labels = &policies[0]
            .spec
            .as_ref()
            .unwrap()
            .validations
            .as_ref()
            .unwrap()[0];
        assert!(
            labels
                .expression
                .contains("'pod-security.kubernetes.io/enforce' in object.metadata.labels")
        );
        let (_, audit) = confining_policies(WorkloadPolicy::Privileged);
        assert!(
            audit
                .iter()
                .all(|b| b.spec.as_ref().unwrap().validation_actions.as_deref()
                    == Some(&["Audit".to_string()][..]))
        );
    }

    fn resources(policy: &ValidatingAdmissionPolicy) -> Vec<String> {
        let rules = policy.spec.as_ref().unwrap().match_constraints.as_ref();
        rules
            .and_then(|m| m.resource_rules.clone())
            .unwrap()
            .into_iter()
            .flat_map(|r| r.resources.unwrap())
            .collect()
    }

    fn expressions(policy: &ValidatingAdmissionPolicy) -> String {
        let spec = policy.spec.as_ref().unwrap();
        let validations = spec.validations.as_ref().unwrap();
        for v in validations {
            let message = v.message.as_deref().unwrap();
            assert!(message.starts_with("nestor: "), "{message}");
            assert_eq!(v.reason.as_deref(), Some("Forbidden"));
        }
        validations
            .iter()
            .map(|v| v.expression.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn namespace_labels_are_checked_on_every_subresource_that_keeps_them() {
        let (policies, _) = confining_policies(WorkloadPolicy::Confined);
        assert_eq!(
            resources(&policies[0]),
            ["namespaces", "namespaces/status", "namespaces/finalize"]
        );
    }

    #[test]
    fn every_pod_meets_baseline_whatever_its_namespace_says() {
        let (policies, _) = confining_policies(WorkloadPolicy::Confined);
        let baseline = &policies[3];
        assert_eq!(resources(baseline), ["pods", "pods/ephemeralcontainers"]);
        let all = expressions(baseline);
        assert!(!all.contains("namespace"), "no label decides");
        for field in [
            "object.spec.hostNetwork == false",
            "object.spec.hostPID == false",
            "object.spec.hostIPC == false",
            "!has(v.hostPath)",
            "object.spec.securityContext.seccompProfile.type != 'Unconfined'",
            "object.spec.securityContext.appArmorProfile.type != 'Unconfined'",
            "object.spec.securityContext.sysctls.all(s, s.name in ['kernel.shm_rmid_forced'",
            "object.spec.securityContext.windowsOptions.hostProcess == false",
            "container.apparmor.security.beta.kubernetes.io/",
        ] {
            assert!(all.contains(field), "{field}");
        }
        for list in CONTAINER_LISTS {
            for check in [
                "c.securityContext.privileged == false",
                "c.securityContext.capabilities.add.all(a, a in ['AUDIT_WRITE'",
                "p.hostPort == 0",
                "c.securityContext.seccompProfile.type != 'Unconfined'",
                "c.securityContext.seLinuxOptions.type in ['', 'container_t'",
                "c.securityContext.seLinuxOptions.user == ''",
                "c.securityContext.windowsOptions.hostProcess == false",
            ] {
                let expected = format!("object.spec.{list}.all(c, ");
                assert!(
                    all.lines()
                        .any(|e| e.contains(&expected) && e.contains(check)),
                    "{list}: {check}"
                );
            }
        }
        // Each optional part is tested for before it is read.
        assert!(all.contains(
            "!has(c.securityContext) || !has(c.securityContext.capabilities) || !has(c.securityContext.capabilities.add) || c.securityContext.capabilities.add.all("
        ));
        assert!(
            all.contains("!has(object.spec.initContainers) || object.spec.initContainers.all(")
        );
    }

    #[test]
    fn webhooks_name_services_not_urls() {
        let (policies, _) = confining_policies(WorkloadPolicy::Confined);
        let webhooks = &policies[4];
        assert_eq!(
            resources(webhooks),
            [
                "validatingwebhookconfigurations",
                "mutatingwebhookconfigurations",
                "customresourcedefinitions"
            ]
        );
        let all = expressions(webhooks);
        assert!(all.contains("object.webhooks.all(w, !has(w.clientConfig.url))"));
        assert!(all.contains("!has(object.spec.conversion.webhook.clientConfig.url)"));
        // The API server's own Service, which upstream calls with its
        // loopback superuser credential.
        assert!(all.contains(
            "object.webhooks.all(w, !has(w.clientConfig.service) || !(w.clientConfig.service.namespace == 'default' && w.clientConfig.service.name == 'kubernetes'))"
        ));
        assert!(all.contains(
            "!(object.spec.conversion.webhook.clientConfig.service.namespace == 'default' && object.spec.conversion.webhook.clientConfig.service.name == 'kubernetes')"
        ));
    }
}
