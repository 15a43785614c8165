//! The API server's audit log: the policy that records the benchmark's
//! clients, and the operator's requests counted from it.

use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The operator's user, whose requests the audit log records.
pub(crate) const OPERATOR_USER: &str = "nestor-operator";
/// The floor's client, audited like the operator so that both phases pay
/// the API server's audit logging.
pub(crate) const FLOOR_USER: &str = "nestor-floor";

/// The audit policy: the benchmark's clients at the Metadata level, nobody
/// else.
pub(crate) fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  users: [\"{OPERATOR_USER}\", \"{FLOOR_USER}\"]\n- level: None\n"
    )
}

/// Requests by verb (and, with `by_resource`, resource) in the audit log,
/// from the given byte offset.
pub(crate) fn audit_counts(
    path: &Path,
    from: u64,
    by_resource: bool,
) -> Result<(BTreeMap<String, u64>, u64)> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in bytes[from as usize..]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let Ok(event) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if event["user"]["username"].as_str() != Some(OPERATOR_USER) {
            continue;
        }
        let stage = event["stage"].as_str().unwrap_or_default();
        let verb = event["verb"].as_str().unwrap_or_default().to_string();
        // A watch is counted when it starts; everything else when it ends.
        let counted = if verb == "watch" {
            stage == "ResponseStarted"
        } else {
            stage == "ResponseComplete"
        };
        if counted {
            let key = if by_resource {
                let r = &event["objectRef"];
                let sub = r["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!("{verb} {}{sub}", r["resource"].as_str().unwrap_or_default())
            } else {
                verb
            };
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    Ok((counts, bytes.len() as u64))
}
