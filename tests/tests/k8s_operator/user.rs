//! What a user of the operator types and looks at: `kubectl` against the
//! control plane, a RaftCluster's status and events, its members' addresses,
//! and a client that keeps writing and remembers what was acknowledged.

use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::wait::until;
use raftkv_tests::Etcdctl;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The namespace the RaftClusters live in.
pub const NS: &str = "e2e";
/// How long one kubectl call may take.
const T: Duration = Duration::from_secs(60);

pub async fn kubectl(plane: &ControlPlane, args: &[&str]) -> Result<String> {
    Ok(plane.kubectl(args, T).await?.ok()?.stdout)
}

/// `kubectl apply -f -` of a manifest in the test namespace.
pub async fn apply(plane: &ControlPlane, manifest: &str) -> Result<()> {
    plane
        .kubectl_with_stdin(&["apply", "-n", NS, "-f", "-"], Some(manifest), T)
        .await?
        .ok()?;
    Ok(())
}

/// `kubectl patch rkc RC --type=TYPE -p PATCH` in the test namespace.
pub async fn patch_cluster(plane: &ControlPlane, rc: &str, type_: &str, patch: &str) -> Result<()> {
    let type_ = format!("--type={type_}");
    kubectl(plane, &["patch", "rkc", rc, "-n", NS, &type_, "-p", patch]).await?;
    Ok(())
}

/// `kubectl get OBJECT -o jsonpath=PATH` in the test namespace, trimmed.
pub async fn jsonpath(plane: &ControlPlane, object: &str, path: &str) -> Result<String> {
    let path = format!("jsonpath={path}");
    Ok(kubectl(plane, &["get", "-n", NS, object, "-o", &path])
        .await?
        .trim()
        .to_string())
}

/// `kubectl get OBJECT -n NS -o jsonpath=PATH`, trimmed.
pub async fn jsonpath_in(
    plane: &ControlPlane,
    ns: &str,
    object: &str,
    path: &str,
) -> Result<String> {
    let path = format!("jsonpath={path}");
    Ok(kubectl(plane, &["get", "-n", ns, object, "-o", &path])
        .await?
        .trim()
        .to_string())
}

/// The pod of the operator replica holding the leader Lease (its identity is
/// `POD_START`: the pod's name and the process's start).
pub async fn lease_holder(plane: &ControlPlane, operator_ns: &str) -> Result<String> {
    let identity = jsonpath_in(
        plane,
        operator_ns,
        "lease/raftkv-operator",
        "{.spec.holderIdentity}",
    )
    .await?;
    identity
        .rsplit_once('_')
        .map(|(pod, _)| pod.to_string())
        .with_context(|| format!("the Lease holder {identity:?} names no pod"))
}

/// The pid of the first container of `pod` in namespace `ns` (the kubelet
/// stand-in runs it as a process and reports `process://PID` as its id).
pub async fn container_pid(plane: &ControlPlane, ns: &str, pod: &str) -> Result<i32> {
    let id = jsonpath_in(
        plane,
        ns,
        &format!("pod/{pod}"),
        "{.status.containerStatuses[0].containerID}",
    )
    .await?;
    id.strip_prefix("process://")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("pod {ns}/{pod} has container id {id:?}"))
}

/// Waits until pod `pod` exists under another uid than `old_uid`: deleted
/// (by the test or a controller) and re-created. A pod not found meanwhile
/// is simply not back yet.
pub async fn wait_pod_recreated(plane: &ControlPlane, pod: &str, old_uid: &str) -> Result<()> {
    until(
        Duration::from_secs(180),
        format!("pod {pod} re-created"),
        || async {
            let uid = jsonpath(plane, &format!("pod/{pod}"), "{.metadata.uid}")
                .await
                .unwrap_or_default();
            Ok((!uid.is_empty() && uid != old_uid).then_some(()))
        },
    )
    .await
}

