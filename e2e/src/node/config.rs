//! Where the node keeps its files, and the configuration files of
//! containerd, the CNI plugins, the kubelet and kube-proxy.

use super::settings::{node_ip, setting};
use crate::paths;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The node's files: `DIR/node` of the test bed in `DIR`, with its logs in
/// the test bed's `DIR/logs`.
pub(super) struct NodeFiles {
    /// The test bed's directory.
    pub(super) bed: PathBuf,
    /// The node's directory.
    pub(super) dir: PathBuf,
    /// The test bed's logs.
    pub(super) logs: PathBuf,
}

impl NodeFiles {
    /// The node's directories under the test bed in `bed_dir`, created.
    pub(super) fn create(bed_dir: &Path) -> Result<Self> {
        let files = NodeFiles {
            bed: bed_dir.to_path_buf(),
            dir: bed_dir.join("node"),
            logs: bed_dir.join("logs"),
        };
        for sub in ["containerd", "cni/net.d", "kubelet", "pki"] {
            std::fs::create_dir_all(files.dir.join(sub))?;
        }
        Ok(files)
    }

    /// A path under the node's directory, as a program argument.
    pub(super) fn path(&self, relative: &str) -> String {
        self.dir.join(relative).display().to_string()
    }

    /// The log file of one of the node's processes.
    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// containerd's socket.
    pub(super) fn containerd_socket(&self) -> String {
        self.path("containerd/containerd.sock")
    }
}

pub(super) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes the configuration of containerd, the CNI plugins, the kubelet
/// and kube-proxy (which connects with `proxy_kubeconfig`).
pub(super) fn write_configs(files: &NodeFiles, proxy_kubeconfig: &str) -> Result<()> {
    write(
        &files.dir.join("containerd/config.toml"),
        &containerd_config(files),
    )?;
    write(
        &files.dir.join("cni/net.d/10-nestor.conflist"),
        &cni_config(files),
    )?;
    write(
        &files.dir.join("kubelet-config.yaml"),
        &kubelet_config(files),
    )?;
    write(
        &files.dir.join("kube-proxy-config.yaml"),
        &kube_proxy_config(proxy_kubeconfig),
    )
}

fn containerd_config(files: &NodeFiles) -> String {
    let d = |p: &str| files.path(p);
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:{pause}"
    enable_selinux = false
    disable_apparmor = true
    # root here lacks CAP_SYS_RESOURCE: runc cannot set a negative oom_score_adj
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{runc}"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{cni}"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "{opt}"
"#,
        root = d("containerd/root"),
        state = d("containerd/state"),
        sock = files.containerd_socket(),
        pause = paths::version("PAUSE_TAG"),
        runc = d("containerd/runc"),
        cni = d("cni/net.d"),
        opt = d("containerd/opt"),
    )
}

fn cni_config(files: &NodeFiles) -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "nestor", "plugins": [
  {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {{"type": "host-local", "dataDir": "{ipam}", "ranges": [[{{"subnet": "{cidr}", "gateway": "{gw}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}]}}
"#,
        bridge = setting("POD_BRIDGE"),
        ipam = files.path("cni/ipam"),
        cidr = setting("POD_CIDR"),
        gw = setting("POD_GATEWAY"),
    )
}

fn kubelet_config(files: &NodeFiles) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca_file}}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://{sock}
clusterDNS: [{dns}]
clusterDomain: cluster.local
resolvConf: \"\"
serverTLSBootstrap: false
rotateCertificates: false
protectKernelDefaults: false
failSwapOn: false
maxPods: 250
podLogsDir: {pod_logs}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: \"1%\", nodefs.inodesFree: \"1%\", imagefs.available: \"1%\"}}
",
        ip = node_ip(),
        ca_file = files.bed.join("pki/ca.crt").display(),
        sock = files.containerd_socket(),
        dns = setting("CLUSTER_DNS"),
        pod_logs = files.path("pod-logs"),
    )
}

fn kube_proxy_config(proxy_kubeconfig: &str) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {{kubeconfig: {proxy_kubeconfig}}}
hostnameOverride: {name}
bindAddress: {ip}
clusterCIDR: {cidr}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
nodePortAddresses: [\"{ip}/32\"]
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
nftables: {{masqueradeAll: false, syncPeriod: 30s, minSyncPeriod: 1s}}
",
        name = setting("NODE_NAME"),
        ip = node_ip(),
        cidr = setting("POD_CIDR"),
    )
}
