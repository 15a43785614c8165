//! The host cluster's add-ons, as one YAML stream for `kubectl apply`.

use super::settings::setting;
use crate::paths;

/// The host cluster's add-ons: CoreDNS (answering only for the cluster
/// domain, forwarding nothing off this machine), the RBAC of the node's
/// NetworkPolicy enforcer and the default StorageClass.
pub fn addons_yaml() -> String {
    format!(
        "{coredns_rbac}---\n{coredns}---\n{kube_router}---\n{storage_class}",
        coredns_rbac = COREDNS_RBAC,
        coredns = coredns_yaml(),
        kube_router = KUBE_ROUTER_RBAC,
        storage_class = serde_yaml::to_string(&crate::provisioner::storage_class())
            .expect("StorageClass serializes"),
    )
}

/// CoreDNS's ServiceAccount and what it may read.
const COREDNS_RBAC: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
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
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
"#;

/// CoreDNS: its Corefile, Deployment and the cluster DNS Service.
fn coredns_yaml() -> String {
    let image = format!(
        "registry.k8s.io/coredns/coredns:v{}",
        paths::version("COREDNS_VERSION")
    );
    let dns = setting("CLUSTER_DNS");
    format!(
        r#"apiVersion: v1
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
"#
    )
}

/// The RBAC of kube-router, the node's NetworkPolicy enforcer.
const KUBE_ROUTER_RBAC: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "nestor-testbed:kube-router"}
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
metadata: {name: "nestor-testbed:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "nestor-testbed:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "nestor-testbed:kube-router"}]
"#;
