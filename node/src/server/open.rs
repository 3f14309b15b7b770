//! Opening a member: the data dir and database, the cluster id it belongs to,
//! its epoch, Raft over the log and state machine stores, the bootstrap of a
//! new cluster, and the [`Node`] that owns all of it.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rocksdb::DB;

use crate::config::{Bootstrap, ServeConfig};
use crate::incarnation::Incarnation;
use crate::metrics::Metrics;
use crate::node::{AppliedFollowers, Limits, Node, NodeParts, Raft};
use crate::raft::members_at;
use crate::removal::Removal;
use crate::store;
use crate::store::log_store::read_meta;
use crate::store::schema::KEY_CLUSTER_ID;
use crate::store::{LogStore, StateMachineStore};
use crate::transport::{PeerClients, PeerNetwork};

/// What serving needs from an opened member, and shutdown after it.
pub(super) struct Opened {
    pub node: Arc<Node>,
    pub raft: Raft,
    pub db: Arc<DB>,
}

pub(super) async fn open(cfg: &ServeConfig) -> anyhow::Result<Opened> {
    let db = open_db(cfg)?;
    let cluster_id = Arc::new(AtomicU64::new(settle_cluster_id(&db, cfg)?));
    crate::recovery::persist_node_id(&db, cfg.id)?;
    let epoch = Arc::new(crate::epoch::EpochState::load(&db).context("reading the epoch")?);
    let removal = Arc::new(Removal::load(&db).context("reading whether this member was removed")?);
    if let Some(reason) = removal.removed() {
        return Err(Removal::advice(cfg.id, &reason).into());
    }
    let incarnation = Arc::new(Incarnation::new(
        cfg.id,
        crate::incarnation::load_or_create(&db).context("reading the data dir's incarnation")?,
    ));
    let snapshot_dir = cfg.data_dir.join("snapshots");
    for left in crate::store::snapshot::remove_leftovers(&snapshot_dir)
        .with_context(|| format!("cleaning {}", snapshot_dir.display()))?
    {
        tracing::info!(file = %left.display(), "removed what an interrupted snapshot left");
    }

    let metrics = Arc::new(Metrics::default());
    let log_store = LogStore::new(db.clone(), metrics.clone());
    let watch_hub = Arc::new(crate::watch::WatchHub::default());
    let lease_timers = Arc::new(crate::lease::LeaseTimers::new(
        db.clone(),
        Duration::from_millis(cfg.election_timeout),
    ));
    let tokens = Arc::new(crate::auth::Tokens::new(cfg.auth_token_ttl));
    let sm = StateMachineStore::new(
        db.clone(),
        snapshot_dir,
        metrics.clone(),
        Arc::new(AppliedFollowers {
            watch_hub: watch_hub.clone(),
            lease_timers: lease_timers.clone(),
            tokens: tokens.clone(),
        }),
    );
    let peer_tls = cfg
        .peer_tls
        .clone()
        .map(crate::tls::PeerClientTls::new)
        .transpose()
        .context("--peer-cert-file")?;
    let peers = Arc::new(PeerClients::new(
        cfg.id,
        cluster_id.clone(),
        epoch.clone(),
        db.clone(),
        removal.clone(),
        incarnation.clone(),
        peer_tls,
    ));
    let network = PeerNetwork {
        clients: peers.clone(),
    };
    let raft = Raft::new(cfg.id, Arc::new(raft_config(cfg)?), network, log_store, sm)
        .await
        .context("starting Raft")?;
    bootstrap(&raft, cfg).await?;

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
        election_timeout: Duration::from_millis(cfg.election_timeout),
        epoch,
        removal,
        incarnation,
        backup_dir: cfg.backup_dir.clone(),
    });
    Ok(Opened { node, raft, db })
}

