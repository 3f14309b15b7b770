//! Whether the leader this member knows of is alive.
//!
//! openraft names a leader long after it may have stopped leading anything:
//! a follower keeps the last leader it heard from, and a leader cut off from
//! its followers keeps leading in its own eyes. etcd then reports "no
//! leader", and so does raftkv (in Status, `/readyz`, `MemberStatus`'s
//! `millis_since_leader`, and by refusing to forward), judged here:
//!
//! - a follower trusts a leader it heard from (the peer service touches
//!   [`LeaderContact`]) within the leader timeout;
//! - a leader trusts itself while a quorum acknowledged one of its messages
//!   within the leader timeout. A leader just elected has no acknowledgement
//!   yet (openraft reports none until a quorum answers in the new term), so
//!   it is given one leader timeout from when this member first saw itself
//!   lead in that term ([`LeadingSince`]), and no more: a leader whose
//!   followers refuse it from the start (they were wiped, or cut off right
//!   after they voted) is not alive, and the operator's solo recovery, which
//!   waits for a leaderless cluster, must be able to see that.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

/// When a member last heard from a live leader (or, for `leader_seen`, last
/// knew of one).
pub struct LeaderContact {
    started: Instant,
    last_ms: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn since(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The term this member last saw itself lead in, and since when.
#[derive(Default)]
pub struct LeadingSince {
    seen: Mutex<Option<(u64, Instant)>>,
}

impl LeadingSince {
    /// How long this member has led in `term`, counted from the first time it
    /// was asked in that term (the member asks every 100 ms, see
    /// `server::background`).
    pub fn leading_for(&self, term: u64) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match *seen {
            Some((t, since)) if t == term => since.elapsed(),
            _ => {
                *seen = Some((term, Instant::now()));
                Duration::ZERO
            }
        }
    }
}

/// What a member knows of the leader it names.
#[derive(Clone, Copy, Debug)]
pub enum LeaderEvidence {
    /// Another member leads: how long ago it was last heard from.
    Other { heard_ago: Duration },
    /// This member leads.
    Itself {
        /// The only voter is its own quorum.
        lone_voter: bool,
        /// How long ago a quorum last acknowledged it in this term, if ever.
        quorum_acked_ago: Option<Duration>,
        /// How long it has led in this term (see [`LeadingSince`]).
        leading_for: Duration,
    },
}

/// Whether the leader is alive, given what is known of it and how long a
/// leader may go unconfirmed (`timeout`).
pub fn is_alive(evidence: LeaderEvidence, timeout: Duration) -> bool {
    match evidence {
        LeaderEvidence::Other { heard_ago } => heard_ago <= timeout,
        LeaderEvidence::Itself {
            lone_voter: true, ..
        } => true,
        LeaderEvidence::Itself {
            quorum_acked_ago: Some(ago),
            ..
        } => ago <= timeout,
        LeaderEvidence::Itself {
            quorum_acked_ago: None,
            leading_for,
            ..
        } => leading_for <= timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);
    const LONG: Duration = Duration::from_secs(600);

    fn itself(quorum_acked_ago: Option<Duration>, leading_for: Duration) -> LeaderEvidence {
        LeaderEvidence::Itself {
            lone_voter: false,
            quorum_acked_ago,
            leading_for,
        }
    }

    #[test]
    fn a_leader_never_acknowledged_by_a_quorum_is_alive_only_for_one_timeout() {
        assert!(is_alive(itself(None, Duration::from_millis(300)), TIMEOUT));
        // Wiped followers refuse every append: no acknowledgement ever comes.
        assert!(!is_alive(itself(None, LONG), TIMEOUT));
    }

    #[test]
    fn a_leader_lives_on_recent_quorum_acknowledgements() {
        assert!(is_alive(
            itself(Some(Duration::from_millis(50)), LONG),
            TIMEOUT
        ));
        assert!(!is_alive(
            itself(Some(Duration::from_secs(3)), LONG),
            TIMEOUT
        ));
    }

    #[test]
    fn a_lone_voter_is_its_own_quorum() {
        let alone = LeaderEvidence::Itself {
            lone_voter: true,
            quorum_acked_ago: None,
            leading_for: LONG,
        };
        assert!(is_alive(alone, TIMEOUT));
    }

    #[test]
    fn a_follower_trusts_a_leader_heard_from_recently() {
        let heard = |ms| LeaderEvidence::Other {
            heard_ago: Duration::from_millis(ms),
        };
        assert!(is_alive(heard(100), TIMEOUT));
        assert!(!is_alive(heard(2_500), TIMEOUT));
    }

    #[test]
    fn leading_since_restarts_with_each_term() {
        let since = LeadingSince::default();
        assert_eq!(since.leading_for(4), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        assert!(since.leading_for(4) >= Duration::from_millis(20));
        assert_eq!(since.leading_for(5), Duration::ZERO);
    }
}
