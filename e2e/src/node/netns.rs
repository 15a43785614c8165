//! Programs run in a network namespace of the node's.

use super::settings::setting;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `program args` run in network namespace `netns` (`nsenter` execs it, so
/// the PID is the program's).
pub(super) fn in_netns(netns: &str, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    let mut all = vec![
        format!("--net=/run/netns/{netns}"),
        "--".to_string(),
        program.display().to_string(),
    ];
    all.extend_from_slice(args);
    (PathBuf::from("/usr/bin/nsenter"), all)
}

/// `program args` run in the node's network namespace.
pub(super) fn in_node(program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    in_netns(setting("NODE_NETNS"), program, args)
}

/// A command run in the node's network namespace, where every packet of
/// its pods passes (to run iptables there, or to connect as the node).
pub fn node_command(program: &str, args: &[&str]) -> Command {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (nsenter, all) = in_node(Path::new(program), &args);
    let mut command = Command::new(nsenter);
    command.args(all);
    command
}
