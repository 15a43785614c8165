//! Checks of single fields, shared by both kinds. Each reports into
//! [`Problems`] under the field's path, and quotes at most a short excerpt
//! of a bad value.

use super::Problems;
use crate::model::flags;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube_quantity::ParsedQuantity;
use nestor_crds::{DNS_LABEL_PATTERN, IMAGE_PATTERN, REGISTRY_PATTERN};
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Longest name of a `VirtualCluster` or `NodePool`: children add suffixes
/// and must stay valid DNS labels.
pub const MAX_NAME_LEN: usize = 40;
/// Most `extraArgs` of one component.
pub const MAX_EXTRA_ARGS: usize = 32;
/// Longest value of one of `extraArgs`.
pub const MAX_ARG_VALUE: usize = 1024;
/// Resources a control-plane or node pod may request.
pub const RESOURCE_NAMES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| compiled(DNS_LABEL_PATTERN));
static IMAGE: LazyLock<Regex> = LazyLock::new(|| compiled(IMAGE_PATTERN));
static REGISTRY: LazyLock<Regex> = LazyLock::new(|| compiled(REGISTRY_PATTERN));

fn compiled(pattern: &str) -> Regex {
    // The patterns are constants of this program, tested below.
    Regex::new(pattern).expect("a valid pattern")
}

/// At most 40 characters of `value`, with control characters escaped, as a
/// message quotes it.
pub fn excerpt(value: &str) -> String {
    const MOST: usize = 40;
    let mut out: String = value
        .chars()
        .take(MOST)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > MOST {
        out.push('…');
    }
    out
}

/// A name of an object whose children's names derive from it: a DNS label
/// that starts with a letter, short enough for the suffixes.
pub(super) fn check_object_name(problems: &mut Problems, field: &str, name: &str) {
    if name.len() > MAX_NAME_LEN {
        problems.push(
            field,
            format!(
                "'{}' is longer than {MAX_NAME_LEN} characters (children add suffixes)",
                excerpt(name)
            ),
        );
    } else if !DNS_LABEL.is_match(name) {
        problems.push(
            field,
            format!(
                "'{}' is not a DNS label that starts with a letter (lowercase letters, digits and '-')",
                excerpt(name)
            ),
        );
    }
}

/// Whether `s` is a DNS subdomain (RFC 1123), with an optional leading `*.`
/// when `wildcard`.
pub(super) fn is_dns_name(s: &str, wildcard: bool) -> bool {
    let s = match s.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => s,
    };
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A Kubernetes label value: at most 63 characters, alphanumerics at both
/// ends, `-`, `_` and `.` between.
pub(super) fn is_label_value(value: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.is_empty()
        || (value.len() <= 63
            && alnum(value.chars().next())
            && alnum(value.chars().last())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// A Kubernetes label key (`[prefix/]name`), or why not.
pub(super) fn label_key_problem(key: &str) -> Option<&'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns_name(p, false)) {
        return Some("its prefix is not a DNS subdomain");
    }
    if name.is_empty() || name.len() > 63 || !is_label_value(name) {
        return Some(
            "its name is not 1 to 63 alphanumerics, '-', '_' or '.' between alphanumerics",
        );
    }
    None
}

/// A registry prefix: a host, an optional port and path; no scheme.
pub(super) fn check_registry(problems: &mut Problems, field: &str, registry: &str) {
    if registry.len() > 255 || !REGISTRY.is_match(registry) {
        problems.push(
            field,
            format!(
                "'{}' is not a registry: a lowercase host with an optional port and path, no scheme",
                excerpt(registry)
            ),
        );
    }
}

/// An image reference.
pub(super) fn check_image(problems: &mut Problems, field: &str, image: &str) {
    if image.len() > 512 || !IMAGE.is_match(image) {
        problems.push(
            field,
            format!(
                "'{}' is not an image reference: a lowercase repository, an optional tag and digest",
                excerpt(image)
            ),
        );
    }
}

/// Parses a quantity, or says why not under `field`.
pub(super) fn quantity(
    problems: &mut Problems,
    field: &str,
    value: &str,
) -> Option<ParsedQuantity> {
    match ParsedQuantity::try_from(value) {
        Ok(q) => Some(q),
        Err(_) => {
            problems.push(
                field,
                format!("'{}' is not a Kubernetes quantity", excerpt(value)),
            );
            None
        }
    }
}

