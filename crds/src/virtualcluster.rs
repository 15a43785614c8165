//! The `VirtualCluster` kind: one nested Kubernetes control plane.

use crate::backup::{BackupRecord, BackupSpec};
use crate::common::{ComponentSpec, DNS_SUBDOMAIN_PATTERN, one};
use crate::images::ImagesSpec;
use crate::placement::Placement;
use crate::upgrade::{UpgradeSpec, UpgradeStatus};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The Kubernetes version a `VirtualCluster` runs when its spec names none.
pub const DEFAULT_VERSION: &str = "1.35.4";

/// A nested Kubernetes cluster whose control plane (etcd, kube-apiserver,
/// kube-controller-manager, kube-scheduler, CoreDNS) runs as pods in this
/// namespace of the host cluster. Every field has a default: an empty spec
/// gives a working single-member control plane.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "nestor.dev",
    version = "v1alpha1",
    kind = "VirtualCluster",
    namespaced,
    shortname = "vc",
    category = "nestor",
    status = "VirtualClusterStatus",
    doc = "A nested Kubernetes cluster whose control plane runs as pods on the host cluster.",
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "Kubernetes version every API server runs"),
    printcolumn(name = "Desired", type_ = "string", json_path = ".spec.version", description = "Kubernetes version asked for"),
    printcolumn(name = "Upgrade", type_ = "string", json_path = ".status.upgrade.step", description = "Where the latest version change stands"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the control plane serves"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", description = "Where the nested API server is reached"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("the name must be a DNS label that starts with a letter: lowercase letters, digits and '-' (children such as Services take names derived from it)"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("a VirtualCluster name may have at most 40 characters (children add suffixes)"),
    validation = Rule::new("(has(oldSelf.spec.apiServer) && has(oldSelf.spec.apiServer.adminCredentialGeneration) ? oldSelf.spec.apiServer.adminCredentialGeneration : 0) <= (has(self.spec.apiServer) && has(self.spec.apiServer.adminCredentialGeneration) ? self.spec.apiServer.adminCredentialGeneration : 0)").message("spec.apiServer.adminCredentialGeneration can only be raised: a lower one would bind an earlier admin group again"),
    validation = Rule::new("(has(oldSelf.spec.apiServer) && has(oldSelf.spec.apiServer.encryptionKeyGeneration) ? oldSelf.spec.apiServer.encryptionKeyGeneration : 0) <= (has(self.spec.apiServer) && has(self.spec.apiServer.encryptionKeyGeneration) ? self.spec.apiServer.encryptionKeyGeneration : 0)").message("spec.apiServer.encryptionKeyGeneration can only be raised: a lower one would bring back a retired key")
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterSpec {
    /// Kubernetes version of the nested control plane, as `1.MINOR.PATCH`:
    /// one of the versions this operator is tested with (1.34.5, 1.35.4).
    /// It may be raised one minor version at a time and never lowered. A
    /// change is rolled out in the order of the version skew policy: an
    /// etcd snapshot, etcd, every API server, the controller-manager and
    /// the scheduler, CoreDNS, then the node pools, one node at a time
    /// (see `upgrade`).
    #[serde(default = "default_version")]
    #[schemars(length(min = 5, max = 16))]
    #[x_kube(
        validation = Rule::new("self.matches('^1\\\\.(0|[1-9][0-9]{0,2})\\\\.(0|[1-9][0-9]{0,3})$')").message("version must be MAJOR.MINOR.PATCH with major 1 and no leading zeros, for example 1.35.4 (no leading 'v')"),
        validation = Rule::new("!isSemver(self) || !isSemver(oldSelf) || semver(self).compareTo(semver(oldSelf)) >= 0").message("version cannot be downgraded"),
        validation = Rule::new("!isSemver(self) || !isSemver(oldSelf) || semver(self).minor() <= semver(oldSelf).minor() + 1").message("version can be upgraded by one minor version at a time")
    )]
    pub version: String,

    /// The nested cluster's etcd: its members, storage and resources.
    #[serde(default)]
    pub etcd: EtcdSpec,

    /// The nested cluster's kube-apiserver and how it is exposed.
    #[serde(default)]
    pub api_server: ApiServerSpec,

    /// The nested cluster's kube-controller-manager.
    #[serde(default)]
    pub controller_manager: ComponentSpec,

    /// The nested cluster's kube-scheduler.
    #[serde(default)]
    pub scheduler: ComponentSpec,

    /// Address ranges and DNS settings of the nested cluster. Immutable once
    /// the cluster is created.
    #[serde(default)]
    pub networking: NetworkingSpec,

    /// Cluster add-ons that Nestor runs for the nested cluster.
    #[serde(default)]
    pub addons: AddonsSpec,

    /// Where component images come from. Set a registry to mirror every image
    /// on an air-gapped host, or replace single images.
    #[serde(default)]
    pub images: ImagesSpec,
    /// Where the control plane's pods (etcd, the API server, the
    /// controller-manager, the scheduler, CoreDNS) run on the host, and in
    /// which runtime.
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// Destinations on the host's networks that this cluster's node pods may
    /// reach, beyond what the platform allows every cluster (the Helm value
    /// `network.allowedEgress`): a database or a registry of this tenant's
    /// own. Only the principals of the Helm value `security.egressAdmins`
    /// may set or change it (a ValidatingAdmissionPolicy of the chart).
    /// Link-local ranges stay out of reach whatever it says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_egress: Vec<EgressAllowance>,
    /// How a change of `version` or `images` is rolled out.
    #[serde(default, skip_serializing_if = "UpgradeSpec::is_default")]
    pub upgrade: UpgradeSpec,
    /// Scheduled and on-demand backups of the nested cluster's etcd
    /// (docs/backup.md). Unset: none are taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
}

