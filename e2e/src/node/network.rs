//! The node's share of the machine: the links, routes and iptables rules
//! `e2e/testbed/node-network.sh` makes, the lock that keeps a second node
//! off this machine, and the firewall the NetworkPolicy enforcer programs.

use super::netns::node_command;
use crate::paths;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    paths::repo_root().join("e2e/testbed/node-network.sh")
}

/// Runs `node-network.sh ACTION DIR`.
pub fn network(action: &str, dir: &Path) -> Result<()> {
    let status = Command::new("bash")
        .arg(script())
        .arg(action)
        .arg(dir)
        .status()
        .context("running node-network.sh")?;
    if !status.success() {
        bail!("node-network.sh {action} failed");
    }
    Ok(())
}

/// Lock against a second node on this machine (links and iptables are
/// machine-wide).
fn lock_path() -> PathBuf {
    PathBuf::from("/run/nestor-testbed-node.lock")
}

/// Takes the machine-wide node lock for `dir`.
pub fn lock(dir: &Path) -> Result<()> {
    if let Ok(holder) = std::fs::read_to_string(lock_path()) {
        let holder = PathBuf::from(holder.trim());
        let alive = runs(&holder);
        if alive && holder != dir {
            bail!(
                "another test bed with a node runs in {}; stop it first (e2e/down.sh or nestor-testbed down)",
                holder.display()
            );
        }
        if !alive {
            // A test bed that died without cleaning up: clean up after it.
            eprintln!(
                "nestor-testbed: cleaning up after a dead test bed in {}",
                holder.display()
            );
            network("down", &holder.join("node"))?;
        }
    }
    std::fs::write(lock_path(), dir.display().to_string())?;
    Ok(())
}

/// Whether a process of the test bed in `dir` (its `pids` file) still runs.
fn runs(dir: &Path) -> bool {
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    pids.lines().any(|l| {
        let pid = l
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<i32>().ok());
        // SAFETY: signal 0 only checks that the process exists.
        pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0)
    })
}

/// Releases the node lock if `dir` holds it.
pub fn unlock(dir: &Path) {
    if std::fs::read_to_string(lock_path()).is_ok_and(|h| Path::new(h.trim()) == dir) {
        let _ = std::fs::remove_file(lock_path());
    }
}

/// Waits until kube-router has programmed the node's firewall (it does so
/// once its caches hold every object it watches).
pub fn wait_for_policy_enforcement(logs: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out =
            node_command("iptables", &["-t", "filter", "-S", "KUBE-ROUTER-FORWARD"]).output()?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "kube-router did not program the node's firewall within 60s; see {}/kube-router.log",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
