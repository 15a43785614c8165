//! Helpers for what the end-to-end tests look at on the host cluster and
//! its node: node pools and node pods, pod and Service addresses, and what
//! no tenant may reach.

use super::e2e::Env;
use super::nested::connect_script;
use crate::node::{node_command, setting};
use crate::support::wait_for;
use crate::tools::kubectl_ok;
use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use nestor_crds::NodePool;
use std::time::Duration;

/// Deletes a node pod and waits until its StatefulSet has made a new one.
pub async fn recreate_node_pod(env: &Env, ns: &str, name: &str) -> Result<()> {
    let pods: Api<Pod> = env.api(ns);
    let old_uid = pods.get(name).await?.metadata.uid.unwrap_or_default();
    pods.delete(name, &DeleteParams::default()).await?;
    let name = name.to_string();
    wait_for(
        &format!("{name} recreated"),
        Duration::from_secs(120),
        move || {
            let (pods, name, old_uid) = (pods.clone(), name.clone(), old_uid.clone());
            Box::pin(async move {
                Ok(pods
                    .get_opt(&name)
                    .await?
                    .is_some_and(|p| p.metadata.uid.as_deref() != Some(old_uid.as_str())))
            })
        },
    )
    .await
}

/// Waits until a pool reports Ready with `replicas` ready nodes.
pub async fn pool_ready(
    env: &Env,
    ns: &str,
    name: &str,
    replicas: i32,
    timeout: Duration,
) -> Result<()> {
    let api = env.api::<NodePool>(ns);
    let name = name.to_string();
    wait_for(&format!("NodePool {ns}/{name} Ready"), timeout, || {
        let api = api.clone();
        let name = name.clone();
        Box::pin(async move {
            let np = api.get(&name).await?;
            Ok(np.status.is_some_and(|s| {
                s.ready_replicas == replicas
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            }))
        })
    })
    .await
}

/// The IP of a host pod.
pub fn host_pod_ip(env: &Env, ns: &str, name: &str) -> Result<String> {
    kubectl_ok(
        &env.admin,
        &[
            "get",
            "pod",
            "-n",
            ns,
            name,
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    )
}

/// Whether `ip:port` accepts a TCP connection from the test bed's node.
pub fn node_connects(ip: &str, port: u16) -> Result<bool> {
    // busybox's shell runs its own nc, the one the pods' probes use.
    let out = node_command("busybox", &["sh", "-c", &connect_script(ip, port)]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "open")
}

/// A field of a host object, by `kubectl get -o jsonpath`.
pub fn host_field(env: &Env, ns: &str, object: &[&str], path: &str) -> Result<String> {
    let path = format!("jsonpath={path}");
    let mut args = vec!["get", "-n", ns];
    args.extend_from_slice(object);
    args.extend(["-o", path.as_str()]);
    kubectl_ok(&env.admin, &args, None)
}

/// The IP of the first pod of `cluster` in the given role.
pub fn component_ip(env: &Env, ns: &str, cluster: &str, component: &str) -> Result<String> {
    let selector = format!("nestor.dev/cluster={cluster},app.kubernetes.io/component={component}");
    host_field(
        env,
        ns,
        &["pods", "-l", &selector],
        "{.items[0].status.podIP}",
    )
}

/// The cluster IP of a host Service.
pub fn service_ip(env: &Env, ns: &str, name: &str) -> Result<String> {
    host_field(env, ns, &["service", name], "{.spec.clusterIP}")
}

/// What no tenant may reach on the host: its API server (directly and
/// through its Service), its node's kubelet, the link-local listener and
/// the platform's backup store.
pub fn host_targets(env: &Env) -> Result<Vec<(String, String, u16)>> {
    let store = env
        .s3
        .endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(0);
    Ok(vec![
        (
            "the platform's backup store".into(),
            setting("HOST_IP").into(),
            store,
        ),
        (
            "the host's API server".into(),
            setting("HOST_IP").into(),
            env.bed.api_port,
        ),
        (
            "the host's API server through its Service".into(),
            service_ip(env, "default", "kubernetes")?,
            443,
        ),
        (
            "the host node's kubelet".into(),
            setting("NODE_IP").into(),
            10250,
        ),
        (
            "the link-local metadata listener".into(),
            setting("METADATA_IP").into(),
            setting("METADATA_PORT").parse()?,
        ),
    ])
}
