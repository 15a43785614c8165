//! Names, labels, annotations and owner references shared by every child.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube_core::{Resource, ResourceExt};
use nestor_crds::{NodePool, VirtualCluster};
use std::collections::BTreeMap;

/// The one field manager every Nestor write uses.
pub const FIELD_MANAGER: &str = "nestor-operator";
/// Patch parameters that name Nestor's field manager (for merge patches of
/// status and metadata; children use server-side apply).
pub fn patch_params() -> kube_core::params::PatchParams {
    kube_core::params::PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Finalizer on `NodePool`s; released once their nodes are tidied away.
/// `VirtualCluster`s have none: the garbage collector deletes their
/// children.
pub const POOL_FINALIZER: &str = "nestor.dev/cleanup";
/// Label on every object Nestor creates, in the host cluster and in nested
/// clusters alike; the operator's watches select on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "nestor-operator");
/// Label naming the `VirtualCluster` an object belongs to.
pub const CLUSTER_LABEL: &str = "nestor.dev/cluster";
/// Label naming the `NodePool` an object belongs to.
pub const POOL_LABEL: &str = "nestor.dev/node-pool";
/// Label naming the component (etcd, kube-apiserver, ...).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Annotation holding the hash of what Nestor last applied to a child.
pub const APPLIED_HASH: &str = "nestor.dev/applied-hash";
/// Annotation holding the hash of the inputs a Secret's content was made from.
pub const INPUTS_HASH: &str = "nestor.dev/inputs-hash";
/// Annotation on the CoreDNS ConfigMap: the hash of the objects Nestor last
/// wrote into the nested cluster.
pub const NESTED_ADDONS: &str = "nestor.dev/nested-addons";
/// Annotation on a pool's bootstrap Secret: the hash of what was installed
/// into the nested cluster for this pool.
pub const NESTED_INSTALLED: &str = "nestor.dev/nested-installed";
/// Annotation on the cached stand-in of a watched object that does not
/// decode: what could not be read (never stored; see `model::readable`).
pub const UNREADABLE: &str = "nestor.dev/unreadable";
/// The port the API server serves on, in its pod and on its Service.
pub const APISERVER_PORT: i32 = 6443;

/// The components of a virtual cluster, each a set of pods or a PKI bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Pki,
    Etcd,
    /// The Job that takes an etcd snapshot before a version change.
    EtcdSnapshot,
    /// A Job that backs etcd up to `spec.backup`'s destination.
    EtcdBackup,
    ApiServer,
    ControllerManager,
    Scheduler,
    CoreDns,
    KubeProxy,
    Node,
}

impl Component {
    /// The value of `app.kubernetes.io/component` and the suffix of names.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Pki => "pki",
            Component::Etcd => "etcd",
            Component::EtcdSnapshot => "etcd-snapshot",
            Component::EtcdBackup => "etcd-backup",
            Component::ApiServer => "apiserver",
            Component::ControllerManager => "controller-manager",
            Component::Scheduler => "scheduler",
            Component::CoreDns => "coredns",
            Component::KubeProxy => "kube-proxy",
            Component::Node => "node",
        }
    }

    /// The value of `app.kubernetes.io/name`: the upstream program.
    pub fn program(self) -> &'static str {
        match self {
            Component::Pki => "nestor-pki",
            Component::Etcd => "etcd",
            Component::EtcdSnapshot => "etcdctl",
            Component::EtcdBackup => "etcdctl",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
            Component::CoreDns => "coredns",
            Component::KubeProxy => "kube-proxy",
            Component::Node => "kubelet",
        }
    }
}

/// Names of a virtual cluster's children, all derived from its name.
#[derive(Clone, Debug)]
pub struct ClusterNames {
    pub cluster: String,
    pub namespace: String,
}

