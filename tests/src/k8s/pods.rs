//! One pod's life on the node (stand-in for the kubelet's pod workers).
//!
//! For each Pod bound to the node, a worker: makes the sandbox (network
//! namespace and address, `sandbox.rs`), writes the pod's /etc/hosts and
//! /etc/resolv.conf, prepares its volumes (waiting, with a status saying why,
//! until claims are bound and objects exist), runs the init containers one at a
//! time to completion, then supervises every container (`container.rs`), and
//! writes the status back to `pods/status` whenever it changes (`status.rs`).
//!
//! When the pod gets a deletionTimestamp: every container is stopped (preStop,
//! SIGTERM, SIGKILL after the pod's grace period), the namespace and the pod's
//! directory (emptyDirs) are removed, its container logs moved to
//! `STATE/pod-logs/NS_NAME_UID/` (`cluster down` keeps them in `logs/pods/`,
//! where a failed test's operator log can be read), and the Pod object is deleted with
//! grace period 0, as the kubelet does last. A Pod removed from the API outright
//! is torn down the same way. On the stand-in's own shutdown, pods are stopped
//! and torn down but their API objects are left alone (grace capped at
//! [`SHUTDOWN_GRACE_CAP`], so the whole node stops within a minute).

use super::command::StartError;
use super::container::{pod_dir, ContainerCtx, Outcome};
use super::env::PodFacts;
use super::sandbox::Sandbox;
use super::status::{build_status, ContainerRuntime, PodRuntime, ProcState};
use super::volumes::PodVolumes;
use super::Ctx;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The longest grace period a pod gets when the stand-in itself shuts down.
pub const SHUTDOWN_GRACE_CAP: Duration = Duration::from_secs(20);

/// The manager's handle on a running pod worker.
pub struct PodWorker {
    pub key: String,
    pub pod: watch::Sender<Arc<Pod>>,
    pub gone: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

/// Why a pod stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Deleted,
    Gone,
    Shutdown,
}

/// `NAMESPACE/NAME` of a pod.
pub fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's hostname: spec.hostname, else its name (at most 63 bytes).
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.chars().take(63).collect()
}

