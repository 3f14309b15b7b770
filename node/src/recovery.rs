//! Solo recovery, restore and reset: rewriting a member's stored Raft state
//! while its Raft is not running.
//!
//! **Solo recovery** (`raftkv recover --solo`, Admin.RecoverSolo) makes a
//! member that survived the loss of its cluster's quorum a one-member cluster.
//! Like etcd's `--force-new-cluster`, nothing in its log is dropped: an entry
//! the old majority acknowledged may be here without this member knowing it was
//! committed. A membership entry `{this member}` is appended after the last log
//! entry, in a term above every term seen (and the vote moved to that term), so
//! openraft takes it as the effective membership (the last membership entry in
//! the log wins), the lone voter elects itself at the next election timeout, and
//! its first entry as leader commits everything before it. The cluster id is
//! kept and the epoch (see `epoch`) bumped in the same synced write.
//!
//! **Restore** (`raftkv snapshot restore`, Initialize.restore_from_backup) fills
//! a new database from a backup and records it as applied at log id (term 1,
//! index 1), with the log purged up to there and the new membership: the members
//! start as an initialized cluster, and members added later receive the data as
//! a snapshot (never an empty log from index 0).
//!
//! **Reset** (`raftkv reset`) deletes a member's state so it can be added again.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::bail;
use anyhow::Context;
use openraft::entry::RaftEntry;
use rocksdb::IteratorMode;
use rocksdb::WriteBatch;
use rocksdb::DB;

use crate::raft::codec;
use crate::raft::members_at;
use crate::raft::Entry;
use crate::raft::LogId;
use crate::raft::Membership;
use crate::raft::NodeId;
use crate::raft::StoredMembership;
use crate::raft::Vote;
use crate::store::cf;
use crate::store::log_store::read_meta;
use crate::store::schema::CF_KV;
use crate::store::schema::CF_RAFT_LOG;
use crate::store::schema::CF_RAFT_META;
use crate::store::schema::CF_SM_META;
use crate::store::schema::KEY_CLUSTER_ID;
use crate::store::schema::KEY_COMMITTED;
use crate::store::schema::KEY_LAST_APPLIED;
use crate::store::schema::KEY_LAST_PURGED;
use crate::store::schema::KEY_MEMBERSHIP;
use crate::store::schema::KEY_VOTE;
use crate::store::schema::{KEY_EPOCH, KEY_FENCED, KEY_NODE_ID};

/// What a solo recovery kept, and where what it could not keep would have been.
#[derive(Debug, Clone)]
pub struct SoloReport {
    pub cluster_id: u64,
    pub epoch: u64,
    pub last_applied_index: u64,
    pub revision: i64,
    pub key_count: u64,
    pub last_log_index: u64,
    /// Where the membership `{this member}` was written.
    pub membership_index: u64,
}

impl SoloReport {
    pub fn text(&self) -> String {
        let pending = self.last_log_index.saturating_sub(self.last_applied_index);
        format!(
            "solo recovery of cluster {:x}: now epoch {}, this member alone (membership at log index {}).\n\
             kept: everything applied up to log index {} (revision {}, {} keys), and {} later log \
             entries this member had but did not know were committed: they are committed when it starts.\n\
             may be lost: writes that only reached the missing members (never in this member's log).\n\
             old members are refused from now on: reset them (`raftkv reset`) and add them again.",
            self.cluster_id,
            self.epoch,
            self.membership_index,
            self.last_applied_index,
            self.revision,
            self.key_count,
            pending,
        )
    }
}

/// Open a member's database for an offline operation; a running member holds
/// RocksDB's lock, which is reported as such.
pub fn open_offline(data_dir: &Path) -> anyhow::Result<std::sync::Arc<DB>> {
    if !data_dir.join("db").join("CURRENT").exists() {
        bail!("{} holds no raftkv database", data_dir.display());
    }
    crate::store::open_db(data_dir).map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("LOCK") || text.contains("lock") {
            anyhow::anyhow!(
                "the member using {} is running (its database is locked): stop it first",
                data_dir.display()
            )
        } else {
            e
        }
    })
}

/// The member id to operate on: `--id` if given, else the one `serve` stored.
pub fn member_id(db: &DB, given: Option<NodeId>) -> anyhow::Result<NodeId> {
    let stored: Option<NodeId> = read_meta(db, KEY_NODE_ID)?;
    match (given, stored) {
        (Some(g), Some(s)) if g != s => {
            bail!("--id {g} does not match the member id {s} stored in the data dir")
        }
        (Some(g), _) => Ok(g),
        (None, Some(s)) => Ok(s),
        (None, None) => bail!("the data dir does not record its member id: pass --id"),
    }
}

pub fn persist_node_id(db: &DB, id: NodeId) -> anyhow::Result<()> {
    db.put_cf(cf(db, CF_RAFT_META), KEY_NODE_ID, codec::encode(&id)?)?;
    Ok(())
}

