//! The nested API server's security configuration files, in one ConfigMap
//! mounted read-only into its pod:
//!
//! - `admission.yaml`: Pod Security admission, `baseline` enforced in every
//!   namespace by default (or `privileged` where the platform admin opted
//!   the host namespace in), with no exemptions;
//! - `authorization.yaml`: the guard ([`crate::model::guard`]) before the
//!   Node and RBAC authorizers;
//! - `guard.kubeconfig`: how the API server reaches the guard, on loopback
//!   in its own pod;
//! - `authentication.yaml`: anonymous requests only for the health
//!   endpoints;
//! - `audit-policy.yaml`: what the audit log, on the API server's standard
//!   output, records: the level the tenant chose, never more than metadata
//!   of Secrets, ConfigMaps and tokens, nothing of health checks;
//! - `egress-selector.yaml`: traffic into the cluster through Konnectivity
//!   ([`crate::build::konnectivity`]).
//!
//! A tenant cannot reach any of it: no field of a VirtualCluster names a
//! file, and the flags that point at these files are managed.

use crate::model::guard;
use crate::model::hash::desired_hash;
use crate::model::inputs::{ClusterInputs, WorkloadPolicy};
use crate::model::names::{Component, cluster_child_meta};
use k8s_openapi::api::core::v1::ConfigMap;
use nestor_crds::AuditLevel;
use std::collections::BTreeMap;

/// Where the files are mounted in the API server's container.
pub const DIR: &str = "/etc/kubernetes/config";
pub const ADMISSION: &str = "admission.yaml";
pub const AUTHORIZATION: &str = "authorization.yaml";
pub const AUTHENTICATION: &str = "authentication.yaml";
pub const GUARD_KUBECONFIG: &str = "guard.kubeconfig";
pub const AUDIT_POLICY: &str = "audit-policy.yaml";
pub const EGRESS_SELECTOR: &str = "egress-selector.yaml";

/// The paths anonymous requests may reach: the health endpoints the
/// kubelet's probes and load balancers use.
pub const ANONYMOUS_PATHS: [&str; 3] = ["/livez", "/readyz", "/healthz"];

/// The Pod Security level enforced in every namespace by default.
pub fn enforced_level(policy: WorkloadPolicy) -> &'static str {
    match policy {
        WorkloadPolicy::Confined => "baseline",
        WorkloadPolicy::Privileged => "privileged",
    }
}

fn admission(policy: WorkloadPolicy) -> String {
    let level = enforced_level(policy);
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: {level}
      enforce-version: latest
      audit: restricted
      audit-version: latest
      warn: {level}
      warn-version: latest
    exemptions:
      usernames: []
      runtimeClasses: []
      namespaces: []
"
    )
}

fn authorization() -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: AuthorizationConfiguration
authorizers:
- type: Webhook
  name: nestor-guard
  webhook:
    timeout: 3s
    subjectAccessReviewVersion: v1
    matchConditionSubjectAccessReviewVersion: v1
    failurePolicy: Deny
    authorizedTTL: 1s
    unauthorizedTTL: 30s
    connectionInfo:
      type: KubeConfigFile
      kubeConfigFile: {DIR}/{GUARD_KUBECONFIG}
    matchConditions:
    - expression: \"{}\"
- type: Node
  name: node
- type: RBAC
  name: rbac
",
        guard::MATCH_CONDITION
    )
}

fn guard_kubeconfig() -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: guard
  cluster:
    server: http://127.0.0.1:{}/authorize
users:
- name: apiserver
  user: {{}}
contexts:
- name: guard
  context:
    cluster: guard
    user: apiserver
current-context: guard
",
        guard::PORT
    )
}

fn authentication() -> String {
    let paths: String = ANONYMOUS_PATHS
        .iter()
        .map(|p| format!("  - path: {p}\n"))
        .collect();
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
{paths}"
    )
}

fn audit_policy(level: AuditLevel) -> String {
    let name = |level: AuditLevel| match level {
        AuditLevel::None => "None",
        AuditLevel::Metadata => "Metadata",
        AuditLevel::Request => "Request",
        AuditLevel::RequestResponse => "RequestResponse",
    };
    let sensitive = name(level.min(AuditLevel::Metadata));
    let level = name(level);
    format!(
        "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: ['/livez*', '/readyz*', '/healthz*']
  - level: {sensitive}
    resources:
      - group: ''
        resources: [secrets, configmaps, serviceaccounts/token]
      - group: authentication.k8s.io
        resources: [tokenreviews]
  - level: {level}
"
    )
}

