//! The test bed's registry: the images nested nodes pull (through their
//! containerd's mirrors), served from the machine's end of the node's
//! link, and the Helm values that point a platform at it.

use super::settings::{host_ip, setting};
use crate::paths;
use crate::process::{Lifetime, Proc, spawn};
use anyhow::{Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The stand-in for upstream's tool images (`tools-rootfs.sh`: busybox,
/// bash, dig, curl, netcat, hping3, iperf3), in the test bed's registry.
pub const TOOLS_IMAGE: &str = "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7";

/// Images nested nodes pull (through their containerd's mirrors): the
/// sandbox image, the test workloads', metrics-server and upstream's
/// Conformance images (`e2e-test-images/<name>`, and the etcd its
/// aggregator test runs).
struct RegistryImage {
    /// The archive's file name prefix.
    prefix: &'static str,
    /// The repository path in the test bed's registry.
    repo: &'static str,
    /// Whether the next `_`-separated part of the name is the repository's
    /// last segment.
    named: bool,
    /// Whether the host's own node runs it too (and imports the archive).
    host_too: bool,
}

const REGISTRY_IMAGES: &[RegistryImage] = &[
    RegistryImage {
        prefix: "registry.k8s.io_pause_",
        repo: "pause",
        named: false,
        host_too: true,
    },
    RegistryImage {
        prefix: "images.nestor.test_busybox_",
        repo: "busybox",
        named: false,
        // The network tests' control pods on the host.
        host_too: true,
    },
    RegistryImage {
        prefix: "registry.k8s.io_metrics-server_metrics-server_",
        repo: "metrics-server/metrics-server",
        named: false,
        host_too: false,
    },
    RegistryImage {
        prefix: "registry.k8s.io_e2e-test-images_",
        repo: "e2e-test-images",
        named: true,
        host_too: false,
    },
    RegistryImage {
        prefix: "registry.k8s.io_etcd_",
        repo: "etcd",
        named: false,
        host_too: true,
    },
];

/// Whether only nested nodes run an archive's image, so the host's node
/// does not import it.
pub(super) fn nested_only(file: &str) -> bool {
    REGISTRY_IMAGES
        .iter()
        .any(|i| !i.host_too && file.starts_with(i.prefix))
}

/// The repository and tag an image archive is pushed as, or `None` for
/// archives nested nodes never pull.
fn registry_target(file: &str) -> Option<(String, String)> {
    let image = REGISTRY_IMAGES
        .iter()
        .find(|i| file.starts_with(i.prefix))?;
    let rest = file[image.prefix.len()..].trim_end_matches(".tar");
    if image.named {
        let (name, tag) = rest.split_once('_')?;
        Some((format!("{}/{name}", image.repo), tag.to_string()))
    } else {
        Some((image.repo.to_string(), rest.to_string()))
    }
}

/// The test bed's registry address (the machine's end of the node's link).
pub fn registry() -> String {
    format!("{}:{}", host_ip(), setting("REGISTRY_PORT"))
}

/// The Helm values a platform on this test bed sets: every namespace
/// served (`rbac.clusterWide`: tests make namespaces of their own), the
/// registries nested nodes reach through the test bed's registry
/// (`nodeRegistryMirrors`), and that registry as node pods' one allowed
/// destination on the host's networks (`network.allowedEgress`), as `helm`
/// arguments.
pub fn platform_helm_args() -> Vec<String> {
    let endpoint = format!("http://{}", registry());
    let mirrors = serde_json::json!({
        "registry.k8s.io": [endpoint],
        "images.nestor.test": [endpoint],
    });
    let egress = serde_json::json!([{
        "cidr": format!("{}/32", host_ip()),
        "ports": [setting("REGISTRY_PORT").parse::<u16>().expect("a port")],
    }]);
    vec![
        "--set".into(),
        "rbac.clusterWide=true".into(),
        "--set-json".into(),
        format!("nodeRegistryMirrors={mirrors}"),
        "--set-json".into(),
        format!("network.allowedEgress={egress}"),
    ]
}

/// Starts a registry on the node's address and pushes into it the images
/// nested nodes pull. Its blobs live in the cache (`registry-blobs`, keyed
/// by digest), so a push finds the layers of an unchanged image there and
/// sends only its manifest; its manifests live in memory, for this run.
pub(super) fn start_registry(images: &Path, logs: &Path, lifetime: Lifetime) -> Result<Proc> {
    let crane = paths::crane_binary()?;
    let address = registry();
    let blobs = images.with_file_name("registry-blobs");
    std::fs::create_dir_all(&blobs)?;
    let proc = spawn(
        "registry",
        &crane,
        &[
            "registry".into(),
            "serve".into(),
            "--address".into(),
            address.clone(),
            "--disk".into(),
            blobs.display().to_string(),
        ],
        &[],
        &logs.join("registry.log"),
        lifetime,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_err() {
        if Instant::now() > deadline {
            bail!(
                "the registry did not listen on {address}; see {}/registry.log",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    push_images(&crane, &address, images)?;
    Ok(proc)
}

/// Pushes every archive in `images` that nested nodes pull to the registry
/// at `address`.
fn push_images(crane: &Path, address: &str, images: &Path) -> Result<()> {
    for entry in std::fs::read_dir(images)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let Some((repo, tag)) = registry_target(file) else {
            continue;
        };
        let target = format!("{address}/{repo}:{tag}");
        let out = Command::new(crane)
            .args(["push", "--insecure"])
            .arg(&path)
            .arg(&target)
            .output()?;
        if !out.status.success() {
            bail!(
                "pushing {} to {target}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::registry_target;

    #[test]
    fn archives_are_pushed_under_their_references() {
        let target = |f: &str| registry_target(f).map(|(r, t)| format!("{r}:{t}"));
        assert_eq!(
            target("registry.k8s.io_e2e-test-images_jessie-dnsutils_1.7.tar").as_deref(),
            Some("e2e-test-images/jessie-dnsutils:1.7")
        );
        assert_eq!(
            target("registry.k8s.io_e2e-test-images_busybox_1.37.0-1.tar").as_deref(),
            Some("e2e-test-images/busybox:1.37.0-1")
        );
        assert_eq!(
            target("registry.k8s.io_pause_3.10.1.tar").as_deref(),
            Some("pause:3.10.1")
        );
        assert_eq!(target("registry.k8s.io_kube-apiserver_v1.35.4.tar"), None);
    }
}