/// Requests and limits a pod can be given: known resources, quantities
/// that parse and are not negative, each limit at least its request, no
/// resource claims.
pub(super) fn check_resources(
    problems: &mut Problems,
    field: &str,
    resources: Option<&ResourceRequirements>,
) {
    let Some(resources) = resources else {
        return;
    };
    if resources.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        problems.push(
            &format!("{field}.claims"),
            "resource claims are not supported for Nestor's pods",
        );
    }
    let mut parsed = |part: &str,
                      map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        let mut out = BTreeMap::new();
        for (name, value) in map.into_iter().flatten() {
            let path = format!("{field}.{part}.{name}");
            if !RESOURCE_NAMES.contains(&name.as_str()) {
                problems.push(
                    &format!("{field}.{part}"),
                    format!(
                        "'{}' is not a resource Nestor's pods take (one of {})",
                        excerpt(name),
                        RESOURCE_NAMES.join(", ")
                    ),
                );
                continue;
            }
            let Some(q) = quantity(problems, &path, &value.0) else {
                continue;
            };
            if q < ParsedQuantity::default() {
                problems.push(&path, format!("'{}' is negative", excerpt(&value.0)));
                continue;
            }
            out.insert(name.clone(), (q, value.0.clone()));
        }
        out
    };
    let requests = parsed("requests", resources.requests.as_ref());
    let limits = parsed("limits", resources.limits.as_ref());
    for (name, (limit, limit_text)) in &limits {
        if let Some((request, request_text)) = requests.get(name)
            && limit < request
        {
            problems.push(
                &format!("{field}.limits.{name}"),
                format!(
                    "{} is below its request ({})",
                    excerpt(limit_text),
                    excerpt(request_text)
                ),
            );
        }
    }
}

/// Requests and limits no higher than the platform's ceiling (`max`, by
/// resource; the Helm value `security.nodePodLimits`).
pub(super) fn check_within(
    problems: &mut Problems,
    field: &str,
    resources: Option<&ResourceRequirements>,
    max: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) {
    let Some(resources) = resources else {
        return;
    };
    for (part, map) in [
        ("requests", resources.requests.as_ref()),
        ("limits", resources.limits.as_ref()),
    ] {
        for (name, value) in map.into_iter().flatten() {
            let (Some(ceiling), Ok(asked)) =
                (max.get(name), ParsedQuantity::try_from(value.0.as_str()))
            else {
                continue;
            };
            if ParsedQuantity::try_from(ceiling.0.as_str()).is_ok_and(|c| asked > c) {
                problems.push(
                    &format!("{field}.{part}.{name}"),
                    format!(
                        "{} is above what this platform lets a node pod use ({}, Helm value security.nodePodLimits)",
                        excerpt(&value.0),
                        excerpt(&ceiling.0)
                    ),
                );
            }
        }
    }
}

/// A component's `extraArgs`: bounded, one line each, and only flags a
/// tenant may set; a flag Nestor sets, or any other, is refused by name.
pub(super) fn check_extra_args(
    problems: &mut Problems,
    field: &str,
    args: &BTreeMap<String, String>,
    managed: &[&str],
    allowed: &[&str],
) {
    if args.len() > MAX_EXTRA_ARGS {
        problems.push(
            field,
            format!("{} flags; at most {MAX_EXTRA_ARGS} may be set", args.len()),
        );
    }
    for (key, value) in args {
        let shown = excerpt(key);
        if key.starts_with('-') {
            problems.push(
                field,
                format!(
                    "write '{}' without leading dashes",
                    excerpt(key.trim_start_matches('-'))
                ),
            );
        } else if key.is_empty()
            || key.len() > 63
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.push(
                field,
                format!("'{shown}' is not a flag name (lowercase letters, digits and dashes)"),
            );
        } else if managed.contains(&key.as_str()) {
            problems.push(
                field,
                // A flag name (at most 63 safe characters) is shown whole.
                format!("'{key}' is set by Nestor and cannot be overridden"),
            );
        } else if !flags::allows(allowed, key) {
            problems.push(
                field,
                format!(
                    "'{key}' is not a flag a tenant may set (it may change authentication, authorization, admission, the datastore or files Nestor relies on); allowed: {}",
                    allowed.join(", ")
                ),
            );
        } else if value.len() > MAX_ARG_VALUE {
            problems.push(
                &format!("{field}.{key}"),
                format!(
                    "the value has {} characters; at most {MAX_ARG_VALUE}",
                    value.len()
                ),
            );
        } else if value.chars().any(char::is_control) {
            problems.push(
                &format!("{field}.{key}"),
                format!(
                    "'{}' holds a control character (a newline, say)",
                    excerpt(value)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("a\nb"), "a\\nb");
        let long = "x".repeat(1_000_000);
        assert_eq!(excerpt(&long).chars().count(), 41);
    }

    #[test]
    fn patterns_compile_and_match_what_they_should() {
        for good in [
            "registry.k8s.io",
            "localhost:5000/mirror",
            "mirror.example.com/k8s",
        ] {
            assert!(REGISTRY.is_match(good), "{good}");
        }
        for bad in [
            "https://r.example",
            "R.example",
            "r example",
            "",
            "r.example/",
        ] {
            assert!(!REGISTRY.is_match(bad), "{bad}");
        }
        for good in [
            "busybox",
            "busybox:1.35",
            "registry.k8s.io/etcd:3.6.5-0",
            "localhost:5000/a/b:V1_x",
            "r.example/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(IMAGE.is_match(good), "{good}");
        }
        for bad in ["Busybox", "http://r/a", "a b", "a:", "a@sha256:xyz"] {
            assert!(!IMAGE.is_match(bad), "{bad}");
        }
        assert!(DNS_LABEL.is_match("demo-1"));
        for bad in ["1demo", "demo.x", "demo-", "Demo"] {
            assert!(!DNS_LABEL.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn label_values_follow_kubernetes() {
        assert!(is_label_value("") && is_label_value("a.b_c-d"));
        for bad in ["a,b=c", "-a", "a-", &"a".repeat(64), "a b"] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