impl ClusterNames {
    pub fn new(vc: &VirtualCluster) -> Self {
        Self {
            cluster: vc.metadata.name.clone().unwrap_or_default(),
            namespace: vc.metadata.namespace.clone().unwrap_or_default(),
        }
    }
    fn suffixed(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.cluster)
    }
    pub fn etcd(&self) -> String {
        self.suffixed("etcd")
    }
    pub fn etcd_peer_service(&self) -> String {
        self.suffixed("etcd-peer")
    }
    pub fn apiserver(&self) -> String {
        self.suffixed("apiserver")
    }
    pub fn controller_manager(&self) -> String {
        self.suffixed("controller-manager")
    }
    pub fn scheduler(&self) -> String {
        self.suffixed("scheduler")
    }
    pub fn coredns(&self) -> String {
        self.suffixed("coredns")
    }
    pub fn dns_service(&self) -> String {
        self.suffixed("dns")
    }
    pub fn encryption_secret(&self) -> String {
        self.suffixed("encryption")
    }
    pub fn apiserver_config(&self) -> String {
        self.suffixed("apiserver-config")
    }
    pub fn kube_proxy_config(&self) -> String {
        self.suffixed("kube-proxy")
    }
    pub fn ca_secret(&self) -> String {
        self.suffixed("ca")
    }
    /// The CA that signs the client certificates a tenant requests through
    /// the nested CSR API; replaced with every admin generation.
    pub fn client_signer_secret(&self) -> String {
        self.suffixed("client-signer")
    }
    /// The volume that keeps the etcd snapshots taken before version
    /// changes.
    pub fn etcd_snapshots(&self) -> String {
        self.suffixed("etcd-snapshots")
    }
    pub fn etcd_certs_secret(&self) -> String {
        self.suffixed("etcd-certs")
    }
    pub fn apiserver_certs_secret(&self) -> String {
        self.suffixed("apiserver-certs")
    }
    pub fn controller_manager_secret(&self) -> String {
        self.suffixed("controller-manager-kubeconfig")
    }
    pub fn scheduler_secret(&self) -> String {
        self.suffixed("scheduler-kubeconfig")
    }
    pub fn coredns_secret(&self) -> String {
        self.suffixed("coredns-kubeconfig")
    }
    pub fn admin_kubeconfig_secret(&self) -> String {
        self.suffixed("admin-kubeconfig")
    }
    pub fn break_glass_kubeconfig_secret(&self) -> String {
        self.suffixed("break-glass-kubeconfig")
    }
    /// DNS name of the API server Service inside the host cluster.
    pub fn apiserver_host(&self) -> String {
        format!("{}.{}.svc", self.apiserver(), self.namespace)
    }
    /// URL the control-plane pods and node pods use to reach the API server.
    pub fn internal_endpoint(&self) -> String {
        format!("https://{}:{APISERVER_PORT}", self.apiserver_host())
    }
    /// DNS name of the etcd client Service.
    pub fn etcd_client_host(&self) -> String {
        format!("{}.{}.svc", self.etcd(), self.namespace)
    }
    /// DNS name of one etcd member, through the headless peer Service.
    pub fn etcd_member_host(&self, ordinal: i32) -> String {
        format!(
            "{}-{ordinal}.{}.{}.svc",
            self.etcd(),
            self.etcd_peer_service(),
            self.namespace
        )
    }
    /// The labels that select every object Nestor made for this cluster.
    pub fn owned_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CLUSTER_LABEL.to_string(), self.cluster.clone()),
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ])
    }
}

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

/// Labels on every child of a virtual cluster's component.
pub fn component_labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, component);
    labels.insert("app.kubernetes.io/name".into(), component.program().into());
    labels.insert("app.kubernetes.io/instance".into(), cluster.into());
    labels.insert("app.kubernetes.io/part-of".into(), "nestor".into());
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels
}

/// The labels that select a component's pods: stable for the object's life.
pub fn selector_labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
        (COMPONENT_LABEL.to_string(), component.as_str().to_string()),
    ])
}

/// An owner reference to `owner` that makes it the controller of a child, so
/// the garbage collector removes the child with it.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    owner.controller_owner_ref(&())
}

/// Metadata of a child owned by a `VirtualCluster`.
pub fn cluster_child_meta(vc: &VirtualCluster, name: String, component: Component) -> ObjectMeta {
    let names = ClusterNames::new(vc);
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(component_labels(&names.cluster, component)),
        owner_references: controller_ref(vc).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Labels on every child of a node pool.
pub fn pool_labels(pool: &NodePool) -> BTreeMap<String, String> {
    let mut labels = component_labels(&pool.spec.cluster_ref.name, Component::Node);
    labels.insert(
        POOL_LABEL.into(),
        pool.metadata.name.clone().unwrap_or_default(),
    );
    labels
}

/// The labels that select a node pool's pods.
pub fn pool_selector_labels(pool: &NodePool) -> BTreeMap<String, String> {
    let mut labels = selector_labels(&pool.spec.cluster_ref.name, Component::Node);
    labels.insert(
        POOL_LABEL.into(),
        pool.metadata.name.clone().unwrap_or_default(),
    );
    labels
}

/// Metadata of a child owned by a `NodePool`.
pub fn pool_child_meta(pool: &NodePool, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: pool.metadata.namespace.clone(),
        labels: Some(pool_labels(pool)),
        owner_references: controller_ref(pool).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Renders a label map as a selector string (`a=b,c=d`), sorted.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata of an object Nestor writes into a nested cluster.
pub fn nested_meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
        ..ObjectMeta::default()
    }
}
