//! `raftkv-kubelet`: a stand-in for a kubelet with its container runtime, and
//! for a volume provisioner, so a real Kubernetes control plane (kube-apiserver,
//! kube-controller-manager, kube-scheduler, built by `tests/k8s/build-control-plane`
//! and started by `tests/k8s/cluster up`) can run pods on a machine with no
//! container runtime, no images and no Docker.
//!
//! Why a stand-in: the end-to-end suite must exercise the real API server and
//! controllers (RBAC, the StatefulSet and PV controllers, garbage collection,
//! server-side apply) against the real `raftkv` and `raftkv-operator` binaries.
//! Only the parts that need containers are replaced: pods run as local
//! processes, each in its own network and mount namespace on a bridge.
//!
//! ```text
//! raftkv-kubelet --kubeconfig FILE --node-name NAME --state-dir DIR \
//!   --bridge BRIDGE --pod-cidr 10.213.0.0/24 --api-server 10.213.0.1:6443 \
//!   --bin-dir DIR [--cluster-domain cluster.local] [--provisioner raftkv.io/local-directory]
//! ```
//!
//! The modules, each a stand-in for one kubelet part (their docs say what is
//! done and what is not):
//! - [`node`]: the Node object, its status and Lease heartbeats;
//! - [`pods`]: a worker per pod bound to the node; [`container`]: one
//!   container's start, probes, restarts and stop; [`status`]: `pods/status`;
//! - [`sandbox`]: network namespaces, veths, addresses, and spawning processes
//!   into a pod's namespaces; [`command`]: image -> binary, command and args;
//!   [`env`]: the environment; [`volumes`]: volumes as host directories;
//! - [`probes`]: startup, readiness and liveness probes;
//! - [`hosts`]: cluster DNS and Service addresses as per-pod /etc/hosts;
//! - [`provisioner`]: PersistentVolumes for claims of our StorageClass;
//!   [`resizer`]: their expansion when a claim asks for more.
//!
//! The kubeconfig is cluster-admin, which the stand-in itself uses; pods never
//! see it: they authenticate with their own ServiceAccount's tokens. The
//! stand-in runs until SIGTERM or SIGINT; then it stops every pod process,
//! deletes every namespace (and veth) it made, and exits 0. Mounts live only in
//! the pods' private mount namespaces, so they vanish with the processes. At
//! start it removes what a crashed previous run left in the same state directory.
//! Children never outlive it: each is started with `PR_SET_PDEATHSIG`.

pub mod command;
pub mod container;
pub mod env;
pub mod hosts;
pub mod node;
pub mod pods;
pub mod probes;
pub mod provisioner;
pub mod resizer;
pub mod sandbox;
pub mod status;
pub mod volumes;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The command line (kept stable: `tests/k8s/cluster` uses it).
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "raftkv-kubelet",
    about = "Stand-in kubelet and volume provisioner: runs the pods bound to one Node as local processes in network and mount namespaces"
)]
pub struct Args {
    /// Kubeconfig the stand-in uses (cluster-admin is fine; pods never see it).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The Node to register and run pods for.
    #[arg(long)]
    pub node_name: String,
    /// Pod directories, volumes, logs, the host copy of the hosts file.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The bridge pods' veths join (created if absent).
    #[arg(long)]
    pub bridge: String,
    /// Pod addresses; the first host is the bridge's (and the node's) address.
    #[arg(long)]
    pub pod_cidr: String,
    /// The API server as pods reach it, HOST:PORT (KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long)]
    pub api_server: String,
    /// Where the binaries images map to (`raftkv`, `raftkv-operator`) live; first on pods' PATH.
    #[arg(long)]
    pub bin_dir: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The provisioner name whose claims this stand-in provisions.
    #[arg(long, default_value = "raftkv.io/local-directory")]
    pub provisioner: String,
}

/// A pod's hosts file and who reads it.
struct HostsFile {
    path: PathBuf,
    namespace: String,
    ip: String,
    hostname: String,
    subdomain: Option<String>,
}

/// What every part of the stand-in shares.
pub struct Ctx {
    pub client: Client,
    pub node_name: String,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub api_server: String,
    pub cluster_domain: String,
    pub network: sandbox::Network,
    pods: Store<Pod>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    hosts_files: Mutex<BTreeMap<String, HostsFile>>,
}

impl Ctx {
    fn render_hosts(&self, file: Option<&HostsFile>) -> String {
        let records = hosts::records(
            &self.pods.state(),
            &self.services.state(),
            &self.slices.state(),
        );
        let reader = file.map(|f| hosts::Reader {
            namespace: &f.namespace,
            ip: &f.ip,
            hostname: &f.hostname,
            subdomain: f.subdomain.as_deref(),
        });
        let api_host = self
            .api_server
            .rsplit_once(':')
            .map_or(self.api_server.as_str(), |(h, _)| h);
        hosts::render(&records, reader.as_ref(), &self.cluster_domain, api_host)
    }

