//! Lease deadlines, kept by the leader alone.
//!
//! Grant and revoke go through the log, but *when* a lease runs out is decided
//! by the leader only: it keeps a deadline per lease, renews it on keep-alive,
//! and proposes a revoke when it passes, so every member deletes the same keys
//! at the same revision.
//!
//! Two leaders may briefly both believe they lead, and a lease must never be
//! revoked by the new one while a keep-alive answered by the old one still
//! holds. Three rules, together, rule that out (issue 17, finding 2):
//!
//! - A keep-alive is answered only by a leader that a quorum acknowledged
//!   within the last election timeout (`Node::holds_leader_lease`): any later
//!   leader was elected with a vote from one of those members, cast after its
//!   acknowledgement, so the old leader's last renewal is at most one election
//!   timeout after the new leader's term began.
//! - A new leader starts every lease's full TTL afresh *plus one election
//!   timeout* (etcd's lessor does the same on promotion): it can only lengthen
//!   a lease, never cut one short, and the extra timeout covers that window.
//!   That includes a lease whose grant, from an earlier term, the new leader
//!   applies only after its promotion: until it has applied an entry of its
//!   own term (so every earlier one), each lease it first sees gets the margin.
//! - A lease past its deadline is not renewed: it is being revoked, and a
//!   renewal would hand its holder a TTL it no longer has.
//!
//! The decisions are made by [`Deadlines`], plain data given the time; the
//! [`LeaseTimers`] around it read the lease table and the clock.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use rocksdb::DB;

use crate::errors::ApiError;
use crate::store::lease::all_leases;

/// The leader's lease deadlines, brought in line with the lease table (in
/// `db`) whenever it changed or the term did.
pub struct LeaseTimers {
    db: Arc<DB>,
    /// Bumped by the state machine whenever a lease is granted or revoked.
    changes: AtomicU64,
    /// What a new leader adds to every lease's TTL: the election timeout.
    promotion_margin: Duration,
    state: Mutex<Deadlines>,
}

/// The term a leader keeps deadlines for, and whether it has applied an
/// entry of that term yet (if so, every entry of earlier terms is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTerm {
    pub term: u64,
    pub applied_own_entry: bool,
}

/// What a keep-alive got.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The lease runs its full TTL (seconds) again from now.
    Renewed(i64),
    /// The lease does not exist, or ran out and is being revoked (etcd
    /// answers both with TTL 0).
    Gone,
}

impl LeaseTimers {
    pub fn new(db: Arc<DB>, promotion_margin: Duration) -> Self {
        Self {
            db,
            changes: AtomicU64::default(),
            promotion_margin,
            state: Mutex::default(),
        }
    }

    pub fn note_change(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bring the deadlines in line with the lease table, as leader of
    /// `term` (read before the table, so an own-term entry it saw applied is
    /// in the table read here).
    pub fn sync(&self, term: LeaderTerm) -> Result<(), ApiError> {
        let changes = self.changes.load(Ordering::Acquire);
        let mut st = self.lock();
        if st.is_current(term.term, changes) {
            return Ok(());
        }
        let leases = all_leases(&self.db)?;
        st.rebuild(term, changes, leases, Instant::now(), self.promotion_margin);
        Ok(())
    }

    /// Forget every deadline: this member is not the leader.
    pub fn clear(&self) {
        *self.lock() = Deadlines::default();
    }

    /// The leases whose deadline has passed.
    pub fn expired(&self) -> Vec<i64> {
        self.lock().expired(Instant::now())
    }

    /// Keep-alive on the leader of `term`.
    pub fn renew(&self, term: LeaderTerm, id: i64) -> Result<Renewal, ApiError> {
        self.sync(term)?;
        Ok(self.lock().renew(id, Instant::now()))
    }

    /// On the leader of `term`: (remaining seconds, granted TTL), or None if
    /// the lease does not exist.
    pub fn remaining(&self, term: LeaderTerm, id: i64) -> Result<Option<(i64, i64)>, ApiError> {
        self.sync(term)?;
        Ok(self.lock().remaining(id, Instant::now()))
    }
}

/// Every lease's deadline as of one term, and the decisions made from them.
#[derive(Default)]
struct Deadlines {
    /// The leader term these deadlines belong to (0: none kept).
    term: u64,
    /// The lease-table change count they reflect.
    seen_changes: u64,
    /// Whether a rebuild in this term saw an entry of the term applied: the
    /// leases first seen after that were granted in this term.
    settled: bool,
    /// Lease id -> (deadline, granted TTL in seconds).
    by_lease: HashMap<i64, (Instant, i64)>,
}

impl Deadlines {
    fn is_current(&self, term: u64, changes: u64) -> bool {
        self.term == term && self.seen_changes == changes
    }

