//! Process supervision: the node's daemons, started in order and stopped
//! in reverse, the commands it runs, and the reaper of orphans that the
//! daemons leave to this process (PID 1 of the node pod).

use anyhow::{Context as _, Result};
use std::collections::HashSet;
use std::time::Duration;
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// PIDs of the children this process waits for itself (daemons and the
/// commands it runs); the orphan reaper leaves them alone. Spawning and
/// registering happen under the lock, so a child can never be reaped
/// behind its waiter's back.
pub(crate) static OURS: std::sync::Mutex<Option<HashSet<u32>>> = std::sync::Mutex::new(None);

pub(crate) fn ours() -> std::sync::MutexGuard<'static, Option<HashSet<u32>>> {
    OURS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns a command and registers it as ours.
pub(crate) fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut guard = ours();
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        guard.get_or_insert_with(HashSet::new).insert(pid);
    }
    Ok(child)
}

/// Waits for a registered command's output, then forgets it.
pub(crate) async fn output(child: Child) -> std::io::Result<std::process::Output> {
    let pid = child.id();
    let out = child.wait_with_output().await;
    if let (Some(pid), Some(set)) = (pid, ours().as_mut()) {
        set.remove(&pid);
    }
    out
}

/// The daemons of a node, stopped in reverse order.
#[derive(Default)]
pub(crate) struct Daemons {
    children: Vec<(&'static str, Child)>,
}

impl Daemons {
    pub(crate) fn start(&mut self, name: &'static str, command: &mut Command) -> Result<()> {
        let child =
            spawn(command.kill_on_drop(true)).with_context(|| format!("starting {name}"))?;
        info!(daemon = name, pid = child.id(), "started");
        self.children.push((name, child));
        Ok(())
    }

    /// Waits until one daemon exits, reaping orphans (the node pod's PID 1
    /// inherits containerd's shims' children) meanwhile.
    pub(crate) async fn wait_any(&mut self) -> String {
        loop {
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return format!("{name} exited: {status}");
                }
            }
            reap_orphans();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub(crate) async fn stop(&mut self) {
        while let Some((name, mut child)) = self.children.pop() {
            if let Some(pid) = child.id() {
                // SAFETY: signalling a child we started and have not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
                Ok(_) => info!(daemon = name, "stopped"),
                Err(_) => {
                    warn!(daemon = name, "did not stop in 15 s; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// Reaps zombie children that are not ours to wait for (see `wait_any`).
pub(crate) fn reap_orphans() {
    let guard = ours();
    let empty = HashSet::new();
    let ours = guard.as_ref().unwrap_or(&empty);
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if ours.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<u32>().ok()),
        );
        if state == Some("Z") && ppid == Some(me) {
            // SAFETY: waiting for a zombie child of ours with WNOHANG.
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}
