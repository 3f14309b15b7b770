//! The lease workload's check (issue 17, finding 2): a lease is never revoked
//! while a client may still rightly believe it lives.
//!
//! A client believes its lease lives until the send time of the last
//! keep-alive answered with a TTL, plus the TTL (see
//! [`crate::fault::session`]), or until it decided to revoke it itself. The
//! lease's key must not be deleted before the earlier of the two. A watcher
//! receives a delete only after some leader decided the revoke, so a delete
//! *seen* earlier than that proves the revoke was decided too early; times
//! are from the test process's one monotonic clock.

use std::collections::HashMap;
use std::fmt;

/// One lease a client kept, and how long it believed it lived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLife {
    pub client: usize,
    /// The key attached to the lease (and to no other).
    pub key: String,
    pub lease: i64,
    /// Microseconds on the run's clock: when the key was attached.
    pub granted: u64,
    /// The client's reckoning of the lease's deadline when it stopped.
    pub believed_until: u64,
    /// When the client decided to revoke it itself.
    pub revoked: u64,
    pub member: String,
}

impl LeaseLife {
    /// Until when the key must exist.
    pub fn must_live_until(&self) -> u64 {
        self.believed_until.min(self.revoked)
    }
}

impl fmt::Display for LeaseLife {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} lease {:x} ({}) kept via {} from {:.3}s, believed alive until {:.3}s, \
             revoked by the client at {:.3}s",
            self.client,
            self.lease,
            self.key,
            self.member,
            self.granted as f64 / 1e6,
            self.believed_until as f64 / 1e6,
            self.revoked as f64 / 1e6
        )
    }
}

/// Leases whose key was seen deleted while the client still rightly believed
/// them alive, one line each (empty when clean). `deleted_seen` maps a key to
/// the earliest time any watcher received its delete.
pub fn check_leases(lives: &[LeaseLife], deleted_seen: &HashMap<String, u64>) -> Vec<String> {
    lives
        .iter()
        .filter_map(|life| {
            let seen = *deleted_seen.get(&life.key)?;
            (seen < life.must_live_until()).then(|| {
                format!(
                    "lease revoked {:.3}s early: its key's delete was seen at {:.3}s; {life}",
                    (life.must_live_until() - seen) as f64 / 1e6,
                    seen as f64 / 1e6
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(believed_until: u64, revoked: u64) -> LeaseLife {
        LeaseLife {
            client: 0,
            key: "ls/0/1".to_string(),
            lease: 7,
            granted: 0,
            believed_until,
            revoked,
            member: "m".to_string(),
        }
    }

    #[test]
    fn a_delete_after_the_clients_reckoning_is_clean() {
        let seen = HashMap::from([("ls/0/1".to_string(), 5_000_000)]);
        assert!(check_leases(&[life(4_000_000, 9_000_000)], &seen).is_empty());
        // Revoked by the client itself: the delete may follow at once.
        assert!(check_leases(&[life(9_000_000, 4_999_000)], &seen).is_empty());
        // Never seen deleted (a watcher was behind): nothing to judge.
        assert!(check_leases(&[life(9_000_000, 9_000_000)], &HashMap::new()).is_empty());
    }

    #[test]
    fn a_delete_seen_while_the_client_believed_the_lease_alive_is_caught() {
        let seen = HashMap::from([("ls/0/1".to_string(), 5_000_000)]);
        let problems = check_leases(&[life(5_600_000, 9_000_000)], &seen);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("0.600s early"), "{problems:?}");
    }
}