/// A destination node pods may reach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressAllowance {
    /// The destination range, in CIDR notation, such as 10.0.5.10/32.
    #[schemars(length(min = 4, max = 43))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("allowedEgress cidr must be a CIDR such as 10.0.5.10/32"))]
    pub cidr: String,
    /// TCP ports (1 to 65535); none: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

fn default_version() -> String {
    DEFAULT_VERSION.to_string()
}

/// The nested cluster's etcd.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName)").message("etcd storageClassName cannot be added or removed after creation (a StatefulSet's volume claims are fixed)"))]
pub struct EtcdSpec {
    /// Number of etcd members: 1, 3 or 5. Raft needs a majority of members,
    /// so an even count adds no fault tolerance.
    #[serde(default = "one")]
    #[x_kube(
        validation = Rule::new("self == 1 || self == 3 || self == 5").message("etcd replicas must be 1, 3 or 5 (an odd number, for a Raft majority)"),
        validation = Rule::new("self == oldSelf").message("etcd replicas cannot change after creation (members are not yet added to or removed from a running etcd cluster)")
    )]
    pub replicas: i32,
    /// Size of each member's persistent volume, as a Kubernetes quantity of
    /// at least 64Mi.
    #[serde(default = "default_etcd_storage")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(
        validation = Rule::new("isQuantity(self) && !quantity(self).isLessThan(quantity('64Mi'))").message("etcd storage must be a quantity of at least 64Mi, such as 1Gi"),
        validation = Rule::new("self == oldSelf").message("etcd storage cannot change after creation (a StatefulSet's volume claims are fixed)")
    )]
    pub storage: String,
    /// Storage class of the members' volumes (a DNS subdomain of at most 253
    /// characters); the host's default class when unset. Fixed after
    /// creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = DNS_SUBDOMAIN_PATTERN)
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("etcd storageClassName cannot change after creation (a StatefulSet's volume claims are fixed)"))]
    pub storage_class_name: Option<String>,
    /// CPU and memory of each etcd member (`requests` and `limits` of
    /// `cpu`, `memory`, `ephemeral-storage` or `hugepages-*`; each limit at
    /// least its request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for EtcdSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            storage: default_etcd_storage(),
            storage_class_name: None,
            resources: None,
        }
    }
}

