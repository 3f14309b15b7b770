//! `raftkv serve`: opens the store, starts Raft, and serves the client, peer and
//! HTTP ports until SIGTERM/SIGINT, then shuts down in order.
//!
//! Ports are bound before anything else happens, so a port in use is reported at
//! once. A member initialized before keeps its state and ignores its bootstrap
//! flags; a new one initializes from `--initial-cluster` (every listed member
//! proposes the same membership) or waits to be added (`--join`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::admin::AdminService;
use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::peer::PeerService;
use crate::api::watch::WatchService;
use crate::config::Bootstrap;
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::node::AppliedFollowers;
use crate::node::Limits;
use crate::node::Node;
use crate::node::NodeParts;
use crate::node::Raft;
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::raftkvpb;
use crate::proto::raftkvpb::admin::admin_server::AdminServer;
use crate::proto::raftkvpb::peer::raft_peer_server::RaftPeerServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::raft::Command;
use crate::raft::Member;
use crate::store;
use crate::store::log_store::read_meta;
use crate::store::schema::KEY_CLUSTER_ID;
use crate::store::LogStore;
use crate::store::StateMachineStore;
use crate::transport::PeerClients;
use crate::transport::PeerNetwork;

/// gRPC framing and header overhead allowed on top of `--max-request-bytes`,
/// so an oversized request reaches our check and gets etcd's error message.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

fn raft_config(cfg: &ServeConfig) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "raftkv".into(),
        heartbeat_interval: cfg.heartbeat_interval,
        election_timeout_min: cfg.election_timeout,
        election_timeout_max: cfg.election_timeout * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
        // Keep some log after a snapshot so a briefly lagging follower catches up
        // from the log rather than a whole snapshot.
        max_in_snapshot_log_to_keep: cfg.snapshot_count.min(5_000),
        install_snapshot_timeout: 30_000,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    config.validate().context("invalid Raft settings")
}

