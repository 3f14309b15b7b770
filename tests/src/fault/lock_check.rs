//! The lock workload's check (issue 17): etcd's Lock grants a lock to the
//! oldest key under its name, and a holder keeps it while its lease lives.
//! Two things must hold for every grant a client received:
//!
//! - **Ownership.** The key the server returned was, at some revision up to
//!   the response's, the oldest live key under the lock's prefix. Judged from
//!   a complete watch log, so by revisions alone, no clocks. A waiter whose key
//!   was deleted while it waited (its lease expired) never owned the lock; a
//!   server that grants it anyway fails here (finding 1).
//! - **Exclusion.** No two holds overlap in time. A hold lasts from the moment
//!   the Lock response arrived until the client stopped believing it held the
//!   lock: it invoked Unlock, it "crashed" (stopped its keep-alives and walked
//!   away), or its session ran out by the client's own reckoning (the send
//!   time of the last keep-alive answered with a TTL, plus the TTL: the server
//!   renewed no earlier than that). Every client is a task of the test process
//!   and all times come from one monotonic clock, so comparing them is sound.
//!   The next holder's grant can only follow the previous key's deletion,
//!   which follows its Unlock, or its lease's revoke, which a correct leader
//!   proposes no earlier than the deadline the client reckoned; a leader that
//!   renews a lease another leader has since revoked fails here (finding 2).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;

use crate::fault::watch_check::WatchEvent;

/// Why a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    /// The client invoked Unlock.
    Unlocked,
    /// The client stopped keeping its lease alive and left the lock to expire.
    Crashed,
    /// The client's own reckoning of its lease's deadline passed.
    SessionExpired,
}

/// One grant of the lock to a client, and how long the client believed it
/// held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHold {
    pub client: usize,
    /// The lock key the server returned.
    pub key: String,
    /// The Lock response's header revision.
    pub revision: i64,
    /// Microseconds on the run's clock: when the response arrived.
    pub acquired: u64,
    /// When the client stopped believing it held the lock.
    pub released: u64,
    pub ended: HoldEnd,
    /// The member endpoint the Lock went to.
    pub member: String,
}

impl fmt::Display for LockHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>10.3}s .. {:>10.3}s] client {} held {} (granted @rev {} via {}, ended {:?})",
            self.acquired as f64 / 1e6,
            self.released as f64 / 1e6,
            self.client,
            self.key,
            self.revision,
            self.member,
            self.ended
        )
    }
}

/// Grants to keys that were not the oldest, one line each (empty when clean).
/// `events` is a complete watch log of the whole keyspace from before the
/// first grant; only keys under `prefix` (the lock's name and `/`) matter.
pub fn check_ownership(holds: &[LockHold], events: &[WatchEvent], prefix: &str) -> Vec<String> {
    let owned_from = ownership(events, prefix);
    let mut problems = Vec::new();
    for hold in holds {
        match owned_from.get(&hold.key) {
            Some(&first) if first <= hold.revision => {}
            Some(&first) => problems.push(format!(
                "lock granted before its key was the oldest (owner from @rev {first}): {hold}"
            )),
            None => problems.push(format!(
                "lock granted to a key that was never the oldest under {prefix}: {hold}"
            )),
        }
    }
    problems
}

/// Overlapping holds, one line per pair (empty when clean).
pub fn check_exclusion(holds: &[LockHold]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_time: Vec<&LockHold> = holds.iter().filter(|h| h.released > h.acquired).collect();
    by_time.sort_by_key(|h| h.acquired);
    // Holds sorted by start: each must begin after every earlier one ended.
    let mut longest: Option<&LockHold> = None;
    for hold in by_time {
        if let Some(earlier) = longest {
            if hold.acquired < earlier.released {
                problems.push(format!(
                    "two holders of one lock for {:.3}s:\n    {earlier}\n    {hold}",
                    (earlier.released.min(hold.released) - hold.acquired) as f64 / 1e6
                ));
            }
        }
        if longest.is_none_or(|l| hold.released > l.released) {
            longest = Some(hold);
        }
    }
    problems
}

/// For every key under `prefix`: the first revision at which it was the
/// oldest live key there (by create revision), if it ever was.
fn ownership(events: &[WatchEvent], prefix: &str) -> HashMap<String, i64> {
    let mut by_revision: BTreeMap<i64, Vec<&WatchEvent>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.key.starts_with(prefix)) {
        by_revision.entry(e.revision).or_default().push(e);
    }
    // Live keys by create revision (a key is created by its first put).
    let mut live: BTreeMap<i64, &str> = BTreeMap::new();
    let mut created: HashMap<&str, i64> = HashMap::new();
    let mut owned_from = HashMap::new();
    for (revision, changes) in by_revision {
        for e in changes {
            match &e.value {
                Some(_) => {
                    let at = *created.entry(e.key.as_str()).or_insert(revision);
                    live.insert(at, e.key.as_str());
                }
                None => {
                    if let Some(at) = created.remove(e.key.as_str()) {
                        live.remove(&at);
                    }
                }
            }
        }
        if let Some((_, oldest)) = live.first_key_value() {
            owned_from.entry(oldest.to_string()).or_insert(revision);
        }
    }
    owned_from
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.to_string(),
            value: Some(String::new()),
        }
    }

    fn del(revision: i64, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.to_string(),
            value: None,
        }
    }

    fn hold(client: usize, key: &str, revision: i64, acquired: u64, released: u64) -> LockHold {
        LockHold {
            client,
            key: key.to_string(),
            revision,
            acquired,
            released,
            ended: HoldEnd::Unlocked,
            member: "m".to_string(),
        }
    }

    #[test]
    fn a_lock_passed_on_in_turn_is_clean() {
        let events = [
            put(2, "lk/a"),
            put(3, "lk/b"),
            del(4, "lk/a"),
            del(5, "lk/b"),
        ];
        let holds = [hold(0, "lk/a", 2, 10, 20), hold(1, "lk/b", 4, 30, 40)];
        assert!(check_ownership(&holds, &events, "lk/").is_empty());
        assert!(check_exclusion(&holds).is_empty());
    }

    #[test]
    fn a_grant_to_a_waiter_whose_key_was_deleted_is_caught() {
        // b's lease expired while it waited behind a; then a unlocked.
        let events = [
            put(2, "lk/a"),
            put(3, "lk/b"),
            del(4, "lk/b"),
            del(5, "lk/a"),
        ];
        let holds = [hold(0, "lk/a", 2, 10, 20), hold(1, "lk/b", 5, 30, 40)];
        let problems = check_ownership(&holds, &events, "lk/");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("never the oldest"), "{problems:?}");
    }

    #[test]
    fn overlapping_holds_are_caught_even_behind_a_long_one() {
        let events = [
            put(2, "lk/a"),
            del(3, "lk/a"),
            put(4, "lk/b"),
            del(5, "lk/b"),
            put(6, "lk/c"),
        ];
        // a held 10..100; b 20..30 overlaps it; c at 50 overlaps a too.
        let holds = [
            hold(0, "lk/a", 2, 10, 100),
            hold(1, "lk/b", 4, 20, 30),
            hold(2, "lk/c", 6, 50, 60),
        ];
        assert!(check_ownership(&holds, &events, "lk/").is_empty());
        let problems = check_exclusion(&holds);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.contains("two holders")));
    }

    #[test]
    fn other_keys_do_not_count() {
        let events = [put(2, "lk/a"), put(3, "other"), del(4, "lk/a")];
        let holds = [hold(0, "lk/a", 3, 10, 20)];
        assert!(check_ownership(&holds, &events, "lk/").is_empty());
    }
}
