//! A real node for the test bed: containerd, runc, the CNI bridge plugin,
//! the kubelet and kube-proxy (iptables mode) on this machine, in a network
//! namespace of their own linked to the machine's (where the control plane
//! runs), plus what a real cluster has beside: CoreDNS, a NetworkPolicy
//! enforcer (kube-router in firewall-only mode, iptables and ipset on the
//! node's paths) and a default StorageClass with a host-path provisioner. Every image comes from
//! `e2e/testbed/build-images.sh`; nothing is pulled.
//!
//! The node changes the machine (network namespaces, links, iptables rules,
//! sysctls, mounts); `e2e/testbed/node-network.sh down` undoes all of it and
//! runs when the test bed stops.

use crate::paths;
use crate::process::{Lifetime, Proc, spawn};
use anyhow::{Context, Result, bail};
use nestor_controllers::build::pki::KeyAndCert;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NODE_ENV: &str = include_str!("../testbed/node.env");

/// A value of `e2e/testbed/node.env`.
pub fn setting(key: &str) -> &'static str {
    NODE_ENV
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("node.env has no {key}"))
}

/// Where a node-mode test bed's API server (and its registry) listen: the
/// machine's end of the link to the node.
pub fn host_ip() -> &'static str {
    setting("HOST_IP")
}

/// The node's address, in its own network namespace.
pub fn node_ip() -> &'static str {
    setting("NODE_IP")
}

/// `program args` run in network namespace `netns` (`nsenter` execs it, so
/// the PID is the program's).
fn in_netns(netns: &str, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    let mut all = vec![
        format!("--net=/run/netns/{netns}"),
        "--".to_string(),
        program.display().to_string(),
    ];
    all.extend_from_slice(args);
    (PathBuf::from("/usr/bin/nsenter"), all)
}

/// `program args` run in the node's network namespace.
fn in_node(program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
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
        let pids = std::fs::read_to_string(holder.join("pids")).unwrap_or_default();
        let alive = pids.lines().any(|l| {
            let pid = l
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok());
            // SAFETY: signal 0 only checks that the process exists.
            pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0)
        });
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

