//! The node's settings: `e2e/testbed/node.env`, which the shell scripts
//! that set up the node's network read too.

const NODE_ENV: &str = include_str!("../../testbed/node.env");

/// A value of `e2e/testbed/node.env`.
pub fn setting(key: &str) -> &'static str {
    NODE_ENV
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("node.env has no {key}"))
}

/// Where a node-mode test bed's API server (and its registry) listen: the
/// machine's end of the link to the node.
pub fn host_ip() -> &'static str {
    setting("HOST_IP")
}

/// The node's address, in its own network namespace.
pub fn node_ip() -> &'static str {
    setting("NODE_IP")
}
