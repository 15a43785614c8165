//! Stopping a test bed: its processes newest first, the node's changes to
//! the machine, and its directory (all of it, or all but the logs).

use super::TestBed;
use crate::node;
use crate::process::Proc;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

impl TestBed {
    /// Stops every process by PID, newest first; with a node, removes
    /// everything the node made on this machine.
    pub fn stop(&mut self) {
        stop_all(&mut self.processes, &self.dir, self.has_node);
        if self.has_node {
            node::unlock(&self.dir);
        }
        if self.detached {
            return;
        }
        if self.keep_logs {
            remove_all_but_logs(&self.dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Stops a detached test bed recorded in `dir` by `nestor-testbed up`.
    pub fn stop_recorded(dir: &Path) -> Result<usize> {
        let text = std::fs::read_to_string(dir.join("pids"))
            .with_context(|| format!("no test bed in {}", dir.display()))?;
        let mut procs: Vec<Proc> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(pid, name)| pid.parse().ok().map(|pid| Proc::from_pid(name, pid)))
            .collect();
        let n = procs.len();
        let has_node = dir.join("node").exists();
        stop_all(&mut procs, dir, has_node);
        if has_node {
            node::unlock(dir);
        }
        std::fs::remove_dir_all(dir)?;
        Ok(n)
    }

    /// Forgets the processes without stopping them (for `up`).
    pub fn detach(mut self) {
        self.processes.clear();
        self.detached = true;
        self.has_node = false;
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes everything in a stopped test bed's directory except `logs/`.
fn remove_all_but_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == "logs" {
            continue;
        }
        let _ = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// Stops processes newest first. The node's containers are removed while
/// containerd still runs, and the machine is cleaned after it stops.
fn stop_all(procs: &mut Vec<Proc>, dir: &Path, has_node: bool) {
    while let Some(mut p) = procs.pop() {
        if has_node
            && p.name == "containerd"
            && let Err(e) = node::network("down", &dir.join("node"))
        {
            eprintln!("nestor-testbed: {e:#}");
        }
        p.stop(Duration::from_secs(10));
        if has_node
            && p.name == "containerd"
            && let Err(e) = node::network("down", &dir.join("node"))
        {
            eprintln!("nestor-testbed: {e:#}");
        }
    }
    if has_node {
        // Also when the node never got as far as containerd.
        let _ = node::network("down", &dir.join("node"));
    }
}
