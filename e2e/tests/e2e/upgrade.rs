//! Version changes of a running cluster: an upgrade from the previous minor
//! (`K8S_PREVIOUS_VERSION`) to the current one, with traffic that must
//! not stop, and an upgrade whose API server never serves, which Nestor
//! rolls back.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use nestor_controllers::model::status::VERSION_ANNOTATION;
use nestor_crds::{NodePool, UpgradeStep, VirtualCluster};
use nestor_e2e::harness::e2e::Env;
use nestor_e2e::harness::host::pool_ready;
use nestor_e2e::harness::nested::{
    BUSYBOX, default_service_account, get, nested, nested_apply, pool_yaml, wait_nested,
};
use nestor_e2e::paths;
use nestor_e2e::support::{vc_yaml, wait_for};
use nestor_e2e::testbed::client_for;
use nestor_e2e::tools::kubectl_ok;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, as the nested client's `date +%s` prints them.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The version of the host pod that holds a component's leader Lease in
/// the nested cluster (`None` when no live pod does).
async fn leader(env: &Env, ns: &str, config: &Path, component: &str) -> Result<Option<String>> {
    let nested = client_for(config).await?;
    let program = format!("kube-{component}");
    let lease = Api::<Lease>::namespaced(nested, "kube-system")
        .get(&program)
        .await?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let Some((pod, _)) = holder.split_once('_') else {
        return Ok(None);
    };
    let pod = env.api::<Pod>(ns).get_opt(pod).await?;
    Ok(pod
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.metadata.annotations)
        .and_then(|a| a.get(VERSION_ANNOTATION).cloned()))
}

