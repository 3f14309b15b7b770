//! The watch workload's check: watchers on different members, reconnecting from
//! their last revision, must all see the same sequence of events, with no gap
//! and no duplicate, and it must contain every acknowledged write.
//!
//! The watchers watch the whole keyspace from one start revision. Every
//! revision is made by a KV change, so the revisions seen must be exactly
//! `start..=final`, each once (a failed compare-and-set makes no revision).

use std::collections::BTreeMap;

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: i64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
}

/// Everything one watcher received.
#[derive(Debug, Clone, Default)]
pub struct WatcherLog {
    /// The member it started on (it moves on when that one is gone).
    pub member: String,
    pub start_revision: i64,
    pub events: Vec<WatchEvent>,
    /// When each event arrived, in microseconds on the run's clock.
    pub seen_at: Vec<u64>,
    /// Streams re-created after an error or end of stream.
    pub reconnects: u32,
}

/// An acknowledged write: key, value, and the revision of its response header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    pub key: String,
    pub value: String,
    pub revision: i64,
}

/// Problems found, one line each (empty when clean).
pub fn check_watchers(
    logs: &[WatcherLog],
    final_revision: i64,
    acked: &[AckedWrite],
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(first) = logs.first() else {
        return problems;
    };
    for (i, log) in logs.iter().enumerate() {
        let events: Vec<&WatchEvent> = log
            .events
            .iter()
            .filter(|e| e.revision <= final_revision)
            .collect();
        let mut expected = log.start_revision;
        for e in &events {
            if e.revision != expected {
                problems.push(format!(
                    "watcher {i} (on {}): expected revision {expected}, got {} ({}): {}",
                    log.member,
                    e.revision,
                    e.key,
                    if e.revision < expected {
                        "duplicate or out of order"
                    } else {
                        "gap"
                    }
                ));
                break;
            }
            expected += 1;
        }
        if problems.is_empty() && expected != final_revision + 1 {
            problems.push(format!(
                "watcher {i} (on {}): saw revisions {}..{} but the store is at {final_revision}",
                log.member,
                log.start_revision,
                expected - 1
            ));
        }
        if i > 0 && log.start_revision == first.start_revision {
            let theirs: Vec<&WatchEvent> = first
                .events
                .iter()
                .filter(|e| e.revision <= final_revision)
                .collect();
            if let Some(at) =
                (0..events.len().max(theirs.len())).find(|&k| events.get(k) != theirs.get(k))
            {
                problems.push(format!(
                    "watcher {i} (on {}) differs from watcher 0 (on {}) at event {at}: {:?} vs {:?}",
                    log.member,
                    first.member,
                    events.get(at),
                    theirs.get(at)
                ));
            }
        }
    }
    let seen: BTreeMap<i64, &WatchEvent> = first.events.iter().map(|e| (e.revision, e)).collect();
    for w in acked.iter().filter(|w| w.revision >= first.start_revision) {
        match seen.get(&w.revision) {
            Some(e) if e.key == w.key && e.value.as_deref() == Some(w.value.as_str()) => {}
            other => problems.push(format!(
                "acknowledged write {} = {} at revision {} not seen by watcher 0 (saw {other:?})",
                w.key, w.value, w.revision
            )),
        }
    }
    problems
}
