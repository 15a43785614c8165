//! Pure decisions about a pool's Nodes inside its nested cluster: which
//! are Ready, which node pod a Node is, which pods a drain moves, and which
//! serving certificate requests Nestor approves.
//!
//! Nestor approves a kubelet's serving certificate request only when it is
//! for a node pod of the pool, made by that node's own credentials, and names
//! nothing but the node and its pod IP on the host. The nested
//! controller-manager approves client certificates itself (TLS bootstrap).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{self, Timestamp};
use std::net::IpAddr;

/// Set on a Node that Nestor cordoned to drain it; the value is when.
pub const DRAINED_BY: &str = "nestor.dev/drain";
/// How long a drain may wait for pods to leave before the node goes anyway
/// (a PodDisruptionBudget that never allows an eviction must not hold a
/// scale-down forever).
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// How long after a node pod starts Nestor looks for its kubelet's serving
/// certificate request. A new pod (with a new `emptyDir`, so no certificate)
/// asks within seconds of joining; the controller-manager deletes approved
/// requests an hour after they are issued, so an old node's absent request
/// says nothing.
pub const SERVING_CERT_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// The node pods among `pods` (name, start time) that started within
/// [`SERVING_CERT_WINDOW`] of `now` and whose kubelet has no approved
/// serving certificate request made since: until it has one, the API
/// server cannot verify the kubelet, and `logs`, `exec` and `port-forward`
/// to that node fail. Pure.
pub fn without_serving_certificate(
    pods: &[(String, Timestamp)],
    csrs: &[CertificateSigningRequest],
    now: Timestamp,
) -> Vec<String> {
    let window = jiff::SignedDuration::try_from(SERVING_CERT_WINDOW).unwrap_or_default();
    pods.iter()
        .filter(|(_, started)| now.duration_since(*started) < window)
        .filter(|(node, started)| {
            let user = format!("system:node:{node}");
            !csrs.iter().any(|csr| {
                csr.spec.signer_name == KUBELET_SERVING_SIGNER
                    && csr.spec.username.as_deref() == Some(user.as_str())
                    && csr
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .is_some_and(|t| t.0 >= *started)
                    && csr
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Approved"))
            })
        })
        .map(|(node, _)| node.clone())
        .collect()
}

/// Ready Nodes among `nodes`.
pub fn ready_count(nodes: &[Node]) -> i32 {
    nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count() as i32
}

/// Whether a Node reports `ip` as its InternalIP: its kubelet is the one
/// in the node pod of that address.
pub fn reports_address(node: &Node, ip: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .is_some_and(|a| a.iter().any(|a| a.type_ == "InternalIP" && a.address == ip))
}

/// A node pod's ordinal, from its name (`<statefulset>-<ordinal>`).
pub fn ordinal(statefulset: &str, node: &str) -> Option<i32> {
    let digits = node.strip_prefix(statefulset)?.strip_prefix('-')?;
    let n: i32 = digits.parse().ok()?;
    // As the StatefulSet writes it: no sign, no leading zero.
    (n.to_string() == digits).then_some(n)
}

/// What the cache holds of a pool's StatefulSet, for its node replacement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet {
    /// The hash of the pod template it was last given ([`NODE_TEMPLATE`]).
    pub template: Option<String>,
    pub partition: i32,
    /// Its controller has seen the latest spec.
    pub observed: bool,
    /// Pods of the current template.
    pub updated: i32,
    /// Pods of an earlier template remain (its revisions differ).
    pub rolling: bool,
}

/// Annotation on a pool's StatefulSet: the hash of its pod template.
pub const NODE_TEMPLATE: &str = "nestor.dev/node-template";

/// How a pool's node pods are replaced: the StatefulSet's partition now,
/// and the node to drain before the partition may go one lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRollout {
    pub partition: i32,
    pub drain: Option<i32>,
}

/// Replaces a pool's node pods one at a time, highest ordinal first: a new
/// template is written with the partition at `replicas` (no pod changes);
/// then, each time every replaced node is Ready again, the next node is
/// cordoned and drained, and only then the partition lowered past it, so
/// that the StatefulSet replaces that one pod. `ready(ordinal)` says
/// whether the nested Node of that ordinal is Ready. Pure.
pub fn node_rollout(
    replicas: i32,
    cached: Option<&NodeSet>,
    template: &str,
    ready: impl Fn(i32) -> bool,
) -> NodeRollout {
    let hold = |partition| NodeRollout {
        partition,
        drain: None,
    };
    let Some(set) = cached else {
        // A new pool: every pod starts from the template.
        return hold(0);
    };
    if set.template.as_deref() != Some(template) {
        return hold(replicas);
    }
    if !set.observed {
        return hold(set.partition);
    }
    if !set.rolling || set.partition == 0 {
        return hold(0);
    }
    let partition = set.partition.min(replicas);
    // Only the replaced nodes must be Ready: an old one that is not (a
    // pod of a broken template, say) has nothing to drain, and replacing
    // it is what mends it.
    let replaced_ready = set.updated >= replicas - partition && (partition..replicas).all(&ready);
    NodeRollout {
        partition,
        drain: replaced_ready.then_some(partition - 1),
    }
}