    /// Take `leases` (id, granted TTL) as the lease table at `now`. A lease
    /// kept from the same term keeps its deadline; in a new term every lease
    /// gets its full TTL plus `promotion_margin`, and so does every lease
    /// first seen before the term settled (its grant may be from an earlier
    /// term); a lease granted in this term gets its TTL.
    fn rebuild(
        &mut self,
        term: LeaderTerm,
        changes: u64,
        leases: Vec<(i64, i64)>,
        now: Instant,
        promotion_margin: Duration,
    ) {
        let promoted = self.term != term.term;
        let settled = !promoted && self.settled;
        let mut next = HashMap::with_capacity(leases.len());
        for (id, ttl) in leases {
            let full = now + seconds(ttl);
            let deadline = match self.by_lease.get(&id) {
                _ if promoted => full + promotion_margin,
                Some((kept, _)) => *kept,
                None if settled => full,
                None => full + promotion_margin,
            };
            next.insert(id, (deadline, ttl));
        }
        *self = Deadlines {
            term: term.term,
            seen_changes: changes,
            settled: settled || term.applied_own_entry,
            by_lease: next,
        };
    }

    fn expired(&self, now: Instant) -> Vec<i64> {
        self.by_lease
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    fn renew(&mut self, id: i64, now: Instant) -> Renewal {
        match self.by_lease.get_mut(&id) {
            Some((deadline, ttl)) if *deadline > now => {
                *deadline = now + seconds(*ttl);
                Renewal::Renewed(*ttl)
            }
            _ => Renewal::Gone,
        }
    }

    fn remaining(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let (deadline, ttl) = self.by_lease.get(&id)?;
        let left = deadline.saturating_duration_since(now);
        // etcd rounds the remaining time up to whole seconds.
        Some((
            left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0),
            *ttl,
        ))
    }
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_secs(1);

    fn settled(term: u64) -> LeaderTerm {
        LeaderTerm {
            term,
            applied_own_entry: true,
        }
    }

    fn kept(leases: &[(i64, i64)], term: u64, at: Instant) -> Deadlines {
        let mut d = Deadlines::default();
        d.rebuild(settled(term), 1, leases.to_vec(), at, MARGIN);
        d
    }

    #[test]
    fn a_lease_past_its_deadline_is_not_renewed() {
        let start = Instant::now();
        let mut d = kept(&[(7, 5)], 3, start);
        let late = start + Duration::from_secs(7);
        assert_eq!(d.expired(late), vec![7]);
        assert_eq!(d.renew(7, late), Renewal::Gone);
        // Still expired: the refused renewal did not move the deadline.
        assert_eq!(d.expired(late), vec![7]);
    }

    #[test]
    fn a_renewal_in_time_restarts_the_ttl() {
        let start = Instant::now();
        let mut d = kept(&[(7, 5)], 3, start);
        let at = start + Duration::from_secs(3);
        assert_eq!(d.renew(7, at), Renewal::Renewed(5));
        assert_eq!(d.remaining(7, at), Some((5, 5)));
        assert_eq!(d.renew(8, at), Renewal::Gone);
    }

    #[test]
    fn a_new_term_gives_every_lease_its_ttl_and_an_election_timeout() {
        let start = Instant::now();
        let old = kept(&[(7, 5)], 3, start);
        let mut d = old;
        let promoted_at = start + Duration::from_secs(2);
        d.rebuild(settled(4), 1, vec![(7, 5)], promoted_at, MARGIN);
        assert_eq!(d.remaining(7, promoted_at), Some((6, 5)));
        // In the same term, a rebuild for another lease's grant keeps it.
        let later = promoted_at + Duration::from_secs(1);
        d.rebuild(settled(4), 2, vec![(7, 5), (9, 10)], later, MARGIN);
        assert_eq!(d.remaining(7, later), Some((5, 5)));
        assert_eq!(d.remaining(9, later), Some((10, 10)));
    }

    #[test]
    fn a_grant_from_an_earlier_term_applied_after_the_promotion_gets_the_margin_too() {
        let start = Instant::now();
        let unsettled = LeaderTerm {
            term: 4,
            applied_own_entry: false,
        };
        let mut d = Deadlines::default();
        d.rebuild(unsettled, 1, vec![], start, MARGIN);
        // The old term's grant of lease 7 is applied, then the new term's
        // first entry; one rebuild sees both.
        let at = start + Duration::from_millis(300);
        d.rebuild(settled(4), 2, vec![(7, 5)], at, MARGIN);
        assert_eq!(d.remaining(7, at), Some((6, 5)));
        // From then on a lease first seen was granted in this term.
        d.rebuild(settled(4), 3, vec![(7, 5), (9, 5)], at, MARGIN);
        assert_eq!(d.remaining(9, at), Some((5, 5)));
    }
}
