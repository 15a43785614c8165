//! `NodePool`: a StatefulSet of node pods (kubelet, containerd, kube-proxy,
//! CNI plugins) that join a virtual cluster the way kubeadm nodes do.
//!
//! Node credentials come from TLS bootstrapping: each pool has a bootstrap
//! token that may only create node client certificate requests, which the
//! nested controller-manager approves and signs with the cluster CA. Each
//! node ends with its own certificate; no key is shared by all nodes.
//!
//! Node pods are the one privileged part of Nestor: containerd and the
//! kubelet must create containers, mounts and network namespaces. They run
//! without host networking, host PID or host paths, on volumes of their own.

use crate::apply::{FirstWrite, apply_owned, apply_secret, read_secret};
use crate::cached::Workload;
use crate::context::Context;
use crate::error::{Error, NAMESPACE_DELETION_WAIT, Result};
use crate::kubeconfig::{self, Credentials};
use crate::meta::{
    ClusterNames, INPUTS_HASH, pool_child_meta, pool_selector_labels, selector_string,
};
use crate::secrets::BUNDLE_FINGERPRINT;
use crate::status::{Computed, READY, settle_conditions};
use crate::validate::validate_pool;
use crate::{images, nested, nested_nodes, pki};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Secret, SecurityContext, Service,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use nestor_crds::{NodePool, NodePoolStatus, VirtualCluster};
use rand::distr::{Alphanumeric, SampleString};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

pub const CONTROL_PLANE_READY: &str = "ControlPlaneReady";
pub const NODES_READY: &str = "NodesReady";
/// Annotation on the bootstrap Secret: the hash of what was installed into
/// the nested cluster for this pool.
pub const NESTED_INSTALLED: &str = "nestor.dev/nested-installed";
/// The kubelet's health port, probed by the host kubelet.
pub const KUBELET_HEALTHZ_PORT: i32 = 10248;

/// Names of a pool's children.
pub struct PoolNames {
    pub pool: String,
    pub namespace: String,
}

impl PoolNames {
    pub fn new(pool: &NodePool) -> Self {
        Self {
            pool: pool.name_any(),
            namespace: pool.namespace().unwrap_or_default(),
        }
    }
    pub fn statefulset(&self) -> String {
        format!("{}-node", self.pool)
    }
    pub fn service(&self) -> String {
        format!("{}-nodes", self.pool)
    }
    pub fn bootstrap_secret(&self) -> String {
        format!("{}-bootstrap", self.pool)
    }
    pub fn config_map(&self) -> String {
        format!("{}-node-config", self.pool)
    }
}

/// A bootstrap token, `<id>.<secret>` (6 and 16 lowercase alphanumerics).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl BootstrapToken {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut lower = |n| Alphanumeric.sample_string(&mut rng, n).to_ascii_lowercase();
        Self {
            id: lower(6),
            secret: lower(16),
        }
    }
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
    /// The group the token authenticates into, besides `system:bootstrappers`.
    pub fn extra_group(pool: &str) -> String {
        format!("system:bootstrappers:nestor:{pool}")
    }
}

