//! The node's start: its kubeconfigs and configuration files, containerd
//! with every image imported, the registry and metadata stand-ins, then
//! the kubelet, kube-proxy and kube-router.

use super::config::{NodeFiles, write_configs};
use super::metadata::start_metadata;
use super::netns::in_node;
use super::registry::{nested_only, start_registry};
use super::settings::{node_ip, setting};
use crate::kubeconfig::write_client_kubeconfig;
use crate::paths;
use crate::process::{Lifetime, Proc, spawn};
use anyhow::{Result, bail};
use nestor_controllers::build::pki::KeyAndCert;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Starts containerd, imports the images, starts the kubelet and kube-proxy.
/// `bed_dir` is the test bed's directory (its `pki/` holds the CA).
pub fn start(
    bed_dir: &Path,
    server: &str,
    ca: &KeyAndCert,
    lifetime: Lifetime,
) -> Result<Vec<Proc>> {
    let files = NodeFiles::create(bed_dir)?;
    let kubeconfigs = NodeKubeconfigs::write(&files, server, ca)?;
    write_configs(&files, &kubeconfigs.kube_proxy)?;
    let mut procs = vec![start_containerd(&files, lifetime)?];
    wait_for_containerd(&files)?;
    let images = paths::images_dir()?;
    import_images(&files, &images)?;
    procs.push(start_registry(&images, &files.logs, lifetime)?);
    procs.push(start_metadata(&files, lifetime)?);
    procs.push(start_kubelet(&files, &kubeconfigs.kubelet, lifetime)?);
    procs.push(start_kube_proxy(&files, lifetime)?);
    procs.push(start_kube_router(
        &files,
        &kubeconfigs.kube_router,
        lifetime,
    )?);
    Ok(procs)
}

/// The kubeconfigs of the node's components, as program arguments.
struct NodeKubeconfigs {
    kubelet: String,
    kube_proxy: String,
    kube_router: String,
}

impl NodeKubeconfigs {
    /// Issues each component's client certificate from the test bed's CA
    /// and writes its kubeconfig into the node's directory.
    fn write(files: &NodeFiles, server: &str, ca: &KeyAndCert) -> Result<Self> {
        let kubeconfig = |user: &str, groups: &[&str], file: &str| -> Result<String> {
            let path = write_client_kubeconfig(&files.dir.join(file), server, ca, user, groups)?;
            Ok(path.display().to_string())
        };
        Ok(NodeKubeconfigs {
            kubelet: kubeconfig(
                &format!("system:node:{}", setting("NODE_NAME")),
                &["system:nodes"],
                "kubelet.kubeconfig",
            )?,
            kube_proxy: kubeconfig("system:kube-proxy", &[], "kube-proxy.kubeconfig")?,
            kube_router: kubeconfig("nestor-testbed:kube-router", &[], "kube-router.kubeconfig")?,
        })
    }
}

/// Starts containerd in the node's network namespace.
fn start_containerd(files: &NodeFiles, lifetime: Lifetime) -> Result<Proc> {
    // No registry is reachable, and none may be tried: every pull goes to a
    // dead proxy on loopback (all images are imported).
    let nowhere = "http://127.0.0.1:9".to_string();
    let (program, args) = in_node(
        Path::new("/usr/bin/containerd"),
        &["--config".into(), files.path("containerd/config.toml")],
    );
    spawn(
        "containerd",
        &program,
        &args,
        &[
            ("HTTP_PROXY", nowhere.clone()),
            ("HTTPS_PROXY", nowhere),
            ("NO_PROXY", String::new()),
        ],
        &files.log("containerd"),
        lifetime,
    )
}

/// `ctr args` against the node's containerd, in the Kubernetes namespace.
fn ctr(files: &NodeFiles, args: &[&str]) -> std::io::Result<Output> {
    Command::new("ctr")
        .args(["-a", &files.containerd_socket(), "-n", "k8s.io"])
        .args(args)
        .output()
}

/// Waits (up to 30 s) until containerd answers.
fn wait_for_containerd(files: &NodeFiles) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctr(files, &["version"]).is_ok_and(|o| o.status.success()) {
        if Instant::now() > deadline {
            bail!(
                "containerd did not start; see {}/containerd.log",
                files.logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Imports into containerd every image archive in `images` that the host's
/// node runs.
fn import_images(files: &NodeFiles, images: &Path) -> Result<()> {
    for entry in std::fs::read_dir(images)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        // What only nested nodes run is in the registry, not here.
        if path.extension().is_some_and(|e| e == "tar") && !nested_only(file) {
            let out = ctr(files, &["images", "import", &path.display().to_string()])?;
            if !out.status.success() {
                bail!(
                    "importing {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    Ok(())
}

/// Starts a program in the node's network namespace, logging to
/// `logs/<name>.log`.
fn start_in_node(
    name: &str,
    program: &Path,
    args: &[String],
    files: &NodeFiles,
    lifetime: Lifetime,
) -> Result<Proc> {
    let (program, args) = in_node(program, args);
    spawn(name, &program, &args, &[], &files.log(name), lifetime)
}

fn start_kubelet(files: &NodeFiles, kubeconfig: &str, lifetime: Lifetime) -> Result<Proc> {
    let name = setting("NODE_NAME");
    let args = [
        format!("--config={}", files.path("kubelet-config.yaml")),
        format!("--kubeconfig={kubeconfig}"),
        format!("--root-dir={}", files.path("kubelet")),
        format!("--cert-dir={}", files.path("kubelet/pki")),
        format!("--hostname-override={name}"),
        format!("--node-ip={}", node_ip()),
        "--v=1".into(),
    ];
    start_in_node(
        "kubelet",
        &paths::kube_binary("kubelet")?,
        &args,
        files,
        lifetime,
    )
}

fn start_kube_proxy(files: &NodeFiles, lifetime: Lifetime) -> Result<Proc> {
    let args = [
        format!("--config={}", files.path("kube-proxy-config.yaml")),
        "--v=1".into(),
    ];
    start_in_node(
        "kube-proxy",
        &paths::kube_binary("kube-proxy")?,
        &args,
        files,
        lifetime,
    )
}

/// NetworkPolicy, as a network plugin enforces it: pods' traffic to each
/// other, to the node and through it, is filtered.
fn start_kube_router(files: &NodeFiles, kubeconfig: &str, lifetime: Lifetime) -> Result<Proc> {
    let args = [
        format!("--kubeconfig={kubeconfig}"),
        format!("--hostname-override={}", setting("NODE_NAME")),
        "--run-firewall=true".into(),
        "--run-router=false".into(),
        "--run-service-proxy=false".into(),
        "--enable-cni=false".into(),
        "--enable-pod-egress=false".into(),
        "--health-port=0".into(),
        format!("--service-cluster-ip-range={}", setting("SERVICE_CIDR")),
        "--v=1".into(),
    ];
    start_in_node(
        "kube-router",
        &paths::kube_router_binary()?,
        &args,
        files,
        lifetime,
    )
}