fn last_log_entry(db: &DB) -> anyhow::Result<Option<Entry>> {
    match db
        .iterator_cf(cf(db, CF_RAFT_LOG), IteratorMode::End)
        .next()
        .transpose()?
    {
        Some((_, v)) => Ok(Some(codec::decode(&v)?)),
        None => Ok(None),
    }
}

/// The membership in effect: the last membership entry in the log, else the
/// state machine's.
fn effective_membership(db: &DB, sm: &StoredMembership) -> anyhow::Result<Membership> {
    for item in db.iterator_cf(cf(db, CF_RAFT_LOG), IteratorMode::End) {
        let (_, v) = item?;
        let entry: Entry = codec::decode(&v)?;
        if let Some(m) = entry.get_membership() {
            return Ok(m);
        }
    }
    Ok(sm.membership().clone())
}

/// The store revision, as `Mvcc::current_revision` reads it.
pub fn current_revision(db: &DB) -> anyhow::Result<i64> {
    Ok(
        match db.get_cf(cf(db, CF_SM_META), crate::store::schema::KEY_REVISION)? {
            Some(b) => i64::from_be_bytes(b.as_slice().try_into().context("bad revision record")?),
            None => 1,
        },
    )
}

pub fn count_keys(db: &DB) -> u64 {
    db.iterator_cf(cf(db, CF_KV), IteratorMode::Start).count() as u64
}

/// Rewrite the stored state of member `id` (whose Raft is not running) into a
/// one-member cluster at a new epoch. One synced write; nothing before it is
/// changed if it fails.
pub fn recover_solo(db: &DB, id: NodeId) -> anyhow::Result<SoloReport> {
    let cluster_id: u64 = read_meta(db, KEY_CLUSTER_ID)?.unwrap_or(0);
    let (last_applied, sm_membership) = crate::store::state_machine::applied_state(db)?;
    let last_entry = last_log_entry(db)?;
    let purged: Option<LogId> = read_meta(db, KEY_LAST_PURGED)?;
    if cluster_id == 0 || (last_entry.is_none() && last_applied.is_none()) {
        bail!("this member was never initialized: there is nothing to recover");
    }
    if let Some(why) = read_meta::<String>(db, KEY_FENCED)? {
        bail!("this member is fenced ({why}): it was left behind by another recovery; reset it instead");
    }
    let membership = effective_membership(db, &sm_membership)?;
    let Some(me) = membership.get_node(&id).cloned() else {
        bail!("member {id:x} is not in its own membership (was it removed?): nothing to recover");
    };
    if !membership.voter_ids().any(|v| v == id) {
        bail!("member {id:x} is a learner: recover from a voter, which has everything committed");
    }
    let vote: Option<Vote> = read_meta(db, KEY_VOTE)?;
    let last_log_id: Option<LogId> = last_entry.as_ref().map(|e| e.log_id).or(purged);
    let last_log_index = last_log_id.as_ref().map_or(0, |l| l.index);
    let applied_index = last_applied.as_ref().map_or(0, |l| l.index);
    let top_term = vote
        .map_or(0, |v| v.leader_id.term)
        .max(last_log_id.as_ref().map_or(0, |l| l.leader_id.term))
        .max(last_applied.as_ref().map_or(0, |l| l.leader_id.term));
    let term = top_term + 1;
    let index = last_log_index.max(applied_index) + 1;
    let epoch: u64 = read_meta::<u64>(db, KEY_EPOCH)?.unwrap_or(0) + 1;

    let solo = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, me)]))
        .context("building the one-member membership")?;
    let entry = Entry::new_membership(LogId::new_term_index(term, index), solo);
    let meta = cf(db, CF_RAFT_META);
    let mut batch = WriteBatch::default();
    if let Some(applied) = last_applied
        .as_ref()
        .filter(|_| last_log_index < applied_index)
    {
        // The state machine is ahead of the log (a snapshot was installed):
        // the log restarts after what was applied.
        batch.put_cf(meta, KEY_LAST_PURGED, codec::encode(applied)?);
        batch.delete_range_cf(cf(db, CF_RAFT_LOG), 0u64.to_be_bytes(), index.to_be_bytes());
    }
    batch.put_cf(
        cf(db, CF_RAFT_LOG),
        index.to_be_bytes(),
        codec::encode(&entry)?,
    );
    batch.put_cf(meta, KEY_VOTE, codec::encode(&Vote::new(term, id))?);
    batch.put_cf(meta, KEY_EPOCH, codec::encode(&epoch)?);
    write_synced(db, batch)?;
    Ok(SoloReport {
        cluster_id,
        epoch,
        last_applied_index: applied_index,
        revision: current_revision(db)?,
        key_count: count_keys(db),
        last_log_index,
        membership_index: index,
    })
}

fn write_synced(db: &DB, batch: WriteBatch) -> anyhow::Result<()> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
        .context("writing the recovered state")
}

