//! Counters and gauges exported on `/metrics` in Prometheus text format.
//!
//! A handful of atomics is all a node needs; the Raft gauges (term, indexes,
//! leader) are read from openraft's metrics when the page is rendered.
//!
//! Each series is exported under raftkv's name and, where etcd measures the
//! same thing, under etcd's name and type too (`etcd_server_*`,
//! `etcd_disk_*`, `etcd_mvcc_*`), so dashboards and alert rules written for
//! etcd read a raftkv member as they read an etcd one.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    pub proposals_committed: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub proposals_forwarded: AtomicU64,
    /// Proposals made on this member that have not finished yet.
    pub proposals_pending: AtomicU64,
    pub leader_changes: AtomicU64,
    pub apply_entries: AtomicU64,
    /// fsyncs of the Raft log (one per group-commit batch).
    pub log_fsyncs: AtomicU64,
    /// Log append batches made durable by those fsyncs.
    pub log_appends_synced: AtomicU64,
    /// Read-index rounds run, and the linearizable reads they served.
    pub read_index_rounds: AtomicU64,
    pub read_index_reads: AtomicU64,
    /// Time to apply one batch of committed entries.
    pub apply_batch: Histogram,
    /// Time of one group-commit fsync of the Raft log (etcd's
    /// `etcd_disk_wal_fsync_duration_seconds`).
    pub log_fsync: Histogram,
    /// Time from handing a write to Raft on the leader to its applied result.
    pub proposal: Histogram,
    /// Time a follower waits for the leader to carry out a forwarded write.
    pub forward: Histogram,
    /// Calls to etcd's gRPC services on the client port.
    pub grpc: GrpcCalls,
}

mod grpc;

pub use grpc::GrpcCalls;
pub use grpc::GrpcMethod;

/// Bucket upper bounds, in microseconds, shared by every latency histogram.
const BUCKETS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A cumulative latency histogram rendered in Prometheus' format.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_MICROS.len()],
    count: AtomicU64,
    micros_total: AtomicU64,
}