/// Releases the node lock if `dir` holds it.
pub fn unlock(dir: &Path) {
    if std::fs::read_to_string(lock_path()).is_ok_and(|h| Path::new(h.trim()) == dir) {
        let _ = std::fs::remove_file(lock_path());
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Starts containerd, imports the images, starts the kubelet and kube-proxy.
/// `bed_dir` is the test bed's directory (its `pki/` holds the CA).
pub fn start(
    bed_dir: &Path,
    server: &str,
    ca: &KeyAndCert,
    lifetime: Lifetime,
) -> Result<Vec<Proc>> {
    let dir = bed_dir.join("node");
    let logs = bed_dir.join("logs");
    let name = setting("NODE_NAME");
    let ip = node_ip();
    for sub in ["containerd", "cni/net.d", "kubelet", "pki"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let d = |p: &str| dir.join(p).display().to_string();
    let ca_file = bed_dir.join("pki/ca.crt").display().to_string();

    let kubeconfig = |user: &str, groups: &[&str], file: &str| -> Result<String> {
        let path =
            crate::testbed::write_client_kubeconfig(&dir.join(file), server, ca, user, groups)?;
        Ok(path.display().to_string())
    };
    let kubelet_kubeconfig = kubeconfig(
        &format!("system:node:{name}"),
        &["system:nodes"],
        "kubelet.kubeconfig",
    )?;
    let proxy_kubeconfig = kubeconfig("system:kube-proxy", &[], "kube-proxy.kubeconfig")?;
    let router_kubeconfig =
        kubeconfig("nestor-testbed:kube-router", &[], "kube-router.kubeconfig")?;

    let sock = d("containerd/containerd.sock");
    write(
        &dir.join("containerd/config.toml"),
        &format!(
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
            pause = paths::version("PAUSE_TAG"),
            runc = d("containerd/runc"),
            cni = d("cni/net.d"),
            opt = d("containerd/opt"),
        ),
    )?;
    write(
        &dir.join("cni/net.d/10-nestor.conflist"),
        &format!(
            r#"{{"cniVersion": "1.0.0", "name": "nestor", "plugins": [
  {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {{"type": "host-local", "dataDir": "{ipam}", "ranges": [[{{"subnet": "{cidr}", "gateway": "{gw}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}]}}
"#,
            bridge = setting("POD_BRIDGE"),
            ipam = d("cni/ipam"),
            cidr = setting("POD_CIDR"),
            gw = setting("POD_GATEWAY"),
        ),
    )?;
    write(
        &dir.join("kubelet-config.yaml"),
        &format!(
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
            dns = setting("CLUSTER_DNS"),
            pod_logs = d("pod-logs"),
        ),
    )?;
    write(
        &dir.join("kube-proxy-config.yaml"),
        &format!(
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
            cidr = setting("POD_CIDR"),
        ),
    )?;

    // No registry is reachable, and none may be tried: every pull goes to a
    // dead proxy on loopback (all images are imported).
    let nowhere = "http://127.0.0.1:9".to_string();
    let mut procs = Vec::new();
    let (program, args) = in_node(
        Path::new("/usr/bin/containerd"),
        &["--config".into(), d("containerd/config.toml")],
    );
    procs.push(spawn(
        "containerd",
        &program,
        &args,
        &[
            ("HTTP_PROXY", nowhere.clone()),
            ("HTTPS_PROXY", nowhere),
            ("NO_PROXY", String::new()),
        ],
        &logs.join("containerd.log"),
        lifetime,
    )?);
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .args(["-a", &sock, "-n", "k8s.io"])
            .args(args)
            .output()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctr(&["version"]).is_ok_and(|o| o.status.success()) {
        if Instant::now() > deadline {
            bail!(
                "containerd did not start; see {}/containerd.log",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let images = paths::images_dir()?;
    for entry in std::fs::read_dir(&images)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        // What only nested nodes run is in the registry, not here.
        if path.extension().is_some_and(|e| e == "tar") && !nested_only(file) {
            let out = ctr(&["images", "import", &path.display().to_string()])?;
            if !out.status.success() {
                bail!(
                    "importing {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    procs.push(start_registry(&images, &logs, lifetime)?);
    procs.push(start_metadata(&dir, &logs, lifetime)?);
    let kube = |n: &str| paths::kube_binary(n);
    let (program, args) = in_node(
        &kube("kubelet")?,
        &[
            format!("--config={}", d("kubelet-config.yaml")),
            format!("--kubeconfig={kubelet_kubeconfig}"),
            format!("--root-dir={}", d("kubelet")),
            format!("--cert-dir={}", d("kubelet/pki")),
            format!("--hostname-override={name}"),
            format!("--node-ip={ip}"),
            "--v=1".into(),
        ],
    );
    procs.push(spawn(
        "kubelet",
        &program,
        &args,
        &[],
        &logs.join("kubelet.log"),
        lifetime,
    )?);
    let (program, args) = in_node(
        &kube("kube-proxy")?,
        &[
            format!("--config={}", d("kube-proxy-config.yaml")),
            "--v=1".into(),
        ],
    );
    procs.push(spawn(
        "kube-proxy",
        &program,
        &args,
        &[],
        &logs.join("kube-proxy.log"),
        lifetime,
    )?);
    // NetworkPolicy, as a network plugin enforces it: pods' traffic to
    // each other, to the node and through it, is filtered.
    let (program, args) = in_node(
        &paths::kube_router_binary()?,
        &[
            format!("--kubeconfig={router_kubeconfig}"),
            format!("--hostname-override={name}"),
            "--run-firewall=true".into(),
            "--run-router=false".into(),
            "--run-service-proxy=false".into(),
            "--enable-cni=false".into(),
            "--enable-pod-egress=false".into(),
            "--health-port=0".into(),
            format!("--service-cluster-ip-range={}", setting("SERVICE_CIDR")),
            "--v=1".into(),
        ],
    );
    procs.push(spawn(
        "kube-router",
        &program,
        &args,
        &[],
        &logs.join("kube-router.log"),
        lifetime,
    )?);
    Ok(procs)
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

/// The metadata stand-in: busybox's httpd on the link-local address of the
/// test bed's metadata namespace, which pods reach only through the
/// machine's routing, like a cloud's metadata service.
fn start_metadata(dir: &Path, logs: &Path, lifetime: Lifetime) -> Result<Proc> {
    let root = dir.join("metadata");
    std::fs::create_dir_all(&root)?;
    write(&root.join("index.html"), "nestor-testbed metadata\n")?;
    let address = format!("{}:{}", setting("METADATA_IP"), setting("METADATA_PORT"));
    let (program, args) = in_netns(
        setting("METADATA_NETNS"),
        Path::new("/bin/busybox"),
        &[
            "httpd",
            "-f",
            "-p",
            &address,
            "-h",
            &root.display().to_string(),
        ]
        .map(String::from),
    );
    spawn(
        "metadata",
        &program,
        &args,
        &[],
        &logs.join("metadata.log"),
        lifetime,
    )
}

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
fn nested_only(file: &str) -> bool {
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
fn start_registry(images: &Path, logs: &Path, lifetime: Lifetime) -> Result<Proc> {
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
        let out = Command::new(&crane)
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
    Ok(proc)
}

/// The host cluster's add-ons: CoreDNS (answering only for the cluster
/// domain, forwarding nothing off this machine), the RBAC of the node's
/// NetworkPolicy enforcer and the default StorageClass.
pub fn addons_yaml() -> String {
    let image = format!(
        "registry.k8s.io/coredns/coredns:v{}",
        paths::version("COREDNS_VERSION")
    );

    let dns = setting("CLUSTER_DNS");
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:1053 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        cache 30
        loop
        reload
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: coredns
        image: {image}
        args: [-conf, /etc/coredns/Corefile]
        ports: [{{containerPort: 1053, protocol: UDP}}, {{containerPort: 1053, protocol: TCP}}]
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}}}
        resources: {{requests: {{cpu: 10m, memory: 32Mi}}}}
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {dns}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "nestor-testbed:kube-router"}}
rules:
- apiGroups: [""]
  resources: [pods, namespaces, nodes, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "nestor-testbed:kube-router"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "nestor-testbed:kube-router"}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "nestor-testbed:kube-router"}}]
---
{storage_class}"#,
        storage_class = serde_yaml::to_string(&crate::provisioner::storage_class())
            .expect("StorageClass serializes"),
    )
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