/// The events of RaftCluster `rc`, as `kubectl get events` prints them.
pub async fn events(plane: &ControlPlane, rc: &str) -> Result<String> {
    kubectl(
        plane,
        &[
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            &format!("involvedObject.name={rc}"),
        ],
    )
    .await
}

/// The names of RaftCluster `rc`'s objects of `kinds` (e.g. `pvc`), one per line.
pub async fn owned(plane: &ControlPlane, rc: &str, kinds: &str) -> Result<Vec<String>> {
    let out = kubectl(
        plane,
        &[
            "get",
            kinds,
            "-n",
            NS,
            "-l",
            &format!("app.kubernetes.io/instance={rc}"),
            "-o",
            "name",
        ],
    )
    .await?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// `kubectl get pods -o OUTPUT` of RaftCluster `rc`'s member pods, by name.
pub async fn member_pods(plane: &ControlPlane, rc: &str, output: &str) -> Result<String> {
    kubectl(
        plane,
        &[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            &format!("app.kubernetes.io/instance={rc}"),
            "--sort-by=.metadata.name",
            "-o",
            output,
        ],
    )
    .await
}

/// The member pods' client endpoints (`IP:2379`), in ordinal order.
pub async fn member_endpoints(plane: &ControlPlane, rc: &str) -> Result<Vec<String>> {
    let out = member_pods(
        plane,
        rc,
        "jsonpath={range .items[*]}{.status.podIP}{\"\\n\"}{end}",
    )
    .await?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|ip| format!("{ip}:2379"))
        .collect())
}

/// Waits until RaftCluster `rc` reports `replicas` ready voters, a leader, and
/// phase Running, with no learner pending.
pub async fn wait_settled(
    plane: &ControlPlane,
    rc: &str,
    replicas: usize,
    within: Duration,
) -> Result<()> {
    until(within, format!("rkc/{rc} settled at {replicas} ready voters"), || async {
        let status = jsonpath(
            plane,
            &format!("rkc/{rc}"),
            "{.status.readyReplicas}/{.status.voters}/{.status.learners}/{.status.leader}/{.status.phase}",
        )
        .await?;
        let fields: Vec<&str> = status.split('/').collect();
        let settled = fields.len() == 5
            && fields[0] == replicas.to_string()
            && fields[1] == replicas.to_string()
            && (fields[2].is_empty() || fields[2] == "0")
            && !fields[3].is_empty()
            && fields[4] == "Running";
        if settled {
            Ok(Some(()))
        } else {
            bail!("status ready/voters/learners/leader/phase = {status}")
        }
    })
    .await
}

/// The keys under `prefix` a linearizable read through `endpoints` returns.
pub async fn keys(endpoints: &[String], prefix: &str) -> Result<BTreeSet<String>> {
    let etcdctl = Etcdctl::new(endpoints)?;
    let out = etcdctl
        .run(&["get", prefix, "--prefix", "--keys-only"])
        .await?
        .ok()?
        .stdout;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Fails unless every key in `acked` is among `stored`.
pub fn ensure_none_lost(acked: &[String], stored: &BTreeSet<String>) -> Result<()> {
    let lost: Vec<&String> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged writes are gone: {:?}",
        lost.len(),
        acked.len(),
        lost
    );
    Ok(())
}

/// A client that keeps writing `w-N` keys through whichever members exist, and
/// remembers every write the cluster acknowledged.
pub struct Writer {
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(endpoints: Arc<Mutex<Vec<String>>>) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (acked.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let eps = endpoints.lock().unwrap().clone();
                let key = format!("w-{n:06}");
                let put = async {
                    let mut client = etcd_client::Client::connect(&eps, None).await?;
                    client.put(key.clone(), "v", None).await
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), put).await {
                    a.lock().unwrap().push(key);
                    n += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Writer { acked, stop, task }
    }

    /// Stops writing; the keys whose writes were acknowledged.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}
