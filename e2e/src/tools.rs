//! kubectl and helm, run as a person would.

use crate::paths;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The outcome of a command: exit success, stdout, stderr.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

fn run(program: &Path, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Result<Run> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output()?;
    Ok(Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
    })
}

/// `kubectl --kubeconfig K args...`, optionally fed `stdin`.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<Run> {
    let config = kubeconfig.display().to_string();
    // A discovery cache per test bed: ports are reused between runs.
    let cache = kubeconfig
        .parent()
        .unwrap_or(Path::new("."))
        .join("kube-cache")
        .display()
        .to_string();
    let cache_flag = format!("--cache-dir={cache}");
    let mut all = vec!["--kubeconfig", config.as_str(), cache_flag.as_str()];
    all.extend_from_slice(args);
    run(&paths::tool("kubectl")?, &all, &[], stdin)
}

/// Like [`kubectl`], failing unless the command succeeds.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let out = kubectl(kubeconfig, args, stdin)?;
    if !out.ok {
        bail!("kubectl {} failed: {}", args.join(" "), out.stderr.trim());
    }
    Ok(out.stdout)
}

/// `helm args...`.
pub fn helm(args: &[&str]) -> Result<Run> {
    let home = std::env::temp_dir().join("nestor-helm-home");
    let home = home.display().to_string();
    run(
        &paths::tool("helm")?,
        args,
        &[
            ("HELM_CACHE_HOME", &home),
            ("HELM_CONFIG_HOME", &home),
            ("HELM_DATA_HOME", &home),
        ],
        None,
    )
}

/// A `kubectl port-forward` to a pod's port, stopped (by its PID) when
/// dropped. Port-forwarding enters the pod's own network namespace through
/// its kubelet, as an administrator reaches a pod that NetworkPolicy
/// closes to other pods.
pub struct PortForward {
    child: std::process::Child,
    /// Its standard output, kept open: kubectl dies of a closed pipe when
    /// it prints its next line.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
    /// The local port on 127.0.0.1.
    pub port: u16,
}

impl PortForward {
    pub fn start(kubeconfig: &Path, namespace: &str, pod: &str, port: u16) -> Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(paths::tool("kubectl")?)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["port-forward", "-n", namespace, &format!("pod/{pod}")])
            .arg(format!(":{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // "Forwarding from 127.0.0.1:PORT -> 2379"
        let local = line
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok());
        let mut forward = Self {
            child,
            _stdout: stdout,
            port: 0,
        };
        match local {
            Some(p) => {
                forward.port = p;
                Ok(forward)
            }
            None => bail!("kubectl port-forward to {namespace}/{pod}:{port} printed {line:?}"),
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
