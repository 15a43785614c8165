//! Where the test bed finds its binaries: a cache keyed by version, filled
//! by `e2e/testbed/build-binaries.sh` and `e2e/testbed/install-tools.sh`.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

const VERSIONS: &str = include_str!("../testbed/versions.env");

/// A value from `e2e/testbed/versions.env`.
pub fn version(key: &str) -> String {
    VERSIONS
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("versions.env has no {key}"))
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the repo")
        .to_path_buf()
}

fn cache() -> PathBuf {
    match std::env::var_os("NESTOR_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/nestor"),
    }
}

fn existing(path: PathBuf, hint: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!("{} is missing; run {hint}", path.display())
    }
}

/// A Kubernetes binary of the pinned version.
pub fn kube_binary(name: &str) -> Result<PathBuf> {
    existing(
        cache()
            .join("kubernetes")
            .join(version("K8S_VERSION"))
            .join("bin")
            .join(name),
        &format!("e2e/testbed/build-binaries.sh {name}"),
    )
}

/// The etcd binary of the pinned version.
pub fn etcd_binary() -> Result<PathBuf> {
    existing(
        cache()
            .join("etcd")
            .join(version("ETCD_VERSION"))
            .join("bin/etcd"),
        "e2e/testbed/build-binaries.sh etcd",
    )
}

/// An etcd tool (`etcdctl`, `etcdutl`) of the pinned version.
pub fn etcd_tool(name: &str) -> Result<PathBuf> {
    existing(
        cache()
            .join("etcd")
            .join(version("ETCD_VERSION"))
            .join("bin")
            .join(name),
        &format!("e2e/testbed/build-binaries.sh {name}"),
    )
}

/// versitygw: the S3-compatible store of the backup tests.
pub fn versitygw_binary() -> Result<PathBuf> {
    existing(
        cache()
            .join("versitygw")
            .join(version("VERSITYGW_VERSION"))
            .join("bin/versitygw"),
        "e2e/testbed/build-binaries.sh versitygw",
    )
}

/// crane: the test bed's registry and the tool that pushes into it.
pub fn crane_binary() -> Result<PathBuf> {
    existing(
        cache()
            .join("crane")
            .join(version("CRANE_VERSION"))
            .join("bin/crane"),
        "e2e/testbed/build-binaries.sh crane",
    )
}

/// kube-router, the host test bed's NetworkPolicy enforcer.
pub fn kube_router_binary() -> Result<PathBuf> {
    existing(
        cache()
            .join("kube-router")
            .join(version("KUBE_ROUTER_VERSION"))
            .join("bin/kube-router"),
        "e2e/testbed/build-binaries.sh kube-router",
    )
}

/// kubectl or helm.
pub fn tool(name: &str) -> Result<PathBuf> {
    let dir = format!(
        "{}-{}",
        version("KUBECTL_WHEEL"),
        version("KUBECTL_WHEEL_VERSION")
    );
    existing(
        cache().join("tools").join(dir).join(name),
        "e2e/testbed/install-tools.sh",
    )
}

/// The image archives built by `e2e/testbed/build-images.sh`.
pub fn images_dir() -> Result<PathBuf> {
    let dir = cache().join("images");
    if !dir
        .join(format!(
            "registry.k8s.io_pause_{}.tar",
            version("PAUSE_TAG")
        ))
        .is_file()
    {
        bail!("the test bed's images are missing; run e2e/testbed/build-images.sh");
    }
    Ok(dir)
}

/// A binary of this workspace built by `cargo build` (debug profile).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    existing(
        target.join("debug").join(name),
        &format!("cargo build -p {name}"),
    )
}

/// The operator binary built by `cargo build` in this workspace.
pub fn operator_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NESTOR_OPERATOR_BIN") {
        return existing(PathBuf::from(path), "cargo build -p nestor-operator");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    existing(
        target.join("debug/nestor-operator"),
        "cargo build -p nestor-operator",
    )
}
