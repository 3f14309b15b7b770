//! The check of the catch-up client (`catch_up_workload`): within one round,
//! a watcher of the whole keyspace gets every revision from its start, in
//! order, until it has caught up or is cancelled as compacted. Every revision
//! of the campaign is a KV change, so any revision missing is a gap.

use etcd_client::WatchResponse;

/// One round: a watch from `start`, meant to reach `target`.
#[derive(Debug, Clone)]
pub struct CatchUpRound {
    pub member: String,
    pub start: i64,
    /// The head when the round began.
    pub target: i64,
    /// The next revision the watcher expects.
    pub next: i64,
    /// Where this round compacted, mid-replay (0: it did not get to).
    pub compacted_at: i64,
    /// The compaction revision the watch was cancelled with, if it was.
    pub cancelled_at: Option<i64>,
    /// What went wrong, if anything.
    pub problem: Option<String>,
}

impl CatchUpRound {
    /// Take one watch response: its events must continue the sequence.
    pub fn take(&mut self, resp: &WatchResponse) {
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            // Several events of one revision (a txn) share it.
            if revision != self.next && revision != self.next - 1 {
                self.problem = Some(format!(
                    "the watcher on {} from revision {} skipped from {} to {revision} \
                     (compacted at {})",
                    self.member,
                    self.start,
                    self.next - 1,
                    self.compacted_at
                ));
                return;
            }
            self.next = revision + 1;
        }
        if resp.canceled() && resp.compact_revision() > 0 {
            self.cancelled_at = Some(resp.compact_revision());
        }
    }
}

/// Problems found in `rounds`, one line each.
pub fn check_catch_up(rounds: &[CatchUpRound]) -> Vec<String> {
    rounds.iter().filter_map(|r| r.problem.clone()).collect()
}

/// (rounds, rounds cancelled as compacted mid-replay, revisions replayed).
pub fn catch_up_summary(rounds: &[CatchUpRound]) -> (usize, usize, i64) {
    let cancelled = rounds
        .iter()
        .filter(|r| r.cancelled_at.is_some() && r.next > r.start)
        .count();
    let replayed = rounds.iter().map(|r| r.next - r.start).sum();
    (rounds.len(), cancelled, replayed)
}