/// What to do with a certificate signing request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a pending kubelet serving request of this pool's nodes.
    Skip,
    /// A pool node's request: approve when the pod IP is known to be this.
    Check {
        node: String,
    },
    Deny(String),
}

/// First look at a request: whether it is a pending serving request made by
/// one of the pool's nodes for itself. Pure.
pub fn triage(csr: &CertificateSigningRequest, statefulset: &str) -> Verdict {
    let decided = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
        });
    if decided || csr.spec.signer_name != KUBELET_SERVING_SIGNER {
        return Verdict::Skip;
    }
    let Some(node) = csr
        .spec
        .username
        .as_deref()
        .and_then(|u| u.strip_prefix("system:node:"))
    else {
        return Verdict::Skip;
    };
    if ordinal(statefulset, node).is_none() {
        return Verdict::Skip;
    }
    let in_nodes = csr
        .spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g == "system:nodes"));
    if !in_nodes {
        return Verdict::Deny(format!("requested by {node} outside system:nodes"));
    }
    Verdict::Check {
        node: node.to_string(),
    }
}

/// Whether the request itself asks for exactly what the node may have: its
/// name as subject and DNS name, its pod IP as the only IP, and serving
/// usages. Pure.
pub fn check_request(
    csr: &CertificateSigningRequest,
    node: &str,
    pod_ip: IpAddr,
) -> Result<(), String> {
    let pem = String::from_utf8(csr.spec.request.0.clone())
        .map_err(|_| "the request is not PEM".to_string())?;
    let params = rcgen::CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|_| "the request does not parse".to_string())?;
    let expected_cn = format!("system:node:{node}");
    let cn = params
        .params
        .distinguished_name
        .iter()
        .find(|(t, _)| **t == rcgen::DnType::CommonName)
        .map(|(_, v)| dn_text(v));
    if cn.as_deref() != Some(expected_cn.as_str()) {
        return Err(format!("the subject is not {expected_cn}"));
    }
    for san in &params.params.subject_alt_names {
        match san {
            rcgen::SanType::DnsName(name) if name.as_str() == node => {}
            rcgen::SanType::IpAddress(ip) if *ip == pod_ip => {}
            rcgen::SanType::DnsName(name) => {
                return Err(format!("it names host {} besides {node}", name.as_str()));
            }
            rcgen::SanType::IpAddress(ip) => {
                return Err(format!("it names IP {ip}, not the node pod's {pod_ip}"));
            }
            _ => return Err("it has an unexpected subject alternative name".into()),
        }
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let allowed = ["digital signature", "key encipherment", "server auth"];
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("it asks for usage '{u}'"));
    }
    if !usages.iter().any(|u| u == "server auth") {
        return Err("it does not ask for server auth".into());
    }
    Ok(())
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_string(),
        _ => String::new(),
    }
}