fn default_etcd_storage() -> String {
    "1Gi".to_string()
}

/// How the nested kube-apiserver is reached from outside its pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ExposureType {
    /// A cluster-internal Service: reachable from the host cluster's pods.
    #[default]
    ClusterIP,
    /// A NodePort Service: reachable on every host node's address.
    NodePort,
    /// A LoadBalancer Service: reachable on the address the host's load
    /// balancer assigns.
    LoadBalancer,
}

/// The nested cluster's kube-apiserver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerSpec {
    /// Number of kube-apiserver replicas; they all serve.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
    /// Type of the Service that exposes the API server.
    #[serde(default)]
    pub exposure: ExposureType,
    /// Extra DNS names and IP addresses for the serving certificate, for
    /// example a load balancer's name: at most 32, each at most 253
    /// characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "certSANs")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub cert_sans: Vec<String>,
    /// Extra kube-apiserver flags, as `flag-name: value` (without the leading
    /// dashes): at most 32, each value at most 1024 characters on one line.
    /// Only flags that change nothing Nestor relies on are accepted (listed in
    /// docs/security.md); any other is refused by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub extra_args: BTreeMap<String, String>,
    /// CPU and memory of each kube-apiserver replica (as for etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Raise to issue a new admin kubeconfig: the admin certificate's group
    /// carries this number, and only the current group is bound to
    /// `cluster-admin`, so every earlier admin kubeconfig stops working.
    /// It also replaces the CA that signs client certificates requested
    /// through the nested cluster's CSR API, so those stop working too.
    /// It can only be raised.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub admin_credential_generation: i64,
    /// Raise to rotate the key that encrypts the nested cluster's Secrets
    /// in its etcd: a new key encrypts every write from then on, every
    /// Secret is rewritten with it, and the old key is then dropped. It can
    /// only be raised.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub encryption_key_generation: i64,
    /// What the API server's audit log records of each request, on its
    /// standard output.
    #[serde(default)]
    pub audit: AuditSpec,
}

/// The nested API server's audit log.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSpec {
    /// How much of each request is recorded. Secrets, ConfigMaps and token
    /// requests are never recorded beyond `Metadata`; health checks not at
    /// all.
    #[serde(default)]
    pub level: AuditLevel,
}

/// An audit level, as Kubernetes' audit policy names them.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum AuditLevel {
    /// Nothing.
    None,
    /// Who did what to which object, and the answer's status.
    #[default]
    Metadata,
    /// Metadata and the request's body.
    Request,
    /// Metadata, the request's body and the response's.
    RequestResponse,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Default for ApiServerSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            exposure: ExposureType::ClusterIP,
            cert_sans: Vec::new(),
            extra_args: BTreeMap::new(),
            resources: None,
            admin_credential_generation: 0,
            encryption_key_generation: 0,
            audit: AuditSpec::default(),
        }
    }
}