/// The host Secret holding the pool's bootstrap token and kubeconfig.
pub fn desired_bootstrap_secret(
    pool: &NodePool,
    names: &ClusterNames,
    token: &BootstrapToken,
    ca_pem: &str,
    ca_fingerprint: &str,
) -> Secret {
    let pn = PoolNames::new(pool);
    let config = kubeconfig::render(
        &names.cluster,
        &names.internal_endpoint(),
        ca_pem,
        &format!("bootstrap-{}", token.id),
        Credentials::Token(&token.token()),
    );
    let mut metadata = pool_child_meta(pool, pn.bootstrap_secret());
    metadata.annotations = Some(BTreeMap::from([(
        INPUTS_HASH.into(),
        pki::inputs_hash(["bootstrap", ca_fingerprint]),
    )]));
    let data = BTreeMap::from([
        (
            "token-id".to_string(),
            ByteString(token.id.clone().into_bytes()),
        ),
        (
            "token-secret".to_string(),
            ByteString(token.secret.clone().into_bytes()),
        ),
        (
            "bootstrap-kubeconfig".to_string(),
            ByteString(config.into_bytes()),
        ),
        ("ca.crt".to_string(), ByteString(ca_pem.as_bytes().to_vec())),
    ]);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The token's Secret inside the nested cluster: it authenticates the
/// bootstrapper and nothing else.
pub fn nested_bootstrap_token_secret(pool: &str, token: &BootstrapToken) -> Secret {
    let data = BTreeMap::from([
        ("token-id".to_string(), token.id.clone()),
        ("token-secret".to_string(), token.secret.clone()),
        (
            "usage-bootstrap-authentication".to_string(),
            "true".to_string(),
        ),
        (
            "auth-extra-groups".to_string(),
            BootstrapToken::extra_group(pool),
        ),
        (
            "description".to_string(),
            format!("Nestor node pool {pool}"),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{}", token.id)),
            namespace: Some("kube-system".into()),
            labels: Some(BTreeMap::from([(
                crate::addons::NESTED_MANAGED_BY.0.into(),
                crate::addons::NESTED_MANAGED_BY.1.into(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The kubelet's configuration for the pool's nodes. Nested pods get the
/// nested cluster's DNS only (`resolvConf: ""`): the node pod's own
/// resolver is the host cluster's, which tenants must not see. The kubelet
/// asks the nested cluster for its serving certificate
/// (`serverTLSBootstrap`), which Nestor approves after checking it names
/// the node pod and nothing else, so the nested API server can verify the
/// kubelets it calls.
///
/// A node pod's filesystem is the host's disk, shared with everything else
/// on the host, so its fill level says nothing about this node: with the
/// kubelet's default thresholds (`imagefs.available<15%`) a host disk that
/// is 86 % full makes every nested node evict every pod and garbage-collect
/// the sandbox image. Disk pressure is the host kubelet's to handle (it
/// evicts the node pod itself), so nested kubelets evict on memory only and
/// never collect images for space, as kind does for its nodes.
pub fn kubelet_config(pool: &NodePool, vc: &VirtualCluster) -> String {
    let config = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": "/etc/nestor/bootstrap/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": false,
        "failSwapOn": false,
        "protectKernelDefaults": true,
        "clusterDNS": [vc.spec.networking.dns_service_ip],
        "clusterDomain": vc.spec.networking.cluster_domain,
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "rotateCertificates": true,
        "serverTLSBootstrap": true,
        "healthzBindAddress": "0.0.0.0",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "resolvConf": "",
        "registerWithTaints": pool.spec.taints,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
            "imagefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
    });
    // JSON is YAML; the kubelet reads either.
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// containerd's configuration in a node pod: the CRI plugin with the
/// cluster's sandbox image, the CNI plugins of the node image, and the
/// operator's registry mirrors (how node pods reach images when the
/// upstream registries are out of reach).
pub fn containerd_config(sandbox_image: &str, mirrors: &BTreeMap<String, Vec<String>>) -> String {
    // TOML basic strings take JSON's escapes.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let mut out = format!(
        "version = 2\nroot = \"/var/lib/containerd\"\nstate = \"/run/containerd\"\n\n[grpc]\n  address = \"/run/containerd/containerd.sock\"\n\n[{cri}]\n  sandbox_image = {}\n  restrict_oom_score_adj = true\n\n[{cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\n[{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[{cri}.cni]\n  bin_dir = \"/opt/cni/bin\"\n  conf_dir = \"/etc/cni/net.d\"\n",
        quote(sandbox_image)
    );
    for (host, endpoints) in mirrors {
        let list = endpoints
            .iter()
            .map(|e| quote(e))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "\n[{cri}.registry.mirrors.{}]\n  endpoint = [{list}]\n",
            quote(host)
        ));
    }
    out
}

/// The ConfigMap holding the kubelet's and containerd's configuration.
pub fn desired_node_config_map(
    pool: &NodePool,
    vc: &VirtualCluster,
    sandbox_image: &str,
    mirrors: &BTreeMap<String, Vec<String>>,
) -> ConfigMap {
    ConfigMap {
        metadata: pool_child_meta(pool, PoolNames::new(pool).config_map()),
        data: Some(BTreeMap::from([
            ("kubelet-config.yaml".into(), kubelet_config(pool, vc)),
            (
                "containerd.toml".into(),
                containerd_config(sandbox_image, mirrors),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// A hash of a node ConfigMap's content: on the pod template, so that node
/// pods restart (one at a time) when their configuration changes.
pub fn node_config_hash(config: &ConfigMap) -> String {
    pki::inputs_hash(
        config
            .data
            .iter()
            .flatten()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
    )
}

/// The annotation that carries [`node_config_hash`].
pub const CONFIG_HASH: &str = "nestor.dev/config-hash";

/// The headless Service that gives node pods stable names.
pub fn desired_node_service(pool: &NodePool) -> Service {
    Service {
        metadata: pool_child_meta(pool, PoolNames::new(pool).service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(pool_selector_labels(pool)),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn node_labels_flag(pool: &NodePool) -> String {
    let mut labels = pool.spec.labels.clone();
    labels.insert("nestor.dev/node-pool".into(), pool.name_any());
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The node StatefulSet. Node pods are privileged (containerd and the
/// kubelet need it) and say so in an annotation; they use neither the host's
/// network, PID namespace nor paths.
pub fn desired_node_statefulset(
    pool: &NodePool,
    vc: &VirtualCluster,
    image: &str,
    replicas: i32,
    config_hash: &str,
) -> StatefulSet {
    let pn = PoolNames::new(pool);
    let names = ClusterNames::new(vc);
    let empty = |name: &str, memory: bool| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_string()),
            ..Default::default()
        }),
        ..Volume::default()
    };
    let config_map = |name: &str, cm: String| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: cm,
            ..Default::default()
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let field_env = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // The node's own daemons (kubelet, containerd, kube-proxy); a pool
    // whose workloads need more says so in `resources`.
    let resources = crate::podspec::resources_or(&pool.spec.resources, "100m", "256Mi");
    let container = Container {
        name: "node".into(),
        image: Some(image.into()),
        command: Some(vec!["/usr/local/bin/nestor-node".into()]),
        args: Some(vec![
            format!("--node-labels={}", node_labels_flag(pool)),
            format!("--cluster-cidr={}", vc.spec.networking.pod_cidr),
        ]),
        env: Some(vec![
            field_env("NODE_NAME", "metadata.name"),
            field_env("POD_IP", "status.podIP"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("kubelet".into()),
                container_port: 10250,
                ..Default::default()
            },
            ContainerPort {
                name: Some("healthz".into()),
                container_port: KUBELET_HEALTHZ_PORT,
                ..Default::default()
            },
        ]),
        volume_mounts: Some(vec![
            mount("bootstrap", "/etc/nestor/bootstrap", true),
            mount("node-config", "/etc/nestor/node", true),
            mount("kube-proxy", "/etc/nestor/kube-proxy", true),
            mount("containerd", "/var/lib/containerd", false),
            mount("kubelet", "/var/lib/kubelet", false),
            mount("run", "/run", false),
            mount("log", "/var/log", false),
        ]),
        readiness_probe: Some(crate::podspec::http_probe(
            "/healthz",
            KUBELET_HEALTHZ_PORT,
            false,
            5,
            3,
        )),
        liveness_probe: Some(crate::podspec::http_probe(
            "/healthz",
            KUBELET_HEALTHZ_PORT,
            false,
            20,
            6,
        )),
        startup_probe: Some(crate::podspec::http_probe(
            "/healthz",
            KUBELET_HEALTHZ_PORT,
            false,
            5,
            120,
        )),
        resources: Some(resources),
        // The one privileged container in Nestor: see docs/security.md.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let selector = pool_selector_labels(pool);
    let mut template_labels = crate::meta::pool_labels(pool);
    template_labels.extend(selector.clone());
    StatefulSet {
        metadata: pool_child_meta(pool, pn.statefulset()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(pn.service()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([
                        (
                            "nestor.dev/privileged".to_string(),
                            "node pods run containerd and the kubelet; see docs/security.md"
                                .to_string(),
                        ),
                        (CONFIG_HASH.to_string(), config_hash.to_string()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![
                        crate::podspec::secret_volume("bootstrap", &pn.bootstrap_secret()),
                        config_map("node-config", pn.config_map()),
                        config_map("kube-proxy", names.kube_proxy_config()),
                        empty("containerd", false),
                        empty("kubelet", false),
                        empty("run", true),
                        empty("log", false),
                    ]),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    host_network: Some(false),
                    host_pid: Some(false),
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// What the pool reconciler observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolObserved {
    pub invalid: Option<String>,
    /// `None`: the cluster does not exist; `Some(false)`: not ready yet.
    pub control_plane_ready: Option<bool>,
    /// Node pods (from the StatefulSet).
    pub replicas: i32,
    /// Node pods whose kubelet answers its health check.
    pub ready_replicas: i32,
    /// Nested Nodes that are Ready (`None`: the nested cluster is not
    /// reachable yet).
    pub nodes_ready: Option<i32>,
    /// Nodes being drained before a scale-down removes them.
    pub draining: Option<i32>,
}

/// The pool's status. Pure.
pub fn compute_pool_status(pool: &NodePool, observed: &PoolObserved, now: &Time) -> NodePoolStatus {
    let desired = pool.spec.replicas;
    let cluster = &pool.spec.cluster_ref.name;
    let cp = match observed.control_plane_ready {
        None => Computed {
            type_: CONTROL_PLANE_READY,
            ok: false,
            reason: "ClusterNotFound",
            message: format!("VirtualCluster {cluster} does not exist"),
        },
        Some(false) => Computed {
            type_: CONTROL_PLANE_READY,
            ok: false,
            reason: "Waiting",
            message: format!("waiting for VirtualCluster {cluster} to be ready"),
        },
        Some(true) => Computed {
            type_: CONTROL_PLANE_READY,
            ok: true,
            reason: "Ready",
            message: format!("VirtualCluster {cluster} is ready"),
        },
    };
    // A node is ready when its nested Node is, not merely its pod.
    let ready_nodes = observed
        .nodes_ready
        .unwrap_or(0)
        .min(observed.ready_replicas);
    let nodes_ok = ready_nodes >= desired && observed.replicas == desired;
    let nodes = match observed.draining {
        Some(n) => Computed {
            type_: NODES_READY,
            ok: false,
            reason: "Draining",
            message: format!("draining {n} node(s) before removing them"),
        },
        None => Computed {
            type_: NODES_READY,
            ok: nodes_ok,
            reason: if nodes_ok { "Ready" } else { "NotReady" },
            message: format!("{ready_nodes}/{desired} nodes ready"),
        },
    };
    let ready = if let Some(why) = &observed.invalid {
        Computed {
            type_: READY,
            ok: false,
            reason: "InvalidSpec",
            message: why.clone(),
        }
    } else if cp.ok && nodes.ok {
        Computed {
            type_: READY,
            ok: true,
            reason: "Ready",
            message: "every node is ready".into(),
        }
    } else {
        Computed {
            type_: READY,
            ok: false,
            reason: "NotReady",
            message: if cp.ok {
                nodes.message.clone()
            } else {
                cp.message.clone()
            },
        }
    };
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    NodePoolStatus {
        observed_generation: pool.metadata.generation,
        desired_replicas: desired,
        replicas: observed.replicas,
        ready_replicas: ready_nodes,
        selector: Some(selector_string(&pool_selector_labels(pool))),
        conditions: settle_conditions(&[cp, nodes, ready], previous, pool.metadata.generation, now),
    }
}

/// How often a settled pool looks at its nested cluster again.
pub const SETTLED_RECHECK: Duration = Duration::from_secs(30);

/// How long a deleted pool's nodes may take to drain before their Nodes
/// are removed anyway (a PodDisruptionBudget may never allow it).
pub const DELETE_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The pools in `pools` that join `vc`.
pub fn pools_joining<'a>(
    pools: &kube::runtime::reflector::Store<NodePool>,
    vc: &'a VirtualCluster,
) -> impl Iterator<Item = Arc<NodePool>> + 'a {
    let name = vc.metadata.name.as_deref().unwrap_or_default();
    let namespace = vc.metadata.namespace.as_deref();
    pools.state().into_iter().filter(move |p| {
        p.spec.cluster_ref.name == name && p.metadata.namespace.as_deref() == namespace
    })
}

/// The server-side apply body that makes `vc` an owner of `pool`, so that
/// the garbage collector deletes the pool with its cluster (and the
/// cluster's deletion needs no finalizer); `None` when the pool has that
/// owner already, or the cluster is being deleted (deleted with
/// `--cascade=orphan`, its pools must stay: the garbage collector has
/// taken the reference away and it must not come back). Not its
/// controller: the pool is the user's object. Its other owner references,
/// if any, are left as they are (server-side apply merges the list by UID).
/// Nor does it block the owner's deletion: a pool's finalizer needs the
/// operator, and a cluster deleted in the foreground must not wait for it.
pub fn desired_pool_owner(pool: &NodePool, vc: &VirtualCluster) -> Option<serde_json::Value> {
    let uid = vc.metadata.uid.as_deref()?;
    if vc.metadata.deletion_timestamp.is_some()
        || pool.owner_references().iter().any(|o| o.uid == uid)
    {
        return None;
    }
    let owner = vc.owner_ref(&())?;
    Some(serde_json::json!({
        "apiVersion": NodePool::api_version(&()),
        "kind": NodePool::kind(&()),
        "metadata": {
            "name": pool.metadata.name,
            "namespace": pool.metadata.namespace,
            "ownerReferences": [owner],
        },
    }))
}

async fn own_pool(ctx: &Context, pn: &PoolNames, patch: serde_json::Value) -> Result<()> {
    let api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &pn.namespace);
    ctx.metrics.write("patch", "NodePool");
    api.patch(
        &pn.pool,
        &kube::api::PatchParams::apply(crate::meta::FIELD_MANAGER),
        &Patch::Apply(patch),
    )
    .await
    .map_err(|source| Error::PatchMetadata {
        what: "the owner reference to its cluster",
        kind: "NodePool",
        namespace: pn.namespace.clone(),
        name: pn.pool.clone(),
        source,
    })?;
    Ok(())
}

/// Reconciles one `NodePool`; its finalizer drains the pool's nodes,
/// deletes their Node objects and revokes its bootstrap token.
pub async fn reconcile(pool: Arc<NodePool>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = pool.namespace().ok_or(Error::MissingField {
        kind: "NodePool",
        field: "metadata.namespace",
    })?;
    let api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, crate::meta::FINALIZER, pool, |event| async {
        match event {
            Event::Apply(pool) => apply(pool, &ctx).await,
            Event::Cleanup(pool) => cleanup(pool, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The pool's cluster, from the cache.
fn cluster_of(ctx: &Context, pool: &NodePool) -> Option<Arc<VirtualCluster>> {
    let namespace = pool.namespace().unwrap_or_default();
    ctx.stores
        .virtual_clusters
        .get(&ObjectRef::new(&pool.spec.cluster_ref.name).within(&namespace))
}

/// Whether a cluster reports `Ready=True`.
fn cluster_ready(vc: &VirtualCluster) -> bool {
    vc.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == READY && c.status == "True")
    })
}

/// A deleted pool leaves nothing in the nested cluster: its nodes are
/// drained (for at most [`DELETE_DRAIN_TIMEOUT`]), its node pods stopped,
/// their Node objects deleted and its bootstrap token revoked. Nothing to do when the cluster
/// is gone, going or not serving: its nested objects go with it.
async fn cleanup(pool: Arc<NodePool>, ctx: &Context) -> Result<Action> {
    let pn = PoolNames::new(&pool);
    let vc = cluster_of(ctx, &pool);
    let serving = vc
        .as_ref()
        .is_some_and(|vc| vc.metadata.deletion_timestamp.is_none() && cluster_ready(vc));
    let Some(vc) = vc.filter(|_| serving) else {
        info!(pool = %pn.pool, "node pool deleted; its cluster is not serving, nothing to tidy inside it");
        return Ok(Action::await_change());
    };
    let names = ClusterNames::new(&vc);
    let client = nested::client(ctx, &names).await?;
    let nodes = nested_nodes::list(&client, &names, &pn.pool).await?;
    let since = pool
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    if since < DELETE_DRAIN_TIMEOUT {
        let mut drained = true;
        for node in &nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            drained &= nested_nodes::drain(ctx, &client, &names, name).await?;
        }
        if !drained {
            return Err(Error::CleanupPending(format!(
                "draining the nodes of pool {}",
                pn.pool
            )));
        }
    }
    // The node pods stop before their Nodes go (a running kubelet would
    // register its Node again).
    let pods_left = observe(ctx, &pn).replicas;
    info!(pool = %pn.pool, nodes = nodes.len(), pods_left, "node pool deleted: tidying the nested cluster");
    let scaled_down = node_statefulset(ctx, &pn).is_none_or(|s| s.replicas() == Some(0));
    if pods_left > 0 && !scaled_down {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &pn.namespace);
        ctx.metrics.write("patch", "StatefulSet");
        api.patch(
            &pn.statefulset(),
            &crate::meta::patch_params(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .map_err(|source| Error::Cleanup {
            what: format!("node pods of pool {}", pn.pool),
            source,
        })?;
    }
    if pods_left > 0 {
        return Err(Error::CleanupPending(format!(
            "waiting for the node pods of pool {} to stop",
            pn.pool
        )));
    }
    for node in &nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        nested_nodes::delete_node(ctx, &client, &names, name).await?;
    }
    let token_id = read_secret(ctx, &pn.namespace, &pn.bootstrap_secret())
        .await?
        .and_then(|s| s.data?.get("token-id").cloned())
        .and_then(|b| String::from_utf8(b.0).ok());
    if let Some(id) = token_id {
        nested_nodes::delete_bootstrap_token(ctx, &client, &names, &id).await?;
    }
    Ok(Action::await_change())
}

async fn apply(pool: Arc<NodePool>, ctx: &Context) -> Result<Action> {
    let pn = PoolNames::new(&pool);
    let vc = cluster_of(ctx, &pool);
    let Some(vc) = vc else {
        update_status(ctx, &pool, &PoolObserved::default()).await?;
        return Ok(Action::await_change());
    };
    if let Some(patch) = desired_pool_owner(&pool, &vc) {
        own_pool(ctx, &pn, patch).await?;
    }
    let cp_ready = cluster_ready(&vc);
    let version = match validate_pool(&pn.pool, &pool.spec, &vc.spec.version) {
        Ok(version) => version,
        Err(invalid) => {
            let message = invalid.to_string();
            let previous = pool
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
                .map(|c| c.message.clone());
            if previous.as_deref() != Some(message.as_str()) {
                publish(
                    ctx,
                    &pool,
                    EventType::Warning,
                    "InvalidSpec",
                    message.clone(),
                )
                .await;
            }
            let mut observed = observe(ctx, &pn);
            observed.invalid = Some(message);
            observed.control_plane_ready = Some(cp_ready);
            update_status(ctx, &pool, &observed).await?;
            return Ok(Action::await_change());
        }
    };
    let names = ClusterNames::new(&vc);
    let ca_fp = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&names.ca_secret()).within(&names.namespace))
        .and_then(|s| s.annotations().get(BUNDLE_FINGERPRINT).cloned());
    let Some(ca_fp) = ca_fp else {
        // The cluster's PKI does not exist yet; its creation wakes us.
        let observed = PoolObserved {
            control_plane_ready: Some(false),
            ..observe(ctx, &pn)
        };
        update_status(ctx, &pool, &observed).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let token = ensure_bootstrap_secret(ctx, &pool, &names, &ca_fp).await?;

    let config = desired_node_config_map(
        &pool,
        &vc,
        &images::pause_image(&ctx.settings, vc.spec.images.registry.as_deref()),
        &ctx.settings.node_registry_mirrors,
    );
    let config_hash = node_config_hash(&config);
    apply_owned(ctx, &ctx.stores.config_maps, config, FirstWrite::Create).await?;
    apply_owned(
        ctx,
        &ctx.stores.services,
        desired_node_service(&pool),
        FirstWrite::Create,
    )
    .await?;
    let mut observed = PoolObserved {
        control_plane_ready: Some(cp_ready),
        ..observe(ctx, &pn)
    };
    let running = node_statefulset(ctx, &pn)
        .and_then(|s| s.replicas())
        .unwrap_or(0);
    // A scale-down waits for its drain; while the nested cluster cannot be
    // asked (not serving, or an error), the pool keeps its nodes.
    let hold = running.max(pool.spec.replicas);
    let nested = if cp_ready {
        let installed = pki::inputs_hash(["bootstrap", ca_fp.as_str()]);
        nested_pass(
            ctx,
            &pool,
            &names,
            token.as_ref(),
            &installed,
            running,
            &mut observed,
        )
        .await
    } else {
        Ok((hold, hold == pool.spec.replicas))
    };
    let (replicas, settled, failed) = match nested {
        Ok((replicas, settled)) => (replicas, settled, None),
        Err(e) => (hold, false, Some(e)),
    };
    // Nodes kept past the spec are nodes still draining.
    if replicas > pool.spec.replicas {
        observed.draining = Some(replicas - pool.spec.replicas);
    }
    // An explicit node image is the cluster's, for every pool.
    let image = vc.spec.images.node.clone().unwrap_or_else(|| {
        images::node_image(&ctx.settings, vc.spec.images.registry.as_deref(), &version)
    });
    apply_owned(
        ctx,
        &ctx.stores.stateful_sets,
        desired_node_statefulset(&pool, &vc, &image, replicas, &config_hash),
        // Its replicas follow the pool's scale.
        FirstWrite::Apply,
    )
    .await?;
    update_status(ctx, &pool, &observed).await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if settled {
        // A kubelet's serving certificate request can arrive just after
        // its node turned Ready: look again within half a minute (reads
        // only; nothing is written when nothing changed).
        Ok(Action::requeue(SETTLED_RECHECK))
    } else {
        // Nested Nodes are not watched: look again soon while they change.
        Ok(Action::requeue(Duration::from_secs(3)))
    }
}

/// What the pool does inside its nested cluster: installs its bootstrap
/// token, drains the nodes a scale-down removes, uncordons nodes kept,
/// deletes Nodes whose pods are gone, decides serving certificate requests
/// and counts Ready nodes. Returns the StatefulSet's replicas and whether
/// everything has settled.
async fn nested_pass(
    ctx: &Context,
    pool: &NodePool,
    names: &ClusterNames,
    token: Option<&BootstrapToken>,
    installed: &str,
    running: i32,
    observed: &mut PoolObserved,
) -> Result<(i32, bool)> {
    let pn = PoolNames::new(pool);
    if let Some(token) = token {
        install_in_nested_cluster(ctx, pool, names, token, installed).await?;
    }
    let client = nested::client(ctx, names).await?;
    let nodes = nested_nodes::list(&client, names, &pn.pool).await?;
    let mut replicas = pool.spec.replicas;
    let mut settled = true;
    if running > pool.spec.replicas {
        let mut drained = true;
        for ordinal in pool.spec.replicas..running {
            let node = format!("{}-{ordinal}", pn.statefulset());
            drained &= nested_nodes::drain(ctx, &client, names, &node).await?;
        }
        if !drained {
            replicas = running;
            settled = false;
        }
    }
    for node in &nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        match nested_nodes::ordinal(&pn.statefulset(), name) {
            // A node kept (or taken back) after a scale-down.
            Some(i) if i < pool.spec.replicas => {
                nested_nodes::uncordon_if_drained(ctx, &client, names, node).await?
            }
            // Its pod is gone: so is the Node.
            Some(i) if i >= observed.replicas && i >= replicas => {
                nested_nodes::delete_node(ctx, &client, names, name).await?
            }
            _ => {}
        }
    }
    let waiting = nested_nodes::approve_serving_certificates(
        ctx,
        &client,
        names,
        &pn.namespace,
        &pn.statefulset(),
    )
    .await?;
    let ready = nested_nodes::ready_count(&nodes);
    observed.nodes_ready = Some(ready);
    settled &= waiting == 0 && ready >= pool.spec.replicas;
    Ok((replicas, settled))
}

/// Makes sure the pool's bootstrap Secret exists for the current CA.
/// Returns the token when it still has to be installed in the nested
/// cluster.
async fn ensure_bootstrap_secret(
    ctx: &Context,
    pool: &NodePool,
    names: &ClusterNames,
    ca_fp: &str,
) -> Result<Option<BootstrapToken>> {
    let pn = PoolNames::new(pool);
    let cached = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&pn.bootstrap_secret()).within(&pn.namespace));
    let expected = pki::inputs_hash(["bootstrap", ca_fp]);
    let current = cached
        .as_ref()
        .and_then(|s| s.annotations().get(INPUTS_HASH).cloned());
    let installed = cached
        .as_ref()
        .and_then(|s| s.annotations().get(NESTED_INSTALLED).cloned());
    if current.as_deref() == Some(expected.as_str()) {
        if installed.as_deref() == Some(expected.as_str()) {
            return Ok(None);
        }
        // Read the token back to install it.
        let secret = read_secret(ctx, &pn.namespace, &pn.bootstrap_secret()).await?;
        let text = |s: &Secret, key: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        if let Some((Some(id), Some(secret))) =
            secret.map(|s| (text(&s, "token-id"), text(&s, "token-secret")))
        {
            return Ok(Some(BootstrapToken { id, secret }));
        }
    }
    let ca = read_secret(ctx, &names.namespace, &names.ca_secret())
        .await?
        .and_then(|s| crate::secrets::bundle_from_secret(&s))
        .ok_or_else(|| Error::DamagedCa {
            namespace: names.namespace.clone(),
            name: names.ca_secret(),
        })?;
    let token = BootstrapToken::generate();
    apply_secret(
        ctx,
        &desired_bootstrap_secret(pool, names, &token, &ca.cluster.cert_pem, ca_fp),
    )
    .await?;
    Ok(Some(token))
}

/// Writes the pool's bootstrap token into the nested cluster, then records
/// that on the host Secret.
async fn install_in_nested_cluster(
    ctx: &Context,
    pool: &NodePool,
    names: &ClusterNames,
    token: &BootstrapToken,
    installed_hash: &str,
) -> Result<()> {
    let pn = PoolNames::new(pool);
    // The node RBAC comes with the cluster's add-ons (see virtualcluster).
    let client = nested::client(ctx, names).await?;
    nested::apply(
        ctx,
        &client,
        names,
        &nested_bootstrap_token_secret(&pn.pool, token),
    )
    .await?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &pn.namespace);
    ctx.metrics.write("patch", "Secret");
    let patch =
        serde_json::json!({"metadata": {"annotations": {NESTED_INSTALLED: installed_hash}}});
    let params = crate::meta::patch_params();
    api.patch(&pn.bootstrap_secret(), &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            let (code, reason) = crate::error::code_and_reason(&e);
            Error::WriteSecret {
                namespace: pn.namespace.clone(),
                name: pn.bootstrap_secret(),
                code,
                reason,
            }
        })?;
    Ok(())
}

/// The pool's StatefulSet, from the cache.
fn node_statefulset(ctx: &Context, pn: &PoolNames) -> Option<Arc<Workload<StatefulSet>>> {
    ctx.stores
        .stateful_sets
        .get(&ObjectRef::new(&pn.statefulset()).within(&pn.namespace))
}

fn observe(ctx: &Context, pn: &PoolNames) -> PoolObserved {
    let status = node_statefulset(ctx, pn)
        .and_then(|s| s.status.clone())
        .unwrap_or_default();
    PoolObserved {
        replicas: status.replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        ..PoolObserved::default()
    }
}

async fn update_status(ctx: &Context, pool: &NodePool, observed: &PoolObserved) -> Result<()> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = compute_pool_status(pool, observed, &now);
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let pn = PoolNames::new(pool);
    let api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &pn.namespace);
    ctx.metrics.write("patch_status", "NodePool");
    api.patch_status(
        &pn.pool,
        &crate::meta::patch_params(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: "NodePool",
        namespace: pn.namespace,
        name: pn.pool,
        source,
    })?;
    Ok(())
}

async fn publish(ctx: &Context, pool: &NodePool, type_: EventType, reason: &str, note: String) {
    ctx.publish(pool, type_, reason, note).await;
}

/// Transient errors back off.
pub fn error_policy(_pool: Arc<NodePool>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.namespace_terminating() {
        debug!(error = %error, "the namespace is being deleted; waiting for it");
        return Action::requeue(NAMESPACE_DELETION_WAIT);
    }
    if error.is_pending() {
        return Action::requeue(Duration::from_secs(2));
    }
    ctx.metrics
        .failures
        .get_or_create(&crate::metrics::ErrorLabels {
            controller: "nodepool",
            error: error.metric_label(),
        })
        .inc();
    warn!(error = %error, "node pool reconcile failed");
    if error.needs_human() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures;
    use k8s_openapi::api::core::v1::Taint;
    use nestor_crds::{ClusterReference, NodePoolSpec};
    use serde_json::json;

    fn pool() -> NodePool {
        let mut p = NodePool::new(
            "workers",
            NodePoolSpec {
                cluster_ref: ClusterReference {
                    name: "demo".into(),
                },
                replicas: 2,
                labels: BTreeMap::from([("team".into(), "a".into())]),
                taints: vec![Taint {
                    key: "dedicated".into(),
                    value: Some("a".into()),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }],
                ..NodePoolSpec::default()
            },
        );
        p.metadata.namespace = Some("tenants".into());
        p.metadata.uid = Some("00000000-0000-0000-0000-000000000002".into());
        p.metadata.generation = Some(1);
        p
    }

    #[test]
    fn a_pool_is_owned_by_its_cluster_once() {
        let vc = fixtures::vc(json!({}));
        let mut pool = pool();
        let body = desired_pool_owner(&pool, &vc).expect("not owned yet");
        assert_eq!(
            body,
            json!({
                "apiVersion": "nestor.dev/v1alpha1",
                "kind": "NodePool",
                "metadata": {
                    "name": "workers",
                    "namespace": "tenants",
                    "ownerReferences": [{
                        "apiVersion": "nestor.dev/v1alpha1",
                        "kind": "VirtualCluster",
                        "name": "demo",
                        "uid": "00000000-0000-0000-0000-000000000001",
                    }],
                },
            }),
            "an owner, neither the controller nor blocking its deletion"
        );
        // Someone else's owner reference does not count, and stays (the
        // body names only Nestor's).
        let mut other = vc.owner_ref(&()).unwrap();
        other.uid = "someone-else".into();
        pool.metadata.owner_references = Some(vec![other.clone()]);
        assert_eq!(desired_pool_owner(&pool, &vc), Some(body));
        pool.metadata.owner_references = Some(vec![other, vc.owner_ref(&()).unwrap()]);
        assert_eq!(desired_pool_owner(&pool, &vc), None, "owned already");
        let mut unsaved = vc.clone();
        unsaved.metadata.uid = None;
        assert_eq!(desired_pool_owner(&pool, &unsaved), None, "no UID to name");
        let mut orphaning = vc.clone();
        orphaning.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        pool.metadata.owner_references = None;
        assert_eq!(
            desired_pool_owner(&pool, &orphaning),
            None,
            "a cluster being deleted takes no pool"
        );
    }

    #[test]
    fn containerd_uses_the_sandbox_image_and_the_mirrors() {
        let mirrors = BTreeMap::from([(
            "registry.k8s.io".to_string(),
            vec![
                "http://10.0.0.1:5000".to_string(),
                "https://m.example".to_string(),
            ],
        )]);
        let toml = containerd_config("mirror.example/pause:3.10", &mirrors);
        assert!(toml.contains("sandbox_image = \"mirror.example/pause:3.10\""));
        assert!(toml.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"registry.k8s.io\"]\n  endpoint = [\"http://10.0.0.1:5000\", \"https://m.example\"]"
        ));
        assert!(toml.contains("bin_dir = \"/opt/cni/bin\""));
        assert!(!containerd_config("p", &BTreeMap::new()).contains("mirrors"));
        let kubelet: serde_json::Value =
            serde_yaml::from_str(&kubelet_config(&pool(), &fixtures::vc(json!({})))).unwrap();
        assert_eq!(kubelet["serverTLSBootstrap"], true);
        assert_eq!(kubelet["resolvConf"], "");
    }

    #[test]
    fn statefulset_runs_privileged_nodes_without_host_namespaces() {
        let vc = fixtures::vc(json!({}));
        let sts = desired_node_statefulset(
            &pool(),
            &vc,
            "ghcr.io/nestor-dev/nestor-node:v1.35.4",
            2,
            "h",
        );
        assert_eq!(sts.metadata.name.as_deref(), Some("workers-node"));
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].kind,
            "NodePool"
        );
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.host_network, Some(false));
        assert_eq!(pod.host_pid, Some(false));
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.host_path.is_none())
        );
        let c = &pod.containers[0];
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
        assert_eq!(
            c.args.as_ref().unwrap()[0],
            "--node-labels=nestor.dev/node-pool=workers,team=a"
        );
        assert!(c.resources.as_ref().unwrap().requests.is_some());
        assert!(
            spec.template
                .metadata
                .unwrap()
                .annotations
                .unwrap()
                .contains_key("nestor.dev/privileged")
        );
    }

    #[test]
    fn kubelet_config_carries_dns_and_taints() {
        let vc = fixtures::vc(json!({}));
        let text = kubelet_config(&pool(), &vc);
        let config: serde_json::Value =
            serde_yaml::from_str(&text).expect("kubelet config is YAML");
        assert_eq!(config["kind"], "KubeletConfiguration");
        assert_eq!(config["clusterDNS"], json!(["10.96.0.10"]));
        assert_eq!(config["clusterDomain"], "cluster.local");
        assert_eq!(config["failCgroupV1"], false);
        assert_eq!(config["cgroupDriver"], "cgroupfs");
        assert_eq!(config["registerWithTaints"][0]["key"], "dedicated");
        assert_eq!(config["registerWithTaints"][0]["effect"], "NoSchedule");
    }

    #[test]
    fn kubelets_leave_the_shared_host_disk_to_the_host() {
        let text = kubelet_config(&pool(), &fixtures::vc(json!({})));
        let config: serde_json::Value =
            serde_yaml::from_str(&text).expect("kubelet config is YAML");
        let eviction = &config["evictionHard"];
        for signal in [
            "nodefs.available",
            "nodefs.inodesFree",
            "imagefs.available",
            "imagefs.inodesFree",
        ] {
            assert_eq!(eviction[signal], "0%", "{signal}");
        }
        assert_eq!(eviction["memory.available"], "100Mi");
        assert_eq!(config["imageGCHighThresholdPercent"], 100);
    }

    #[test]
    fn bootstrap_token_is_well_formed_and_scoped() {
        let token = BootstrapToken::generate();
        assert_eq!(token.id.len(), 6);
        assert_eq!(token.secret.len(), 16);
        assert!(
            token
                .token()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
        );
        assert!(!format!("{token:?}").contains(&token.secret));
        let nested = nested_bootstrap_token_secret("workers", &token);
        assert_eq!(
            nested.type_.as_deref(),
            Some("bootstrap.kubernetes.io/token")
        );
        let data = nested.data.unwrap();
        assert_eq!(data["usage-bootstrap-authentication"].0, b"true");
        assert!(!data.contains_key("usage-bootstrap-signing"));
        assert_eq!(
            data["auth-extra-groups"].0,
            b"system:bootstrappers:nestor:workers"
        );
        let vc = fixtures::vc(json!({}));
        let host = desired_bootstrap_secret(&pool(), &ClusterNames::new(&vc), &token, "CA", "fp");
        let config =
            String::from_utf8(host.data.unwrap()["bootstrap-kubeconfig"].0.clone()).unwrap();
        assert!(config.contains("https://demo-apiserver.tenants.svc:6443"));
    }

    #[test]
    fn pool_status_tells_what_it_waits_for() {
        let now = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let p = pool();
        let missing = compute_pool_status(&p, &PoolObserved::default(), &now);
        assert_eq!(missing.conditions[0].reason, "ClusterNotFound");
        let waiting = compute_pool_status(
            &p,
            &PoolObserved {
                control_plane_ready: Some(false),
                ..Default::default()
            },
            &now,
        );
        let ready = waiting
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap();
        assert_eq!(ready.message, "waiting for VirtualCluster demo to be ready");
        assert_eq!(
            waiting.selector.as_deref(),
            Some(
                "app.kubernetes.io/component=node,nestor.dev/cluster=demo,nestor.dev/node-pool=workers"
            )
        );
        let done = compute_pool_status(
            &p,
            &PoolObserved {
                control_plane_ready: Some(true),
                replicas: 2,
                ready_replicas: 2,
                nodes_ready: Some(2),
                ..Default::default()
            },
            &now,
        );
        assert!(done.conditions.iter().all(|c| c.status == "True"));
        assert_eq!(
            (done.desired_replicas, done.replicas, done.ready_replicas),
            (2, 2, 2)
        );
    }
}