pub fn start(ctx: Arc<Ctx>, pod: Arc<Pod>, shutdown: watch::Receiver<bool>) -> PodWorker {
    let (pod_tx, pod_rx) = watch::channel(pod.clone());
    let (gone_tx, gone_rx) = watch::channel(false);
    let task = tokio::spawn(run(ctx, pod_rx, gone_rx, shutdown));
    PodWorker {
        key: key(&pod),
        pod: pod_tx,
        gone: gone_tx,
        task,
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

async fn wait_stop(
    pod: &mut watch::Receiver<Arc<Pod>>,
    gone: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Stop {
    loop {
        if *shutdown.borrow() {
            return Stop::Shutdown;
        }
        if *gone.borrow() {
            return Stop::Gone;
        }
        if pod.borrow().metadata.deletion_timestamp.is_some() {
            return Stop::Deleted;
        }
        tokio::select! {
            r = pod.changed() => if r.is_err() { return Stop::Gone },
            r = gone.changed() => if r.is_err() { return Stop::Gone },
            r = shutdown.changed() => if r.is_err() { return Stop::Shutdown },
        }
    }
}

/// What the worker's phases share.
struct Shared {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    dir: PathBuf,
    runtime: Arc<Mutex<PodRuntime>>,
    changed: Arc<Notify>,
    sandbox: Mutex<Option<Sandbox>>,
    stop_tx: watch::Sender<Option<Duration>>,
    supervisors: Mutex<Vec<JoinHandle<Outcome>>>,
}

impl Shared {
    fn set_all_waiting(&self, e: &StartError) {
        tracing::warn!("pod {}: {e}", key(&self.pod));
        let mut guard = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let rt = &mut *guard;
        for c in rt
            .init_containers
            .iter_mut()
            .chain(rt.containers.iter_mut())
        {
            if matches!(c.state, ProcState::Waiting { .. }) {
                c.state = ProcState::waiting(&e.reason, Some(e.message.clone()));
            }
        }
        drop(guard);
        self.changed.notify_one();
    }

    fn container_ctx(
        &self,
        facts: &PodFacts,
        netns: PathBuf,
        volumes: &PodVolumes,
    ) -> impl Fn(k8s_openapi::api::core::v1::Container, bool, usize) -> ContainerCtx + '_ {
        let facts = facts.clone();
        let paths = Arc::new(volumes.paths.clone());
        move |container, is_init, index| ContainerCtx {
            ctx: self.ctx.clone(),
            pod: self.pod.clone(),
            container,
            is_init,
            index,
            runtime: self.runtime.clone(),
            changed: self.changed.clone(),
            facts: facts.clone(),
            netns: netns.clone(),
            pod_dir: self.dir.clone(),
            volumes: paths.clone(),
        }
    }

    /// Sandbox, volumes, init containers, containers; then keeps volumes fresh.
    async fn lifecycle(&self) {
        let sandbox = loop {
            let previous_ip = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok());
            match self.ctx.network.create_sandbox(previous_ip) {
                Ok(s) => break s,
                Err(e) => {
                    self.set_all_waiting(&StartError::new("ContainerCreating", format!("{e:#}")));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        *self.sandbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(sandbox.clone());
        self.runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pod_ip = Some(sandbox.ip.to_string());
        self.changed.notify_one();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let facts = PodFacts {
            pod_ip: sandbox.ip.to_string(),
            host_ip: self.ctx.network.host_ip().to_string(),
            api_server: self.ctx.api_server.clone(),
            path: super::command::pod_path(&self.ctx.bin_dir),
            hostname: hostname(&self.pod),
        };
        let resolv = "# Written by raftkv-kubelet: there is no cluster DNS server; names come from /etc/hosts.\n\
                      nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";
        if let Err(e) = std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(self.dir.join("resolv.conf"), resolv))
        {
            self.set_all_waiting(&StartError::new(
                "ContainerCreating",
                format!("{}: {e}", self.dir.display()),
            ));
            return;
        }
        self.ctx.register_hosts(
            &self.pod,
            self.dir.join("hosts"),
            sandbox.ip.to_string(),
            facts.hostname.clone(),
            spec.subdomain.clone(),
        );

        let mut volumes = PodVolumes::new(&self.dir);
        loop {
            match volumes.prepare(&self.ctx.client, &self.pod, &facts).await {
                Ok(()) => break,
                Err(e) => {
                    self.set_all_waiting(&e);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        let make = self.container_ctx(&facts, sandbox.netns_path(), &volumes);
        for (i, c) in spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let task = tokio::spawn(make(c, true, i).supervise(self.stop_tx.subscribe()));
            match task.await {
                Ok(Outcome::Succeeded) => {}
                Ok(Outcome::Stopped) => return,
                Ok(Outcome::Failed) | Err(_) => {
                    // restartPolicy Never: the pod has failed (status.rs says so).
                    self.changed.notify_one();
                    return;
                }
            }
        }
        for (i, c) in spec.containers.iter().cloned().enumerate() {
            let task = tokio::spawn(make(c, false, i).supervise(self.stop_tx.subscribe()));
            self.supervisors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task);
        }
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            if let Err(e) = volumes.prepare(&self.ctx.client, &self.pod, &facts).await {
                tracing::warn!("pod {}: refreshing volumes: {e}", key(&self.pod));
            }
        }
    }

    async fn write_status(&self, latest: &Pod, last: &mut Option<serde_json::Value>) {
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let previous = latest
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let status = build_status(&rt, &previous, Timestamp::now());
        let Ok(mut value) = serde_json::to_value(&status) else {
            return;
        };
        // Compare without transition times, which only move with statuses.
        let mut cmp = value.clone();
        if let Some(conds) = cmp.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in conds {
                c.as_object_mut().map(|o| o.remove("lastTransitionTime"));
            }
        }
        if last.as_ref() == Some(&cmp) {
            return;
        }
        if rt.pod_message.is_none() {
            value.as_object_mut().map(|o| {
                o.insert("reason".into(), serde_json::Value::Null);
                o.insert("message".into(), serde_json::Value::Null)
            });
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "status": value });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => *last = Some(cmp),
            Err(kube::Error::Api(e)) if e.code == 404 => *last = Some(cmp),
            Err(e) => tracing::warn!("pod {}: writing status: {e}", key(&self.pod)),
        }
    }
}

