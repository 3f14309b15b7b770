//! The lease workload: one client per member keeps leases alive through that
//! member only, each lease holding one key (`ls/<client>/<round>`), and lets
//! each go after 15-40 s by revoking it, or loses it when its keep-alives stop
//! being answered. It records how long it believed each lease lived, for
//! [`crate::fault::lease_check`]: the key must not be deleted before then.
//!
//! Unlike the lock workload, this needs no contention to see a lease revoked
//! too early: every fault that cuts a leader off finds one of these clients
//! pinned to it, keeping a lease alive there (lives outlast most faults, so it
//! is usually mid-life when the fault comes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::PutOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fault::history::Recorder;
use crate::fault::lease_check::LeaseLife;
use crate::fault::session::Sessions;

/// Where the lease keys live.
pub const LEASE_PREFIX: &str = "ls/";

/// Lease TTL in seconds.
const TTL: i64 = 3;

/// One lease client's settings; it stays with member `client % members`.
pub struct LeaseClient {
    pub client: usize,
    pub sessions: Sessions,
    pub backoff: Duration,
    pub seed: u64,
    pub stop: Arc<AtomicBool>,
    pub lives: Recorder<LeaseLife>,
}

impl LeaseClient {
    pub async fn run(self) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let member = self.client % self.sessions.endpoints.len();
        let mut round = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            round += 1;
            if !self.round(&mut rng, member, round).await {
                tokio::time::sleep(self.backoff).await;
            }
        }
    }

    /// One lease: grant, attach a key, keep alive a while, revoke. False when
    /// something failed before the lease was in use.
    async fn round(&self, rng: &mut StdRng, member: usize, round: u64) -> bool {
        let clock = self.sessions.clock;
        let Some(mut conn) = self.sessions.connect(member, Duration::from_secs(3)).await else {
            return false;
        };
        let Some(session) = self.sessions.grant(&mut conn, member, TTL).await else {
            return false;
        };
        let key = format!("{LEASE_PREFIX}{}/{round:06}", self.client);
        let options = PutOptions::new().with_lease(session.id);
        if conn.put(key.clone(), "", Some(options)).await.is_err() {
            let _ = conn.lease_revoke(session.id).await;
            return false;
        }
        let granted = clock.now_us();
        let until = granted + rng.random_range(15_000_000..40_000_000);
        while session.alive(&clock) && clock.now_us() < until && !self.stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Decided before the revoke is sent: the key may go from here on.
        let revoked = clock.now_us();
        self.lives.push(LeaseLife {
            client: self.client,
            key,
            lease: session.id,
            granted,
            believed_until: session.believed_until(),
            revoked,
            member: self.sessions.endpoints[member].clone(),
        });
        let id = session.id;
        drop(session);
        let _ = conn.lease_revoke(id).await;
        true
    }
}
