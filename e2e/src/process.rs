//! Child processes tracked by PID and stopped by PID.

use anyhow::{Context, Result};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a process relates to the one that starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the kernel when the starting thread exits (tests).
    Tied,
    /// In a session of its own, outliving the starter (`nestor-testbed up`).
    Detached,
}

/// A started process: its name and PID.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub pid: i32,
    child: Option<std::process::Child>,
}

/// Starts `program args`, with output to `log`.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    envs: &[(&str, String)],
    log: &Path,
    lifetime: Lifetime,
) -> Result<Proc> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            match lifetime {
                Lifetime::Tied => {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                Lifetime::Detached => {
                    libc::setsid();
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Proc {
        name: name.into(),
        pid: child.id() as i32,
        child: Some(child),
    })
}

impl Proc {
    /// A process known only by its PID (from a state file).
    pub fn from_pid(name: &str, pid: i32) -> Self {
        Self {
            name: name.into(),
            pid,
            child: None,
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(self.pid, 0) == 0 }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on a PID we started.
        unsafe {
            libc::kill(self.pid, signal);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        if !self.alive() {
            self.reap();
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                self.reap();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal(libc::SIGKILL);
        self.reap();
    }

    /// SIGKILL at once, as a crash would.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.reap();
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        } else {
            let deadline = Instant::now() + Duration::from_secs(5);
            // SAFETY: existence check only.
            while unsafe { libc::kill(self.pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