/// The ConfigMap of the API server's security configuration.
pub fn desired_apiserver_config_map(inputs: &ClusterInputs) -> ConfigMap {
    ConfigMap {
        metadata: cluster_child_meta(
            inputs.vc,
            inputs.names.apiserver_config(),
            Component::ApiServer,
        ),
        data: Some(BTreeMap::from([
            (ADMISSION.into(), admission(inputs.workloads)),
            (AUTHORIZATION.into(), authorization()),
            (AUTHENTICATION.into(), authentication()),
            (GUARD_KUBECONFIG.into(), guard_kubeconfig()),
            (
                AUDIT_POLICY.into(),
                audit_policy(inputs.vc.spec.api_server.audit.level),
            ),
            (
                EGRESS_SELECTOR.into(),
                crate::build::konnectivity::egress_selector(),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// A hash of the files and of the encryption keys' generations, on the
/// API server's pod template: the API server reads them at start, so a
/// change restarts it.
pub fn config_hash(inputs: &ClusterInputs) -> String {
    desired_hash(&(
        &desired_apiserver_config_map(inputs).data,
        &inputs.encryption_revision,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::fixtures;
    use serde_json::json;

    fn files(inputs: &ClusterInputs) -> BTreeMap<String, serde_yaml::Value> {
        desired_apiserver_config_map(inputs)
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, serde_yaml::from_str(&v).expect("valid YAML")))
            .collect()
    }

    #[test]
    fn baseline_is_enforced_everywhere_without_exemptions() {
        let vc = fixtures::vc(json!({}));
        let files = files(&fixtures::inputs(&vc));
        let config = &files[ADMISSION]["plugins"][0]["configuration"];
        assert_eq!(config["defaults"]["enforce"], "baseline");
        assert_eq!(config["defaults"]["enforce-version"], "latest");
        for list in ["usernames", "runtimeClasses", "namespaces"] {
            assert_eq!(
                config["exemptions"][list].as_sequence().map(Vec::len),
                Some(0)
            );
        }
    }

    #[test]
    fn the_privileged_opt_in_lifts_the_default() {
        let vc = fixtures::vc(json!({}));
        let mut inputs = fixtures::inputs(&vc);
        inputs.workloads = WorkloadPolicy::Privileged;
        let files = files(&inputs);
        assert_eq!(
            files[ADMISSION]["plugins"][0]["configuration"]["defaults"]["enforce"],
            "privileged"
        );
    }

    #[test]
    fn the_guard_comes_first_and_fails_closed() {
        let vc = fixtures::vc(json!({}));
        let files = files(&fixtures::inputs(&vc));
        let authorizers = files[AUTHORIZATION]["authorizers"].as_sequence().unwrap();
        let types: Vec<_> = authorizers
            .iter()
            .map(|a| a["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Webhook", "Node", "RBAC"]);
        let webhook = &authorizers[0]["webhook"];
        assert_eq!(webhook["failurePolicy"], "Deny");
        assert_eq!(
            webhook["matchConditions"][0]["expression"],
            guard::MATCH_CONDITION
        );
        assert_eq!(
            webhook["connectionInfo"]["kubeConfigFile"],
            format!("{DIR}/{GUARD_KUBECONFIG}")
        );
        let server = files[GUARD_KUBECONFIG]["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            server,
            format!("http://127.0.0.1:{}/authorize", guard::PORT)
        );
    }

    #[test]
    fn the_audit_policy_never_records_secrets_beyond_metadata() {
        for (level, sensitive) in [
            ("None", "None"),
            ("Metadata", "Metadata"),
            ("Request", "Metadata"),
            ("RequestResponse", "Metadata"),
        ] {
            let vc = fixtures::vc(json!({"apiServer": {"audit": {"level": level}}}));
            let files = files(&fixtures::inputs(&vc));
            let rules = files[AUDIT_POLICY]["rules"].as_sequence().unwrap().clone();
            assert_eq!(rules[0]["level"], "None");
            assert_eq!(rules[0]["nonResourceURLs"][0], "/livez*");
            assert_eq!(rules[1]["level"], sensitive, "{level}");
            assert_eq!(rules[1]["resources"][0]["resources"][0], "secrets");
            assert_eq!(rules[2]["level"], level);
        }
    }

    #[test]
    fn anonymous_requests_reach_only_health_endpoints() {
        let vc = fixtures::vc(json!({}));
        let files = files(&fixtures::inputs(&vc));
        let anonymous = &files[AUTHENTICATION]["anonymous"];
        assert_eq!(anonymous["enabled"], true);
        let paths: Vec<_> = anonymous["conditions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ANONYMOUS_PATHS);
    }
}