/// Whether draining moves this pod: not a DaemonSet's, not a static pod,
/// not finished.
pub fn evictable(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet");
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !daemon && !mirror && !finished
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestSpec,
        CertificateSigningRequestStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn csr(node: &str, dns: &[&str], ips: &[&str]) -> CertificateSigningRequest {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for ip in ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(ip.parse().unwrap()));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: KUBELET_SERVING_SIGNER.into(),
                username: Some(format!("system:node:{node}")),
                groups: Some(vec!["system:nodes".into(), "system:authenticated".into()]),
                usages: Some(vec!["digital signature".into(), "server auth".into()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_the_pools_pending_serving_requests_are_considered() {
        let ok = csr("workers-node-1", &["workers-node-1"], &["10.88.0.7"]);
        assert_eq!(
            triage(&ok, "workers-node"),
            Verdict::Check {
                node: "workers-node-1".into()
            }
        );
        assert_eq!(triage(&ok, "other-node"), Verdict::Skip);
        let mut client = ok.clone();
        client.spec.signer_name = "kubernetes.io/kube-apiserver-client-kubelet".into();
        assert_eq!(triage(&client, "workers-node"), Verdict::Skip);
        let mut decided = ok.clone();
        decided.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(triage(&decided, "workers-node"), Verdict::Skip);
        let mut outsider = ok.clone();
        outsider.spec.groups = Some(vec!["system:authenticated".into()]);
        assert!(matches!(
            triage(&outsider, "workers-node"),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn requests_must_name_only_the_node_and_its_pod_ip() {
        let ip: IpAddr = "10.88.0.7".parse().unwrap();
        let ok = csr("workers-node-1", &["workers-node-1"], &["10.88.0.7"]);
        assert_eq!(check_request(&ok, "workers-node-1", ip), Ok(()));
        let other_ip = csr("workers-node-1", &["workers-node-1"], &["10.88.0.8"]);
        assert!(
            check_request(&other_ip, "workers-node-1", ip)
                .unwrap_err()
                .contains("10.88.0.8")
        );
        let other_host = csr("workers-node-1", &["kubernetes.default"], &[]);
        assert!(
            check_request(&other_host, "workers-node-1", ip)
                .unwrap_err()
                .contains("kubernetes.default")
        );
        let other_subject = csr("workers-node-2", &["workers-node-1"], &[]);
        assert!(check_request(&other_subject, "workers-node-1", ip).is_err());
        let mut client_usage = ok.clone();
        client_usage.spec.usages = Some(vec!["client auth".into()]);
        assert!(check_request(&client_usage, "workers-node-1", ip).is_err());
    }

    #[test]
    fn node_pods_are_replaced_one_at_a_time_after_a_drain() {
        let all = |_: i32| true;
        let set = |template: &str, partition, updated, rolling| NodeSet {
            template: Some(template.into()),
            partition,
            observed: true,
            updated,
            rolling,
        };
        let hold = |partition| NodeRollout {
            partition,
            drain: None,
        };
        // A new pool starts every pod; a settled one keeps partition 0.
        assert_eq!(node_rollout(3, None, "a", all), hold(0));
        assert_eq!(
            node_rollout(3, Some(&set("a", 0, 3, false)), "a", all),
            hold(0)
        );
        // A new template replaces nothing yet.
        assert_eq!(
            node_rollout(3, Some(&set("a", 0, 3, false)), "b", all),
            hold(3)
        );
        // Its controller has not seen it: wait.
        let mut unseen = set("b", 3, 0, true);
        unseen.observed = false;
        assert_eq!(node_rollout(3, Some(&unseen), "b", all), hold(3));
        // Nothing replaced yet: drain node 2 first.
        let start = set("b", 3, 0, true);
        assert_eq!(
            node_rollout(3, Some(&start), "b", all),
            NodeRollout {
                partition: 3,
                drain: Some(2)
            }
        );
        // Node 2 is being replaced: not ready yet, so nothing else moves.
        assert_eq!(
            node_rollout(3, Some(&set("b", 2, 0, true)), "b", all),
            hold(2)
        );
        // Its pod is ready but its Node is not.
        let node_2_down = |i: i32| i != 2;
        assert_eq!(
            node_rollout(3, Some(&set("b", 2, 1, true)), "b", node_2_down),
            hold(2)
        );
        // Ready again: node 1 is next.
        assert_eq!(
            node_rollout(3, Some(&set("b", 2, 1, true)), "b", all),
            NodeRollout {
                partition: 2,
                drain: Some(1)
            }
        );
        // A broken node below the partition does not hold the others up.
        let node_1_broken = |i: i32| i != 1;
        assert_eq!(
            node_rollout(3, Some(&set("c", 3, 0, true)), "c", node_1_broken),
            NodeRollout {
                partition: 3,
                drain: Some(2)
            }
        );
        assert_eq!(
            node_rollout(3, Some(&set("c", 2, 1, true)), "c", node_1_broken),
            NodeRollout {
                partition: 2,
                drain: Some(1)
            }
        );
        // The last pod goes at partition 0; then the set settles.
        assert_eq!(
            node_rollout(3, Some(&set("b", 0, 2, true)), "b", all),
            hold(0)
        );
        // A template changed again mid-way starts over from the top.
        assert_eq!(
            node_rollout(3, Some(&set("b", 1, 2, true)), "c", all),
            hold(3)
        );
    }

    #[test]
    fn ordinals_and_evictable_pods() {
        assert_eq!(ordinal("workers-node", "workers-node-3"), Some(3));
        assert_eq!(ordinal("workers-node", "workers-node-x"), None);
        assert_eq!(ordinal("workers-node", "workers-nodes-1"), None);
        assert_eq!(ordinal("workers-node", "workers-node-01"), None);
        assert_eq!(ordinal("workers-node", "workers-node-+1"), None);
        let mut pod = Pod::default();
        assert!(evictable(&pod));
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                kind: "DaemonSet".into(),
                ..Default::default()
            },
        ]);
        assert!(!evictable(&pod));
    }

    #[test]
    fn a_new_node_pod_waits_until_its_own_request_is_approved() {
        let t = |s: &str| -> Timestamp { s.parse().unwrap() };
        let approved = |node: &str, at: &str| {
            let mut c = csr(node, &[node], &[]);
            c.metadata.creation_timestamp = Some(Time(t(at)));
            c.status = Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            c
        };
        let now = t("2026-01-01T12:00:00Z");
        let pods = vec![
            // Recreated a minute ago; its request is from its previous pod.
            ("w-node-0".to_string(), t("2026-01-01T11:59:00Z")),
            // Recreated a minute ago, and approved since.
            ("w-node-1".to_string(), t("2026-01-01T11:59:00Z")),
            // Started long ago: its approved request may be gone.
            ("w-node-2".to_string(), t("2026-01-01T10:00:00Z")),
        ];
        let mut pending = csr("w-node-0", &["w-node-0"], &[]);
        pending.metadata.creation_timestamp = Some(Time(t("2026-01-01T11:59:30Z")));
        let csrs = vec![
            approved("w-node-0", "2026-01-01T11:00:00Z"),
            pending,
            approved("w-node-1", "2026-01-01T11:59:05Z"),
        ];
        assert_eq!(without_serving_certificate(&pods, &csrs, now), ["w-node-0"]);
    }
}
