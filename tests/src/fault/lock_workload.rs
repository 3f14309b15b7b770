//! The lock workload: clients take one etcd lock (v3lock `Lock`/`Unlock`) on
//! leases of their own, hold it a while, and let it go: by Unlock, or by
//! "crashing" (stopping their keep-alives and walking away, so the lock passes
//! on when the lease expires). Each records every grant and how long it
//! believed it held the lock, for [`crate::fault::lock_check`].
//!
//! A client believes its lease lives until the send time of the last
//! keep-alive answered with a TTL, plus the TTL; once that passes, the session
//! is over for good (as etcd's clientv3 session: a later answer does not bring
//! it back). A session keeps its lease alive through the one member it began
//! on, as a client given a single endpoint does: a client pinned to a leader
//! cut off from the others is the one an old leader's renewals would mislead.
//!
//! Some rounds are made to go wrong on purpose: a long hold (longer than the
//! lease TTL, so waiters behind it outlive their own leases when they stall),
//! and a stalled waiter, which stops its keep-alives while its Lock waits (a
//! paused process): its key goes when its lease runs out, and the server must
//! then answer "session expired", never grant it the lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LockOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fault::history::{Clock, Recorder};
use crate::fault::lock_check::{HoldEnd, LockHold};
use crate::grpc::connect_with;
use crate::tls::ClientTls;

/// The lock every client contends for; its keys live under `LOCK_NAME/`.
pub const LOCK_NAME: &str = "lk";

/// Session lease TTL in seconds: short, so expiries happen within a fault's
/// hold, and above the members' minimum (1.5 election timeouts).
const SESSION_TTL: i64 = 3;

/// How often a session sends a keep-alive: a sixth of the TTL (etcd's client
/// sends one every third), so the last renewal a client gets from a leader
/// is close to the last one that leader gave.
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);

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
    pub endpoints: Vec<String>,
    pub tls: Option<ClientTls>,
    pub backoff: Duration,
    pub seed: u64,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
    pub holds: Recorder<LockHold>,
}

/// A lease and the client's reckoning of its deadline.
struct Session {
    id: i64,
    /// Microseconds on the run's clock until which the client believes the
    /// lease lives; only ever moves forward while the session is alive.
    deadline: Arc<AtomicU64>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    fn alive(&self, clock: &Clock) -> bool {
        clock.now_us() <= self.deadline.load(Ordering::SeqCst)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl LockClient {
    /// Take, hold and release the lock until told to stop.
    pub async fn run(self) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut member = self.client % self.endpoints.len();
        while !self.stop.load(Ordering::SeqCst) {
            if !self.round(&mut rng, member).await {
                tokio::time::sleep(self.backoff).await;
                member = (member + 1) % self.endpoints.len();
            }
        }
    }

    async fn connect(&self, member: usize, timeout: Duration) -> Option<Client> {
        let endpoint = std::slice::from_ref(&self.endpoints[member]);
        connect_with(endpoint, self.tls.as_ref(), timeout)
            .await
            .ok()
    }

    /// One session: grant, lock, hold, release. False when something failed
    /// and the client should move to another member.
    async fn round(&self, rng: &mut StdRng, member: usize) -> bool {
        let Some(mut conn) = self.connect(member, LOCK_WAIT).await else {
            return false;
        };
        let Some(session) = self.grant(&mut conn, member).await else {
            return false;
        };
        if rng.random_range(0..100) < STALLED_WAITERS_PERCENT {
            session.keeper.abort();
        }
        let granted = conn
            .lock(LOCK_NAME, Some(LockOptions::new().with_lease(session.id)))
            .await;
        let Ok(granted) = granted else {
            // Session expired, timed out, or the member failed: nothing held.
            let _ = conn.lease_revoke(session.id).await;
            return false;
        };
        let acquired = self.clock.now_us();
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
            if !session.alive(&self.clock) {
                break HoldEnd::SessionExpired;
            }
            if self.clock.now_us() >= until {
                break if crash {
                    HoldEnd::Crashed
                } else {
                    HoldEnd::Unlocked
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let released = match ended {
            HoldEnd::SessionExpired => session.deadline.load(Ordering::SeqCst),
            _ => self.clock.now_us(),
        };
        self.holds.push(LockHold {
            client: self.client,
            key: key.clone(),
            revision,
            acquired,
            released,
            ended,
            member: self.endpoints[member].clone(),
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

    /// Grant a lease and start keeping it alive.
    async fn grant(&self, conn: &mut Client, member: usize) -> Option<Session> {
        let invoked = self.clock.now_us();
        let id = conn.lease_grant(SESSION_TTL, None).await.ok()?.id();
        // The leader starts the lease's deadline no earlier than the grant
        // was invoked.
        let deadline = Arc::new(AtomicU64::new(invoked + ttl_us()));
        let keeper = tokio::spawn(self.clone().keep_alive(id, member, deadline.clone()));
        Some(Session {
            id,
            deadline,
            keeper,
        })
    }

    /// Keep lease `id` alive through `member`, moving `deadline` forward with
    /// every answered keep-alive, until the session is over.
    async fn keep_alive(self, id: i64, member: usize, deadline: Arc<AtomicU64>) {
        let alive = || self.clock.now_us() <= deadline.load(Ordering::SeqCst);
        while alive() {
            if let Some(mut conn) = self.connect(member, Duration::from_secs(1)).await {
                if let Ok((mut keeper, mut acks)) = conn.lease_keep_alive(id).await {
                    loop {
                        let sent = self.clock.now_us();
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                        let answer =
                            tokio::time::timeout(Duration::from_secs(1), acks.message()).await;
                        let Ok(Ok(Some(ack))) = answer else { break };
                        if !alive() {
                            return;
                        }
                        if ack.ttl() <= 0 {
                            // The lease is gone: the session is over now.
                            deadline.store(self.clock.now_us(), Ordering::SeqCst);
                            return;
                        }
                        let ttl = ack.ttl() as u64 * 1_000_000;
                        deadline.fetch_max(sent + ttl, Ordering::SeqCst);
                        let waited = Duration::from_micros(self.clock.now_us() - sent);
                        tokio::time::sleep(KEEP_ALIVE_EVERY.saturating_sub(waited)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn ttl_us() -> u64 {
    SESSION_TTL as u64 * 1_000_000
}