    /// Write a pod's hosts file now and keep it up to date from then on.
    pub fn register_hosts(
        &self,
        pod: &Pod,
        path: PathBuf,
        ip: String,
        hostname: String,
        subdomain: Option<String>,
    ) {
        let file = HostsFile {
            path,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            ip,
            hostname,
            subdomain,
        };
        if let Err(e) = hosts::write_in_place(&file.path, &self.render_hosts(Some(&file))) {
            tracing::warn!("writing {}: {e}", file.path.display());
        }
        self.hosts_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pods::key(pod), file);
    }

    pub fn unregister_hosts(&self, pod: &Pod) {
        self.hosts_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pods::key(pod));
    }

    fn refresh_hosts(&self) {
        let files = self.hosts_files.lock().unwrap_or_else(|p| p.into_inner());
        for file in files.values() {
            if let Err(e) = hosts::write_in_place(&file.path, &self.render_hosts(Some(file))) {
                tracing::warn!("writing {}: {e}", file.path.display());
            }
        }
        drop(files);
        let host_copy = self.state_dir.join("hosts");
        if let Err(e) = hosts::write_in_place(&host_copy, &self.render_hosts(None)) {
            tracing::warn!("writing {}: {e}", host_copy.display());
        }
    }
}

/// Keep `store` filled from a watch of `api`, poking `changed` on every event.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!("watch: {e}");
            }
            changed.notify_one();
        }
    });
    store
}

/// Remove what a crashed run left in `state_dir`: namespaces, pod directories.
fn clean_leftovers(ctx: &Ctx) -> Result<()> {
    ctx.network.clean_leftovers()?;
    let pods_dir = ctx.state_dir.join("pods");
    if pods_dir.exists() {
        std::fs::remove_dir_all(&pods_dir)
            .with_context(|| format!("removing {}", pods_dir.display()))?;
    }
    Ok(())
}

/// The stand-in's main loop; returns after SIGTERM/SIGINT and cleanup.
pub async fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating state dir {}", args.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&args.state_dir)?;
    let bin_dir = std::fs::canonicalize(&args.bin_dir)
        .with_context(|| format!("--bin-dir {}", args.bin_dir.display()))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("kubeconfig")?;
    let client = Client::try_from(config).context("API client")?;
    let network = sandbox::Network::new(&args.bridge, &args.pod_cidr, &state_dir)?;
    network.ensure_bridge()?;

    let changed = Arc::new(Notify::new());
    let pods_api: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        pods: reflect(pods_api, changed.clone()),
        services: reflect(Api::all(client.clone()), changed.clone()),
        slices: reflect(Api::all(client.clone()), changed.clone()),
        client: client.clone(),
        node_name: args.node_name.clone(),
        state_dir: state_dir.clone(),
        bin_dir,
        api_server: args.api_server.clone(),
        cluster_domain: args.cluster_domain.clone(),
        network,
        hosts_files: Mutex::new(BTreeMap::new()),
    });
    clean_leftovers(&ctx)?;

    let since = k8s_openapi::jiff::Timestamp::now();
    let host_ip = ctx.network.host_ip().to_string();
    loop {
        match node::register(&client, &args.node_name, &host_ip, since).await {
            Ok(()) => break,
            Err(e) => tracing::warn!("registering node {}: {e:#}; retrying", args.node_name),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::info!("node {} registered and Ready ({host_ip})", args.node_name);
    let background = [
        tokio::spawn(node::keep_alive(
            client.clone(),
            args.node_name.clone(),
            host_ip,
            since,
        )),
        tokio::spawn(provisioner::run(
            client.clone(),
            args.provisioner.clone(),
            state_dir.join("volumes"),
        )),
        tokio::spawn(resizer::run(client.clone(), args.provisioner.clone())),
    ];
    for store in [ctx.pods.wait_until_ready()] {
        store.await.context("pod watch")?;
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut workers: BTreeMap<String, pods::PodWorker> = BTreeMap::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        sync_pods(&ctx, &mut workers, &shutdown_rx).await;
        ctx.refresh_hosts();
    }

    tracing::info!("shutting down: stopping {} pod(s)", workers.len());
    let _ = shutdown_tx.send(true);
    for (_, worker) in std::mem::take(&mut workers) {
        let _ = tokio::time::timeout(
            pods::SHUTDOWN_GRACE_CAP + Duration::from_secs(10),
            worker.task,
        )
        .await;
    }
    for task in background {
        task.abort();
    }
    ctx.network.clean_leftovers()?;
    sandbox::remove_created_mount_points();
    tracing::info!("stopped");
    Ok(())
}

/// Start workers for new pods of this node, pass updates, stop vanished ones.
async fn sync_pods(
    ctx: &Arc<Ctx>,
    workers: &mut BTreeMap<String, pods::PodWorker>,
    shutdown: &watch::Receiver<bool>,
) {
    workers.retain(|_, w| !w.task.is_finished());
    let mine: BTreeMap<String, Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(ctx.node_name.as_str())
        })
        .filter_map(|p| p.metadata.uid.clone().map(|uid| (uid, p)))
        .collect();
    for (uid, worker) in workers.iter() {
        match mine.get(uid) {
            Some(pod) => {
                worker.pod.send_if_modified(|old| {
                    if old.metadata.resource_version != pod.metadata.resource_version {
                        *old = pod.clone();
                        true
                    } else {
                        false
                    }
                });
            }
            None => {
                let _ = worker.gone.send(true);
            }
        }
    }
    for (uid, pod) in mine {
        if workers.contains_key(&uid) {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some() {
            // Nothing of it runs here (finished, or from a previous run): just let it go.
            pods::delete_now(ctx, &pod).await;
            continue;
        }
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        // A pod of the same name still tearing down (deleted outright and re-created).
        let key = pods::key(&pod);
        if workers.values().any(|w| w.key == key) {
            continue;
        }
        workers.insert(uid, pods::start(ctx.clone(), pod, shutdown.clone()));
    }
}