/// Accepted connections with Nagle's algorithm off. tonic sets TCP_NODELAY only
/// on listeners it binds itself, not on an incoming stream handed to it; without
/// it a small response waits for the peer's delayed ACK (~40 ms on Linux), which
/// `raftkv bench` showed as a 44 ms p50 for a single client's serializable reads.
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!("cannot set TCP_NODELAY on a connection: {e}");
            }
        })
    })
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Run a member until a shutdown signal.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let client_listener = bind("clients", cfg.listen_client).await?;
    let peer_listener = bind("peers", cfg.listen_peer).await?;
    let http_listener = bind("metrics", cfg.listen_metrics).await?;

    if cfg.data_dir.exists() && !cfg.data_dir.is_dir() {
        anyhow::bail!(
            "data dir {} exists and is not a directory",
            cfg.data_dir.display()
        );
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let db = store::open_db(&cfg.data_dir)?;

    let stored_cluster_id: Option<u64> = read_meta(&db, KEY_CLUSTER_ID)?;
    let cluster_id = match (stored_cluster_id, cfg.cluster_id) {
        (Some(stored), Some(derived)) if stored != derived => {
            tracing::warn!(
                stored = %format!("{stored:x}"),
                "data dir belongs to an existing cluster; ignoring --initial-cluster/--initial-cluster-token"
            );
            stored
        }
        (Some(stored), _) => stored,
        (None, Some(derived)) => {
            store::log_store::persist_cluster_id(&db, derived)?;
            derived
        }
        (None, None) => 0,
    };
    let cluster_id = Arc::new(AtomicU64::new(cluster_id));
    crate::recovery::persist_node_id(&db, cfg.id)?;
    let epoch = Arc::new(crate::epoch::EpochState::load(&db).context("reading the epoch")?);

    let metrics = Arc::new(Metrics::default());
    let log_store = LogStore::new(db.clone(), metrics.clone());
    let watch_hub = Arc::new(crate::watch::WatchHub::default());
    let lease_timers = Arc::new(crate::lease::LeaseTimers::new(db.clone()));
    let tokens = Arc::new(crate::auth::Tokens::default());
    let sm = StateMachineStore::new(
        db.clone(),
        cfg.data_dir.join("snapshots"),
        metrics.clone(),
        Arc::new(AppliedFollowers {
            watch_hub: watch_hub.clone(),
            lease_timers: lease_timers.clone(),
            tokens: tokens.clone(),
        }),
    );
    let peers = Arc::new(PeerClients::new(
        cfg.id,
        cluster_id.clone(),
        epoch.clone(),
        db.clone(),
    ));
    let network = PeerNetwork {
        clients: peers.clone(),
    };
    let raft = Raft::new(cfg.id, Arc::new(raft_config(&cfg)?), network, log_store, sm)
        .await
        .context("starting Raft")?;

    if let Bootstrap::Initial(members) = &cfg.bootstrap {
        if !raft.is_initialized().await.context("reading Raft state")? {
            let members: BTreeMap<u64, Member> = members
                .iter()
                .map(|(id, url)| {
                    (
                        *id,
                        Member {
                            peer_url: url.clone(),
                        },
                    )
                })
                .collect();
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
            raft.initialize(members)
                .await
                .context("initializing the cluster")?;
        }
    }

    let node = Node::start(NodeParts {
        id: cfg.id,
        name: cfg.name.clone(),
        peer_url: cfg.advertise_peer_url.clone(),
        raft: raft.clone(),
        db: db.clone(),
        peers,
        cluster_id,
        metrics,
        limits: Limits {
            max_request_bytes: cfg.max_request_bytes,
            max_txn_ops: cfg.max_txn_ops,
        },
        quota_bytes: cfg.quota_backend_bytes,
        data_dir: cfg.data_dir.clone(),
        watch_hub,
        lease_timers,
        tokens,
        leader_timeout: Duration::from_millis(cfg.election_timeout * 2),
        epoch,
        backup_dir: cfg.backup_dir.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let max_msg = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let client_server = tonic::transport::Server::builder()
        .add_service(
            KvServer::new(KvService { node: node.clone() }).max_decoding_message_size(max_msg),
        )
        .add_service(ClusterServer::new(ClusterService { node: node.clone() }))
        .add_service(MaintenanceServer::new(MaintenanceService {
            node: node.clone(),
        }))
        .add_service(AdminServer::new(AdminService::new(node.clone())))
        .add_service(LeaseServer::new(LeaseService {
            node: node.clone(),
            min_ttl: (cfg.election_timeout * 3 / 2).div_ceil(1000) as i64,
        }))
        .add_service(LockServer::new(LockService { node: node.clone() }))
        .add_service(AuthServer::new(AuthService { node: node.clone() }))
        .add_service(ElectionServer::new(ElectionService { node: node.clone() }))
        .add_service(WatchServer::new(WatchService {
            node: node.clone(),
            progress_every: Duration::from_secs(cfg.watch_progress_notify_interval),
        }))
        .serve_with_incoming_shutdown(no_delay(client_listener), stopped(stop_rx.clone()));
    let peer_server = tonic::transport::Server::builder()
        .add_service(
            RaftPeerServer::new(PeerService { node: node.clone() })
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(no_delay(peer_listener), stopped(stop_rx.clone()));
    let http_server = axum::serve(http_listener, crate::http::router(node.clone()))
        .with_graceful_shutdown(stopped(stop_rx.clone()));

    let client_task = tokio::spawn(client_server);
    let peer_task = tokio::spawn(peer_server);
    let http_task = tokio::spawn(async move { http_server.await });
    tokio::spawn(publish_attributes(
        node.clone(),
        cfg.advertise_client_url.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(count_leader_changes(node.clone()));
    tokio::spawn(note_leader_seen(node.clone()));
    tokio::spawn(stop_raft_when_fenced(node.clone()));

    tracing::info!(
        id = %format!("{:x}", cfg.id),
        name = %cfg.name,
        client = %cfg.listen_client,
        peer = %cfg.listen_peer,
        metrics = %cfg.listen_metrics,
        "raftkv member serving"
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = client_task.await;
        let _ = http_task.await;
    })
    .await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    peer_task.abort();
    db.flush_wal(true)
        .context("syncing the database on shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Publish this member's name and client URL through the log (as etcd does)
/// once it is a member, and again whenever what the store holds differs.
async fn publish_attributes(node: Arc<Node>, client_url: String, stop: watch::Receiver<bool>) {
    let wanted = raftkvpb::MemberAttributes {
        id: node.id(),
        name: node.name().to_string(),
        client_urls: vec![client_url],
    };
    while !*stop.borrow() {
        let current = crate::api::cluster::member_list(&node)
            .into_iter()
            .find(|m| m.id == node.id())
            .map(|m| (m.name, m.client_ur_ls));
        match current {
            Some((name, urls)) if name == wanted.name && urls == wanted.client_urls => {}
            Some(_) if node.leader().is_some() => {
                let cmd = Command(raftkvpb::Command {
                    op: Some(raftkvpb::command::Op::SetMemberAttributes(wanted.clone())),
                });
                if let Err(e) = node.propose(cmd).await {
                    tracing::debug!("publishing member attributes: {e}");
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keep `leader_seen` current: RecoverSolo asks how long no leader was known.
async fn note_leader_seen(node: Arc<Node>) {
    loop {
        if node.leader().is_some() {
            node.leader_seen().touch();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fenced member (see `crate::epoch`) stops taking part in Raft at once.
async fn stop_raft_when_fenced(node: Arc<Node>) {
    node.epoch().wait_fenced().await;
    if let Err(e) = node.raft().shutdown().await {
        tracing::warn!("raft shutdown after fencing: {e}");
    }
}

async fn count_leader_changes(node: Arc<Node>) {
    use openraft::type_config::async_runtime::WatchReceiver;
    let mut rx = node.raft().metrics();
    let mut last = rx.borrow_watched().current_leader;
    while rx.changed().await.is_ok() {
        let leader = rx.borrow_watched().current_leader;
        if leader != last {
            node.metrics()
                .leader_changes
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(leader = ?leader.map(|l| format!("{l:x}")), "leader changed");
            last = leader;
        }
    }
}
