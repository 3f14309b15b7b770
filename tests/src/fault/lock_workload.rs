//! The lock workload: clients take one etcd lock (v3lock `Lock`/`Unlock`) on
//! leases of their own, hold it a while, and let it go: by Unlock, or by
//! "crashing" (stopping their keep-alives and walking away, so the lock passes
//! on when the lease expires). Each records every grant and how long it
//! believed it held the lock, for [`crate::fault::lock_check`].
//!
//! Sessions are [`crate::fault::session`]'s: kept alive through the one
//! member they began on, and believed alive by the client's own reckoning. A
//! client pinned to a leader cut off from the others is the one an old
//! leader's renewals would mislead.
//!
//! Some rounds are made to go wrong on purpose: a long hold (longer than the
//! lease TTL, so waiters behind it outlive their own leases when they stall),
//! and a stalled waiter, which stops its keep-alives while its Lock waits (a
//! paused process): its key goes when its lease runs out, and the server must
//! then answer "session expired", never grant it the lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::LockOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fault::history::Recorder;
use crate::fault::lock_check::{HoldEnd, LockHold};
use crate::fault::session::Sessions;

/// The lock every client contends for; its keys live under `LOCK_NAME/`.
pub const LOCK_NAME: &str = "lk";

/// Session lease TTL in seconds: short, so expiries happen within a fault's
/// hold, and above the members' minimum (1.5 election timeouts).
const SESSION_TTL: i64 = 3;

/// How often a session sends a keep-alive: a sixth of the TTL (etcd's client
/// sends one every third), so the last renewal a client gets from a leader
/// is close to the last one that leader gave.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);

/// Rounds whose hold outlasts the session TTL (and most faults).
const LONG_HOLDS_PERCENT: u32 = 35;

/// Rounds whose session stops its keep-alives while its Lock waits.
const STALLED_WAITERS_PERCENT: u32 = 15;

/// How long a Lock may wait before the client gives up on it.
const LOCK_WAIT: Duration = Duration::from_secs(12);

/// One lock client's settings.
#[derive(Clone)]
pub struct LockClient {
    pub client: usize,
    pub sessions: Sessions,
    pub backoff: Duration,
    pub seed: u64,
    pub stop: Arc<AtomicBool>,
    pub holds: Recorder<LockHold>,
}

impl LockClient {
    /// Take, hold and release the lock until told to stop.
    pub async fn run(self) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let members = self.sessions.endpoints.len();
        let mut member = self.client % members;
        while !self.stop.load(Ordering::SeqCst) {
            if !self.round(&mut rng, member).await {
                tokio::time::sleep(self.backoff).await;
                member = (member + 1) % members;
            }
        }
    }

    /// One session: grant, lock, hold, release. False when something failed
    /// and the client should move to another member.
    async fn round(&self, rng: &mut StdRng, member: usize) -> bool {
        let Some(mut conn) = self.sessions.connect(member, LOCK_WAIT).await else {
            return false;
        };
        let Some(session) = self.sessions.grant(&mut conn, member, SESSION_TTL).await else {
            return false;
        };
        if rng.random_range(0..100) < STALLED_WAITERS_PERCENT {
            session.stall();
        }
        let granted = conn
            .lock(LOCK_NAME, Some(LockOptions::new().with_lease(session.id)))
            .await;
        let Ok(granted) = granted else {
            // Session expired, timed out, or the member failed: nothing held.
            let _ = conn.lease_revoke(session.id).await;
            return false;
        };
        let acquired = self.sessions.clock.now_us();
        let key = String::from_utf8_lossy(granted.key()).into_owned();
        let revision = granted.header().map_or(0, |h| h.revision());
        let hold_for = if rng.random_range(0..100) < LONG_HOLDS_PERCENT {
            Duration::from_millis(rng.random_range(4000..8000))
        } else {
            Duration::from_millis(rng.random_range(100..1500))
        };
        let crash = rng.random_range(0..100) < 15;
        let until = acquired + hold_for.as_micros() as u64;
        let ended = loop {
            if !session.alive(&self.sessions.clock) {
                break HoldEnd::SessionExpired;
            }
            if self.sessions.clock.now_us() >= until {
                break if crash {
                    HoldEnd::Crashed
                } else {
                    HoldEnd::Unlocked
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let released = match ended {
            HoldEnd::SessionExpired => session.believed_until(),
            _ => self.sessions.clock.now_us(),
        };
        self.holds.push(LockHold {
            client: self.client,
            key: key.clone(),
            revision,
            acquired,
            released,
            ended,
            member: self.sessions.endpoints[member].clone(),
        });
        let id = session.id;
        drop(session);
        match ended {
            HoldEnd::Crashed => true,
            _ => {
                let unlocked = conn.unlock(key).await.is_ok();
                let _ = conn.lease_revoke(id).await;
                unlocked
            }
        }
    }
}
