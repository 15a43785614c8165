//! The hashes Nestor keeps on its children: of a desired object (to skip
//! writes that would change nothing) and of the inputs a Secret was made
//! from (to issue it again only when they change).

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The hash of a desired object, as stored in its annotation.
pub fn desired_hash<K: Serialize>(obj: &K) -> String {
    // Serializing a k8s-openapi object cannot fail.
    let bytes = serde_json::to_vec(obj).expect("object serializes");
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// A stable hash of any list of strings, for "inputs changed" checks.
pub fn inputs_hash<I, S>(parts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_ref().as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let mut a = k8s_openapi::api::core::v1::ConfigMap::default();
        a.metadata.name = Some("x".into());
        let h1 = desired_hash(&a);
        assert_eq!(h1, desired_hash(&a.clone()));
        a.data = Some([("k".to_string(), "v".to_string())].into());
        assert_ne!(h1, desired_hash(&a));
    }

    #[test]
    fn inputs_are_separated() {
        assert_ne!(inputs_hash(["ab", "c"]), inputs_hash(["a", "bc"]));
        assert_eq!(inputs_hash(["a", "b"]), inputs_hash(["a", "b"]));
    }
}

/// Whether `live` holds everything `desired` says: every field of an
/// object, every element of a list (same length, in order), every value.
/// What the API server adds (defaults, status, metadata) is ignored; a
/// changed, dropped or added element of a desired list is not.
pub fn holds(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => desired
            .iter()
            .all(|(key, want)| live.get(key).is_some_and(|have| holds(have, want))),
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| holds(l, d))
        }
        _ => live == desired,
    }
}

#[cfg(test)]
mod holds_tests {
    use super::holds;
    use serde_json::json;

    #[test]
    fn live_objects_hold_what_was_asked_for_and_may_add_to_it() {
        let desired =
            json!({"spec": {"validations": [{"expression": "x"}], "failurePolicy": "Fail"}});
        let defaulted = json!({"spec": {"validations": [{"expression": "x", "messageExpression": ""}],
            "failurePolicy": "Fail", "matchPolicy": "Equivalent"}, "status": {}});
        assert!(holds(&defaulted, &desired));
        for changed in [
            json!({"spec": {"validations": [{"expression": "true"}], "failurePolicy": "Fail"}}),
            json!({"spec": {"validations": [], "failurePolicy": "Fail"}}),
            json!({"spec": {"validations": [{"expression": "x"}, {"expression": "y"}], "failurePolicy": "Fail"}}),
            json!({"spec": {"validations": [{"expression": "x"}], "failurePolicy": "Ignore"}}),
            json!({"spec": {"validations": [{"expression": "x"}]}}),
            json!({}),
        ] {
            assert!(!holds(&changed, &desired), "{changed}");
        }
    }
}