/// The log id a restored state machine is recorded as having applied.
pub fn restored_log_id() -> LogId {
    LogId::new_term_index(1, 1)
}

/// After `backup::load_into` filled a new database, record the Raft state of a
/// new cluster `members` (this member `id` among them) whose state machine has
/// applied exactly that data.
pub fn record_restored_state(
    db: &DB,
    id: NodeId,
    members: &BTreeMap<NodeId, String>,
    cluster_id: u64,
) -> anyhow::Result<()> {
    let at = restored_log_id();
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes = members_at(members);
    let membership = StoredMembership::new(
        Some(at),
        Membership::new(vec![voters], nodes).context("building the restored membership")?,
    );
    let sm = cf(db, CF_SM_META);
    let meta = cf(db, CF_RAFT_META);
    let mut batch = WriteBatch::default();
    batch.put_cf(sm, KEY_LAST_APPLIED, codec::encode(&Some(at))?);
    batch.put_cf(sm, KEY_MEMBERSHIP, codec::encode(&membership)?);
    // The backup's member records name the old cluster's data dirs (see
    // `crate::incarnation`); the restored members publish their own.
    for old in crate::store::members::recorded_ids(db)? {
        batch.delete_cf(sm, crate::store::schema::member_attr_key(old));
    }
    batch.put_cf(meta, KEY_LAST_PURGED, codec::encode(&at)?);
    batch.put_cf(meta, KEY_COMMITTED, codec::encode(&Some(at))?);
    batch.put_cf(meta, KEY_VOTE, codec::encode(&Vote::new(1, id))?);
    batch.put_cf(meta, KEY_CLUSTER_ID, codec::encode(&cluster_id)?);
    batch.put_cf(meta, KEY_EPOCH, codec::encode(&0u64)?);
    batch.put_cf(meta, KEY_NODE_ID, codec::encode(&id)?);
    write_synced(db, batch)
}

/// Delete a stopped member's state (its database, Raft snapshots and leftovers),
/// keeping its backups; returns what was removed.
pub fn reset(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    drop(open_offline(data_dir)?); // refuses a running member
    let mut removed = Vec::new();
    for entry in
        std::fs::read_dir(data_dir).with_context(|| format!("reading {}", data_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "backups" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Command;
    use crate::raft::Member;

    fn put_entry(db: &DB, entry: &Entry) {
        db.put_cf(
            cf(db, CF_RAFT_LOG),
            entry.log_id.index.to_be_bytes(),
            codec::encode(entry).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn solo_recovery_keeps_the_whole_log_and_appends_a_solo_membership() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_db(dir.path()).unwrap();
        let url = |i: u64| Member {
            peer_url: format!("http://127.0.0.1:{i}"),
        };
        let three = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([(1, url(1)), (2, url(2)), (3, url(3))]),
        )
        .unwrap();
        put_entry(
            &db,
            &Entry::new_membership(LogId::new_term_index(1, 0), three),
        );
        for i in 1..=5 {
            put_entry(
                &db,
                &Entry::new_normal(LogId::new_term_index(2, i), Command::default()),
            );
        }
        let meta = cf(&db, CF_RAFT_META);
        db.put_cf(meta, KEY_CLUSTER_ID, codec::encode(&7u64).unwrap())
            .unwrap();
        db.put_cf(meta, KEY_VOTE, codec::encode(&Vote::new(3, 2)).unwrap())
            .unwrap();
        // Applied up to 3; entries 4 and 5 are in the log, not known committed.
        db.put_cf(
            cf(&db, CF_SM_META),
            KEY_LAST_APPLIED,
            codec::encode(&Some(LogId::new_term_index(2, 3))).unwrap(),
        )
        .unwrap();

        let report = recover_solo(&db, 1).unwrap();
        assert_eq!((report.epoch, report.cluster_id), (1, 7));
        assert_eq!((report.last_applied_index, report.last_log_index), (3, 5));
        assert_eq!(report.membership_index, 6);
        // Entries 4 and 5 are kept; the solo membership follows them in a term
        // above every term seen (vote term 3), and the vote moved there.
        for i in 4..=5 {
            assert!(db
                .get_cf(cf(&db, CF_RAFT_LOG), (i as u64).to_be_bytes())
                .unwrap()
                .is_some());
        }
        let last = last_log_entry(&db).unwrap().unwrap();
        assert_eq!(last.log_id, LogId::new_term_index(4, 6));
        let m = last.get_membership().unwrap();
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(m.get_node(&1), Some(&url(1)));
        let vote: Vote = read_meta(&db, KEY_VOTE).unwrap().unwrap();
        assert_eq!(vote, Vote::new(4, 1));
        // A second recovery bumps the epoch again; a learner or a stranger is refused.
        assert_eq!(recover_solo(&db, 1).unwrap().epoch, 2);
        assert!(recover_solo(&db, 9).is_err());
    }
}