async fn run(
    ctx: Arc<Ctx>,
    mut pod_rx: watch::Receiver<Arc<Pod>>,
    mut gone: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pod = pod_rx.borrow().clone();
    let spec = pod.spec.clone().unwrap_or_default();
    let image = |c: &k8s_openapi::api::core::v1::Container| c.image.clone().unwrap_or_default();
    let runtime = PodRuntime {
        pod_ip: None,
        host_ip: ctx.network.host_ip().to_string(),
        start_time: Timestamp::now(),
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".to_string()),
        init_containers: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ContainerRuntime::new(&c.name, &image(c)))
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerRuntime::new(&c.name, &image(c)))
            .collect(),
        pod_message: None,
    };
    let (stop_tx, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        dir: pod_dir(&ctx.state_dir, &pod),
        ctx: ctx.clone(),
        pod: pod.clone(),
        runtime: Arc::new(Mutex::new(runtime)),
        changed: Arc::new(Notify::new()),
        sandbox: Mutex::new(None),
        stop_tx,
        supervisors: Mutex::new(Vec::new()),
    });
    tracing::info!("pod {}: starting", key(&pod));

    let writer = {
        let shared = shared.clone();
        let pod_rx = pod_rx.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), shared.changed.notified()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let latest = pod_rx.borrow().clone();
                shared.write_status(&latest, &mut last).await;
            }
        })
    };

    let stop = tokio::select! {
        s = wait_stop(&mut pod_rx, &mut gone, &mut shutdown) => s,
        _ = shared.lifecycle() => wait_stop(&mut pod_rx, &mut gone, &mut shutdown).await,
    };
    let latest = pod_rx.borrow().clone();
    let grace = match stop {
        Stop::Shutdown => grace_of(&latest).min(SHUTDOWN_GRACE_CAP),
        _ => grace_of(&latest),
    };
    tracing::info!("pod {}: stopping ({stop:?}, grace {grace:?})", key(&pod));
    let _ = shared.stop_tx.send(Some(grace));
    let supervisors =
        std::mem::take(&mut *shared.supervisors.lock().unwrap_or_else(|p| p.into_inner()));
    for s in supervisors {
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), s).await;
    }
    writer.abort();
    if stop == Stop::Deleted {
        // The final status (terminated containers), then the object goes.
        let mut last = None;
        shared.write_status(&latest, &mut last).await;
    }
    ctx.unregister_hosts(&pod);
    if let Some(sandbox) = shared
        .sandbox
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        ctx.network.remove_sandbox(&sandbox);
    }
    keep_logs(&shared.dir, &ctx.state_dir, &pod);
    if let Err(e) = std::fs::remove_dir_all(&shared.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("pod {}: removing {}: {e}", key(&pod), shared.dir.display());
        }
    }
    if stop == Stop::Deleted {
        delete_now(&ctx, &pod).await;
    }
    tracing::info!("pod {}: torn down", key(&pod));
}

/// Delete the Pod object with grace period 0 (only this incarnation: uid precondition).
pub async fn delete_now(ctx: &Ctx, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    match api.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!("pod {}: deleting: {e}", key(pod)),
    }
}

/// Moves a torn-down pod's container logs to `STATE/pod-logs/NS_NAME_UID/`
/// (the pod's directory goes, its logs stay for reading a failed test;
/// `tests/k8s/cluster down` keeps them with the other logs).
fn keep_logs(pod_dir: &std::path::Path, state_dir: &std::path::Path, pod: &Pod) {
    let uid = pod.metadata.uid.as_deref().unwrap_or("no-uid");
    let Some(name) = pod_dir.file_name() else {
        return;
    };
    let kept = state_dir.join("pod-logs").join(format!(
        "{}_{}",
        name.to_string_lossy(),
        &uid[..uid.len().min(8)]
    ));
    let Ok(entries) = std::fs::read_dir(pod_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        if file.to_string_lossy().contains(".log") {
            let _ = std::fs::create_dir_all(&kept);
            let _ = std::fs::rename(entry.path(), kept.join(file));
        }
    }
}