/// Address ranges and DNS of the nested cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("networking is immutable after creation; create a new VirtualCluster to change it"),
    validation = Rule::new("!isCIDR(self.podCIDR) || !isCIDR(self.serviceCIDR) || !(cidr(self.podCIDR).containsIP(cidr(self.serviceCIDR).masked().ip()) || cidr(self.serviceCIDR).containsIP(cidr(self.podCIDR).masked().ip()))").message("podCIDR and serviceCIDR must not overlap"),
    validation = Rule::new("!isCIDR(self.serviceCIDR) || !isIP(self.dnsServiceIP) || cidr(self.serviceCIDR).containsIP(self.dnsServiceIP)").message("dnsServiceIP must lie inside serviceCIDR")
)]
pub struct NetworkingSpec {
    /// Address range of the nested cluster's pods, in CIDR notation.
    #[serde(default = "default_pod_cidr", rename = "podCIDR")]
    #[schemars(length(min = 9, max = 43))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("podCIDR must be a CIDR such as 10.244.0.0/16"))]
    pub pod_cidr: String,
    /// Address range of the nested cluster's Services, in CIDR notation.
    #[serde(default = "default_service_cidr", rename = "serviceCIDR")]
    #[schemars(length(min = 9, max = 43))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("serviceCIDR must be a CIDR such as 10.96.0.0/12"))]
    pub service_cidr: String,
    /// DNS domain of the nested cluster's Services.
    #[serde(default = "default_cluster_domain")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = DNS_SUBDOMAIN_PATTERN)
    )]
    pub cluster_domain: String,
    /// Service address of the nested cluster's DNS; it must lie inside
    /// `serviceCIDR`.
    #[serde(default = "default_dns_ip", rename = "dnsServiceIP")]
    #[schemars(length(min = 7, max = 39))]
    #[x_kube(validation = Rule::new("isIP(self)").message("dnsServiceIP must be an IP address such as 10.96.0.10"))]
    pub dns_service_ip: String,
}

impl Default for NetworkingSpec {
    fn default() -> Self {
        Self {
            pod_cidr: default_pod_cidr(),
            service_cidr: default_service_cidr(),
            cluster_domain: default_cluster_domain(),
            dns_service_ip: default_dns_ip(),
        }
    }
}

fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}
fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}
fn default_cluster_domain() -> String {
    "cluster.local".into()
}
fn default_dns_ip() -> String {
    "10.96.0.10".into()
}

/// Add-ons Nestor runs for the nested cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddonsSpec {
    /// CoreDNS, the nested cluster's DNS server.
    #[serde(default, rename = "coreDNS")]
    pub core_dns: CoreDnsSpec,
    /// kube-proxy, which programs the nested cluster's Services on every node.
    #[serde(default)]
    pub kube_proxy: KubeProxySpec,
}

/// CoreDNS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoreDnsSpec {
    /// Number of CoreDNS replicas.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
}

impl Default for CoreDnsSpec {
    fn default() -> Self {
        Self { replicas: 1 }
    }
}

/// kube-proxy settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxySpec {
    /// How kube-proxy programs Services: `iptables` or `nftables` (IPVS is
    /// not offered).
    #[serde(default)]
    pub mode: KubeProxyMode,
}

/// kube-proxy's proxy mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxyMode {
    /// iptables rules.
    #[default]
    Iptables,
    /// nftables rules (Kubernetes 1.31 and later).
    Nftables,
}

/// Lifecycle phase of a `VirtualCluster`, a summary of its conditions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum VirtualClusterPhase {
    /// Children are being created or are not ready yet.
    #[default]
    Provisioning,
    /// Every control-plane component is ready.
    Ready,
    /// The cluster was ready and a component stopped being ready.
    Degraded,
    /// The spec cannot be applied; see the `Ready` condition's message.
    Invalid,
    /// The cluster is being deleted.
    Deleting,
}

/// What the operator observed of a `VirtualCluster`. Computed only from the
/// children's real status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterStatus {
    /// Lifecycle phase, a summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VirtualClusterPhase>,
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// URL of the nested API server, as written in the admin kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Name of the Secret (in this namespace) that holds the admin
    /// kubeconfig under the key `kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_kubeconfig_secret: Option<String>,
    /// Kubernetes version that every running API server replica has, once
    /// no replica of another version is left; node pools run no newer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The `spec.images` the running control plane was built from, with
    /// `version`: what a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImagesSpec>,
    /// The latest change of `version` or `images`: where it stands, or how
    /// it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// The verified backups at `spec.backup`'s destination, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupRecord>,
    /// The last value of the annotation `nestor.dev/backup-now` a backup
    /// was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_request: Option<String>,
    /// `EtcdReady`, `APIServerReady`, `ControllerManagerReady`,
    /// `SchedulerReady`, `DNSReady`, `Upgraded`, `BackupSucceeded` (with
    /// `spec.backup`) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