/// Two replicas that serve their pod's name, a budget that keeps one of
/// them available, and their Service. `preStop` keeps a terminating
/// replica serving while the Service's endpoints change, as a workload
/// that shuts down gracefully does.
fn web_with_budget() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      nodeSelector: {{tier: app}}
      terminationGracePeriodSeconds: 15
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels: {{app: web}}
      containers:
      - name: web
        image: {BUSYBOX}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec:
              command: ["sleep", "5"]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 1
  selector:
    matchLabels: {{app: web}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

/// A client on the pool that keeps its version: it calls the Service five
/// times a second and prints `ok <second>` or `fail <second>` for each call.
fn client_yaml(service_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeSelector: {{tier: client}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {BUSYBOX}
    command:
    - sh
    - -c
    - |
      while true; do
        if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 {service_ip} 80 | grep -q web-; then
          echo "ok $(date +%s)"
        else
          echo "fail $(date +%s)"
        fi
        sleep 0.2
      done
"#
    )
}

/// The client's calls, as (second, succeeded).
fn calls(config: &Path) -> Result<Vec<(u64, bool)>> {
    let log = nested(config, &["logs", "client"])?;
    Ok(log
        .lines()
        .filter_map(|l| {
            let (result, at) = l.split_once(' ')?;
            Some((at.trim().parse().ok()?, result == "ok"))
        })
        .collect())
}

/// Calls and failures made in `[from, to)`.
fn tally(calls: &[(u64, bool)], from: u64, to: u64) -> (usize, usize) {
    let made: Vec<bool> = calls
        .iter()
        .filter(|(at, _)| (from..to).contains(at))
        .map(|(_, ok)| *ok)
        .collect();
    (made.len(), made.iter().filter(|ok| !**ok).count())
}

/// The cluster's upgrade step, and its status version, now.
async fn upgrade_step(
    vcs: &Api<VirtualCluster>,
    name: &str,
) -> Result<(Option<UpgradeStep>, Option<String>)> {
    let vc = vcs.get(name).await?;
    let status = vc.status.unwrap_or_default();
    Ok((status.upgrade.map(|u| u.step), status.version))
}

/// The kubelet versions of a pool's nested Nodes, sorted.
fn kubelet_versions(config: &Path, pool: &str) -> Result<String> {
    get(
        config,
        &["nodes", "-l", &format!("nestor.dev/node-pool={pool}")],
        "{.items[*].status.nodeInfo.kubeletVersion}",
    )
}

/// The server's version as a nested client sees it.
fn server_version(config: &Path) -> Result<String> {
    let out = nested(config, &["version", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// A cluster of the previous minor with two pools (one that follows the
/// cluster, one that keeps its version) is upgraded to the current minor:
/// the steps come in the skew policy's order, no kubelet runs ahead of the
/// API servers, a Service called in a loop fails no call while the control
/// plane changes and stays within its budget while the nodes are
/// replaced, and what was written before is still there.
pub(crate) async fn upgrade_follows_the_skew_policy(env: &Env) -> Result<()> {
    let from = paths::version("K8S_PREVIOUS_VERSION");
    let to = paths::version("K8S_VERSION");
    let ns = env.namespace("upgrade")?;
    env.apply(
        &ns,
        &[
            vc_yaml("up", &format!("{{version: \"{from}\"}}")),
            pool_yaml("app", "up", 2, "  labels: {tier: app}\n"),
            pool_yaml(
                "client",
                "up",
                1,
                &format!("  version: \"{from}\"\n  labels: {{tier: client}}\n"),
            ),
        ]
        .join("---\n"),
    )?;
    env.ready(&ns, "up", Instant::now(), Duration::from_secs(180))
        .await?;
    pool_ready(env, &ns, "app", 2, Duration::from_secs(180)).await?;
    pool_ready(env, &ns, "client", 1, Duration::from_secs(180)).await?;
    let config = env.nested_kubeconfig(&ns, "up").await?;
    default_service_account(&config).await?;
    ensure!(server_version(&config)? == format!("v{from}"), "not {from}");
    nested_apply(&config, &web_with_budget())?;
    nested(
        &config,
        &[
            "create",
            "configmap",
            "before",
            "--from-literal=written=before-the-upgrade",
        ],
    )?;
    let service_ip = get(&config, &["service", "web"], "{.spec.clusterIP}")?;
    nested_apply(&config, &client_yaml(&service_ip))?;
    wait_nested(
        "the client's calls succeeding",
        Duration::from_secs(180),
        || {
            Ok(calls(&config)?
                .iter()
                .rev()
                .take(5)
                .filter(|(_, ok)| *ok)
                .count()
                == 5)
        },
    )
    .await?;

    // The upgrade, watched step by step.
    let vcs = env.api::<VirtualCluster>(&ns);
    let started = Instant::now();
    let t0 = unix_now();
    vcs.patch(
        "up",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"version": to}})),
    )
    .await?;
    let mut steps: Vec<(UpgradeStep, Duration)> = Vec::new();
    let mut control_plane_done = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (step, version) = upgrade_step(&vcs, "up").await?;
        if let Some(step) = step
            && steps.last().map(|(s, _)| *s) != Some(step)
        {
            eprintln!(
                "upgrade: {step:?} at {:.1}s",
                started.elapsed().as_secs_f64()
            );
            steps.push((step, started.elapsed()));
        }
        // Kubelets never run a version the API servers do not all run, and
        // nodes change only at the last step.
        if version.as_deref() != Some(to.as_str()) || step < Some(UpgradeStep::NodePools) {
            let app = kubelet_versions(&config, "app").unwrap_or_default();
            ensure!(
                !app.contains(&to),
                "a kubelet runs {to} at step {step:?} while the API servers run {version:?}: {app}"
            );
        }
        if step >= Some(UpgradeStep::NodePools) && control_plane_done.is_none() {
            control_plane_done = Some((unix_now(), started.elapsed()));
            ensure!(
                version.as_deref() == Some(to.as_str()),
                "status.version is {version:?}"
            );
            // Nodes are drained only with the new controllers leading.
            for component in ["controller-manager", "scheduler"] {
                let leader = leader(env, &ns, &config, component).await?;
                ensure!(
                    leader.as_deref() == Some(to.as_str()),
                    "the {component}'s leader runs {leader:?} when the nodes start to change"
                );
            }
        }
        if step == Some(UpgradeStep::Complete) {
            break;
        }
        ensure!(
            step != Some(UpgradeStep::RolledBack),
            "the upgrade was rolled back"
        );
        if Instant::now() > deadline {
            bail!("the upgrade did not complete in 15 minutes; steps seen: {steps:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total = started.elapsed();
    let t2 = unix_now() + 1;
    let (t1, control_plane) = control_plane_done.context("no NodePools step was seen")?;
    let seen: Vec<UpgradeStep> = steps.iter().map(|(s, _)| *s).collect();
    ensure!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "steps out of order: {seen:?}"
    );
    ensure!(
        seen.first() == Some(&UpgradeStep::Snapshot),
        "no snapshot first: {seen:?}"
    );

    // Every node of the following pool runs the new version; the pinned
    // pool kept its own; the data and the workload are there.
    ensure!(
        kubelet_versions(&config, "app")? == format!("v{to} v{to}"),
        "app nodes"
    );
    ensure!(
        kubelet_versions(&config, "client")? == format!("v{from}"),
        "client node kept its version"
    );
    let pools = env.api::<NodePool>(&ns);
    for (pool, version) in [("app", &to), ("client", &from)] {
        let status = pools.get(pool).await?.status.unwrap_or_default();
        ensure!(
            status.version.as_deref() == Some(version.as_str())
                && status
                    .image
                    .as_deref()
                    .is_some_and(|i| i.ends_with(&format!("nestor-node:v{version}")))
                && status.updated_replicas == status.replicas,
            "pool {pool}: {status:?}"
        );
    }
    ensure!(
        server_version(&config)? == format!("v{to}"),
        "the API server is not {to}"
    );
    ensure!(
        get(&config, &["configmap", "before"], "{.data.written}")? == "before-the-upgrade",
        "the ConfigMap written before the upgrade is gone"
    );
    let vc = vcs.get("up").await?;
    let status = vc.status.clone().unwrap_or_default();
    let upgrade = status.upgrade.clone().context("no upgrade record")?;
    let snapshot = upgrade.snapshot.clone().context("no snapshot reported")?;
    ensure!(
        snapshot.starts_with("up-etcd-snapshots/") && snapshot.ends_with(".db"),
        "snapshot: {snapshot}"
    );
    // `kubectl get vc`: NAME VERSION DESIRED UPGRADE PHASE ...
    let columns = kubectl_ok(&env.admin, &["get", "vc", "up", "-n", &ns], None)?;
    let row: Vec<&str> = columns
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        columns.contains("DESIRED")
            && row.get(1..4) == Some(&[to.as_str(), to.as_str(), "Complete"][..]),
        "kubectl get vc: {columns}"
    );
    let events = kubectl_ok(
        &env.admin,
        &[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.name=up",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    )?;
    ensure!(
        events.contains("Upgrading") && events.contains("Upgraded"),
        "events: {events}"
    );

    // The calls, phase by phase.
    let made = calls(&config)?;
    let (cp_calls, cp_failed) = tally(&made, t0, t1);
    let (node_calls, node_failed) = tally(&made, t1, t2);
    let nodes = total.saturating_sub(control_plane);
    eprintln!(
        "figure: upgrade {from} to {to}: control plane {:.1}s, node pools {:.1}s ({:.1}s per node, two nodes), total {:.1}s",
        control_plane.as_secs_f64(),
        nodes.as_secs_f64(),
        nodes.as_secs_f64() / 2.0,
        total.as_secs_f64()
    );
    eprintln!(
        "figure: failed calls to the Service: control plane {cp_failed} of {cp_calls}, node replacement {node_failed} of {node_calls}"
    );
    ensure!(
        cp_calls > 0 && node_calls > 0,
        "no calls recorded: {cp_calls}, {node_calls}"
    );
    ensure!(
        cp_failed == 0,
        "{cp_failed} calls failed while the control plane changed"
    );
    // The budget keeps one replica serving throughout: no second goes by
    // without a call that succeeds.
    let mut seconds: std::collections::BTreeMap<u64, bool> = Default::default();
    for (at, ok) in made.iter().filter(|(at, _)| (t1..t2).contains(at)) {
        *seconds.entry(*at).or_default() |= ok;
    }
    let dark: Vec<u64> = seconds
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(at, _)| *at)
        .collect();
    ensure!(
        dark.is_empty(),
        "no call succeeded in {} second(s) while nodes were replaced ({node_failed} failed calls)",
        dark.len()
    );
    ns.done()
}

/// An upgrade whose API server never becomes ready is rolled back after
/// `spec.upgrade.apiServerTimeout`: the previous version serves again,
/// nothing written before is lost, the status says why, and it stays so
/// until the spec changes; a corrected spec then upgrades.
pub(crate) async fn failed_upgrade_rolls_back(env: &Env) -> Result<()> {
    let from = paths::version("K8S_PREVIOUS_VERSION");
    let to = paths::version("K8S_VERSION");
    let ns = env.namespace("rollback")?;
    env.apply(
        &ns,
        &vc_yaml(
            "rb",
            &format!("{{version: \"{from}\", upgrade: {{apiServerTimeout: 40s}}}}"),
        ),
    )?;
    env.ready(&ns, "rb", Instant::now(), Duration::from_secs(180))
        .await?;
    let config = env.nested_kubeconfig(&ns, "rb").await?;
    nested(
        &config,
        &[
            "create",
            "configmap",
            "before",
            "--from-literal=written=before-the-upgrade",
        ],
    )?;
    let vcs = env.api::<VirtualCluster>(&ns);
    // An image that is never there: its API server never serves.
    let started = Instant::now();
    vcs.patch(
        "rb",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {
            "version": to,
            "images": {"apiServer": format!("registry.k8s.io/kube-apiserver:v{to}-missing")}
        }})),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut rolled_back_at = None;
    loop {
        let vc = vcs.get("rb").await?;
        let status = vc.status.clone().unwrap_or_default();
        let step = status.upgrade.as_ref().map(|u| u.step);
        if step == Some(UpgradeStep::RolledBack) && rolled_back_at.is_none() {
            rolled_back_at = Some(started.elapsed());
        }
        // Rolled back, and the old API servers alone serve again.
        let alone = kubectl_ok(
            &env.admin,
            &[
                "get",
                "pods",
                "-n",
                &ns,
                "-l",
                "app.kubernetes.io/component=apiserver",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ],
            None,
        )?;
        if rolled_back_at.is_some()
            && status.version.as_deref() == Some(from.as_str())
            && !alone.contains("missing")
            && server_version(&config).is_ok_and(|v| v == format!("v{from}"))
        {
            break;
        }
        ensure!(
            step != Some(UpgradeStep::Complete),
            "a broken upgrade completed"
        );
        if Instant::now() > deadline {
            bail!("no rollback within 5 minutes: {status:?}; API server pods run {alone}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let serving_again = started.elapsed();
    let rolled_back_at = rolled_back_at.unwrap_or_default();
    eprintln!(
        "figure: rollback: deadline 40s; rolled back {:.1}s after the change, old version alone serving {:.1}s after it ({:.1}s after the rollback began)",
        rolled_back_at.as_secs_f64(),
        serving_again.as_secs_f64(),
        (serving_again - rolled_back_at).as_secs_f64()
    );
    let vc = vcs.get("rb").await?;
    let status = vc.status.clone().unwrap_or_default();
    let upgraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Upgraded")
        .context("no Upgraded condition")?;
    ensure!(
        upgraded.status == "False"
            && upgraded.reason == "RolledBack"
            && upgraded.message.contains(&format!("runs {from} again"))
            && upgraded.message.contains("was not restored"),
        "Upgraded: {upgraded:?}"
    );
    ensure!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "the rolled-back cluster is not Ready: {:?}",
        status.conditions
    );
    ensure!(
        get(&config, &["configmap", "before"], "{.data.written}")? == "before-the-upgrade",
        "the ConfigMap written before the upgrade is gone"
    );
    let events = kubectl_ok(
        &env.admin,
        &[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.name=rb,type=Warning",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    )?;
    ensure!(events.contains("RolledBack"), "events: {events}");
    // It holds while the spec asks for the same: the reconcile that
    // recreates a deleted child still builds the version that ran.
    let deployments: Api<Deployment> = env.api(&ns);
    let manager = "rb-controller-manager";
    let old_uid = deployments.get(manager).await?.metadata.uid;
    deployments
        .delete(manager, &DeleteParams::default())
        .await?;
    wait_for(
        "the controller-manager recreated",
        Duration::from_secs(60),
        || {
            let (deployments, old_uid) = (deployments.clone(), old_uid.clone());
            Box::pin(async move {
                Ok(deployments
                    .get_opt(manager)
                    .await?
                    .is_some_and(|d| d.metadata.uid != old_uid))
            })
        },
    )
    .await?;
    let image = deployments
        .get(manager)
        .await?
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.image)
        .unwrap_or_default();
    ensure!(
        image.ends_with(&format!(":v{from}"))
            && server_version(&config)? == format!("v{from}")
            && upgrade_step(&vcs, "rb").await?.0 == Some(UpgradeStep::RolledBack),
        "the rollback did not hold: the controller-manager was recreated with {image}"
    );

    // A corrected spec is a new change, and completes.
    vcs.patch(
        "rb",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"images": {"apiServer": null}}})),
    )
    .await?;
    wait_nested(
        "the corrected upgrade complete",
        Duration::from_secs(300),
        || Ok(server_version(&config).is_ok_and(|v| v == format!("v{to}"))),
    )
    .await?;
    wait_for(
        "the corrected upgrade Complete",
        Duration::from_secs(180),
        || {
            let vcs = vcs.clone();
            Box::pin(
                async move { Ok(upgrade_step(&vcs, "rb").await?.0 == Some(UpgradeStep::Complete)) },
            )
        },
    )
    .await?;
    ensure!(
        get(&config, &["configmap", "before"], "{.data.written}")? == "before-the-upgrade",
        "the ConfigMap is gone after the corrected upgrade"
    );
    ns.done()
}