fn open_db(cfg: &ServeConfig) -> anyhow::Result<Arc<DB>> {
    if cfg.data_dir.exists() && !cfg.data_dir.is_dir() {
        anyhow::bail!(
            "data dir {} exists and is not a directory",
            cfg.data_dir.display()
        );
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    store::open_db(&cfg.data_dir)
}

/// The cluster id: the stored one wins over the one the bootstrap flags
/// derive (a data dir stays with its cluster); a new member records the
/// derived one; a joining member learns it later (0 until then).
fn settle_cluster_id(db: &DB, cfg: &ServeConfig) -> anyhow::Result<u64> {
    let stored_cluster_id: Option<u64> = read_meta(db, KEY_CLUSTER_ID)?;
    Ok(match (stored_cluster_id, cfg.cluster_id) {
        (Some(stored), Some(derived)) if stored != derived => {
            tracing::warn!(
                stored = %format!("{stored:x}"),
                "data dir belongs to an existing cluster; ignoring --initial-cluster/--initial-cluster-token"
            );
            stored
        }
        (Some(stored), _) => stored,
        (None, Some(derived)) => {
            store::log_store::persist_cluster_id(db, derived)?;
            derived
        }
        (None, None) => 0,
    })
}

/// With `--initial-cluster`, a member Raft has not initialized proposes the
/// listed membership (every listed member proposes the same one).
async fn bootstrap(raft: &Raft, cfg: &ServeConfig) -> anyhow::Result<()> {
    let Bootstrap::Initial(members) = &cfg.bootstrap else {
        return Ok(());
    };
    if raft.is_initialized().await.context("reading Raft state")? {
        return Ok(());
    }
    let members = members_at(members);
    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
    raft.initialize(members)
        .await
        .context("initializing the cluster")
}

fn raft_config(cfg: &ServeConfig) -> anyhow::Result<openraft::Config> {
    let (election_timeout_min, election_timeout_max) =
        election_bounds(cfg.heartbeat_interval, cfg.election_timeout);
    let config = openraft::Config {
        cluster_name: "raftkv".into(),
        heartbeat_interval: cfg.heartbeat_interval,
        election_timeout_min,
        election_timeout_max,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
        // Keep some log after a snapshot so a briefly lagging follower catches up
        // from the log rather than a whole snapshot.
        max_in_snapshot_log_to_keep: cfg.snapshot_count.min(5_000),
        install_snapshot_timeout: 30_000,
        enable_pre_vote: Some(true),
        // A leader that restarts stands for election like any member, as in
        // etcd. Restoring its term at once (openraft's default) would let it
        // answer read indexes from the commit index its disk kept, and that
        // record is written unsynced (it can be rebuilt from a quorum): after
        // a power cut it trails what was acknowledged, and linearizable reads
        // missed the last acknowledged writes (tests/durability.rs).
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    config.validate().context("invalid Raft settings")
}

/// openraft's `(election_timeout_min, election_timeout_max)` for etcd's
/// meaning of `--election-timeout` T: a member refuses votes for T after it
/// last heard from its leader (check-quorum), and a follower campaigns after
/// a random wait of one to two T without a word from it. openraft campaigns
/// after its leader lease (`election_timeout_max`) *plus* a random
/// `min..max`, so the lease is T and the random part starts just above the
/// heartbeat (openraft's floor): a campaign after [T + heartbeat, 2T). With
/// (T, 2T), as before, a follower waited 3T to 4T, and a killed leader took
/// 3.1-3.6 s to replace at the then 1 s default (BENCHMARKS.md, failover).
fn election_bounds(heartbeat: u64, election_timeout: u64) -> (u64, u64) {
    (heartbeat + 1, election_timeout)
}

#[cfg(test)]
mod tests {
    use super::election_bounds;

    #[test]
    fn a_follower_campaigns_after_one_to_two_election_timeouts_as_in_etcd() {
        for (heartbeat, timeout) in [(100, 500), (100, 1000), (50, 250)] {
            let (min, max) = election_bounds(heartbeat, timeout);
            // openraft's vote lease, and its campaign window: lease + [min, max).
            assert_eq!(max, timeout, "vote lease");
            let (first, last) = (max + min, max + max);
            assert!(
                first > timeout && first <= timeout + heartbeat + 1 && last == 2 * timeout,
                "campaign window [{first}, {last}) for {timeout}"
            );
            let config = openraft::Config {
                heartbeat_interval: heartbeat,
                election_timeout_min: min,
                election_timeout_max: max,
                ..Default::default()
            };
            assert!(config.validate().is_ok(), "openraft refuses {min}..{max}");
        }
    }
}