impl Histogram {
    pub fn record(&self, took: Duration) {
        let micros = took.as_micros() as u64;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros_total.fetch_add(micros, Ordering::Relaxed);
        if let Some(i) = BUCKETS_MICROS.iter().position(|bound| micros <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS_MICROS) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.micros_total.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The Raft state at render time, read from openraft.
pub struct RaftGauges {
    pub term: u64,
    pub has_leader: bool,
    pub is_leader: bool,
    pub committed: u64,
    pub applied: u64,
    pub last_log: u64,
    pub snapshot: u64,
    pub purged: u64,
    /// Bytes the member's database takes on disk.
    pub db_size: u64,
    /// `--quota-backend-bytes`, as in force.
    pub quota: u64,
}

impl Metrics {
    pub fn record_apply(&self, entries: u64, took: Duration) {
        self.apply_entries.fetch_add(entries, Ordering::Relaxed);
        self.apply_batch.record(took);
    }

    pub fn record_log_fsync(&self, appends: u64, took: Duration) {
        self.log_fsync.record(took);
        self.log_fsyncs.fetch_add(1, Ordering::Relaxed);
        self.log_appends_synced
            .fetch_add(appends, Ordering::Relaxed);
    }

    pub fn render(&self, g: &RaftGauges) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge("raftkv_raft_term", "Current Raft term.", "gauge", g.term);
        gauge(
            "raftkv_has_leader",
            "1 if the member knows a leader.",
            "gauge",
            g.has_leader as u64,
        );
        gauge(
            "raftkv_is_leader",
            "1 if the member is the leader.",
            "gauge",
            g.is_leader as u64,
        );
        gauge(
            "raftkv_leader_changes_seen_total",
            "Leader changes seen.",
            "counter",
            load(&self.leader_changes),
        );
        gauge(
            "raftkv_raft_committed_index",
            "Last committed log index.",
            "gauge",
            g.committed,
        );
        gauge(
            "raftkv_raft_applied_index",
            "Last applied log index.",
            "gauge",
            g.applied,
        );
        gauge(
            "raftkv_raft_last_log_index",
            "Last log index.",
            "gauge",
            g.last_log,
        );
        gauge(
            "raftkv_raft_purged_index",
            "Log index up to which the log has been purged.",
            "gauge",
            g.purged,
        );
        gauge(
            "raftkv_raft_snapshot_index",
            "Log index of the last snapshot.",
            "gauge",
            g.snapshot,
        );
        gauge(
            "raftkv_proposals_committed_total",
            "Proposals committed.",
            "counter",
            load(&self.proposals_committed),
        );
        gauge(
            "raftkv_proposals_failed_total",
            "Proposals that failed.",
            "counter",
            load(&self.proposals_failed),
        );
        gauge(
            "raftkv_proposals_forwarded_total",
            "Proposals forwarded to the leader.",
            "counter",
            load(&self.proposals_forwarded),
        );
        gauge(
            "raftkv_apply_entries_total",
            "Log entries applied.",
            "counter",
            load(&self.apply_entries),
        );
        gauge(
            "raftkv_log_fsyncs_total",
            "fsyncs of the Raft log (group commit: one per batch of appends).",
            "counter",
            load(&self.log_fsyncs),
        );
        gauge(
            "raftkv_log_appends_synced_total",
            "Raft log append batches made durable by those fsyncs.",
            "counter",
            load(&self.log_appends_synced),
        );
        gauge(
            "raftkv_read_index_rounds_total",
            "Read-index rounds (one per batch of concurrent linearizable reads).",
            "counter",
            load(&self.read_index_rounds),
        );
        gauge(
            "raftkv_read_index_reads_total",
            "Linearizable reads served by those rounds.",
            "counter",
            load(&self.read_index_reads),
        );
        self.apply_batch.render(
            &mut out,
            "raftkv_apply_batch_duration_seconds",
            "Time to apply one batch of committed entries.",
        );
        self.log_fsync.render(
            &mut out,
            "raftkv_log_fsync_duration_seconds",
            "Time of one group-commit fsync of the Raft log.",
        );
        self.proposal.render(
            &mut out,
            "raftkv_proposal_duration_seconds",
            "Time from proposing a write on the leader to its applied result.",
        );
        self.forward.render(
            &mut out,
            "raftkv_forward_duration_seconds",
            "Time a follower waits for the leader to carry out a forwarded write.",
        );
        self.render_etcd(&mut out, g);
        self.grpc.render(&mut out);
        out
    }

    /// The same measurements under etcd's names and types. etcd's
    /// "proposals committed/applied" are the Raft indexes (gauges), as there.
    fn render_etcd(&self, out: &mut String, g: &RaftGauges) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let series: [(&str, &str, &str, u64); 11] = [
            (
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
                "gauge",
                g.has_leader as u64,
            ),
            (
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                "gauge",
                g.is_leader as u64,
            ),
            (
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
                "counter",
                load(&self.leader_changes),
            ),
            (
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
                "gauge",
                g.committed,
            ),
            (
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
                "gauge",
                g.applied,
            ),
            (
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
                "gauge",
                load(&self.proposals_pending),
            ),
            (
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
                "counter",
                load(&self.proposals_failed),
            ),
            (
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
                "gauge",
                g.quota,
            ),
            (
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
                "gauge",
                g.db_size,
            ),
            (
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
                "gauge",
                g.db_size,
            ),
            (
                "etcd_debugging_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
                "gauge",
                g.db_size,
            ),
        ];
        for (name, help, kind, value) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        self.log_fsync.render(
            out,
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
        );
        // raftkv's apply batch is one RocksDB write: etcd's backend commit.
        self.apply_batch.render(
            out,
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_rendered() {
        let m = Metrics::default();
        m.record_apply(3, Duration::from_micros(300));
        m.record_apply(1, Duration::from_millis(20));
        m.record_log_fsync(3, Duration::from_micros(700));
        let g = RaftGauges {
            term: 4,
            has_leader: true,
            is_leader: false,
            committed: 9,
            applied: 9,
            last_log: 9,
            snapshot: 0,
            purged: 0,
            db_size: 4096,
            quota: 2 << 30,
        };
        let text = m.render(&g);
        assert!(text.contains("raftkv_raft_term 4"));
        assert!(text.contains("raftkv_apply_entries_total 4"));
        assert!(text.contains("raftkv_log_fsyncs_total 1"));
        assert!(text.contains("raftkv_log_appends_synced_total 3"));
        assert!(text.contains("raftkv_apply_batch_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("raftkv_apply_batch_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("raftkv_apply_batch_duration_seconds_count 2"));
        assert!(text.contains("raftkv_apply_batch_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("raftkv_log_fsync_duration_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("raftkv_log_fsync_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("raftkv_proposal_duration_seconds_count 0"));
        // etcd's names for the same measurements.
        assert!(text.contains("# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1"));
        assert!(text.contains("etcd_server_is_leader 0"));
        assert!(text.contains("etcd_server_proposals_committed_total 9"));
        assert!(text.contains("etcd_mvcc_db_total_size_in_bytes 4096"));
        assert!(text.contains("etcd_server_quota_backend_bytes 2147483648"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("etcd_disk_backend_commit_duration_seconds_count 2"));
    }
}
