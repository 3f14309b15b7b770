//! A client's lease, as the lock and lease workloads keep it: granted through
//! one member, kept alive through that same member (as a client given a
//! single endpoint does), and believed alive until the send time of the last
//! keep-alive answered with a TTL, plus the TTL. The server renewed no
//! earlier than that send, so a correct cluster never revokes the lease
//! before the client's reckoning runs out; once it has run out the session is
//! over for good (as etcd's clientv3 session: a later answer does not bring
//! it back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;

use crate::fault::history::Clock;
use crate::grpc::connect_with;
use crate::tls::ClientTls;

/// Where and how sessions are kept.
#[derive(Clone)]
pub struct Sessions {
    pub endpoints: Vec<String>,
    pub tls: Option<ClientTls>,
    pub clock: Clock,
    /// How often a session sends a keep-alive.
    pub keep_alive_every: Duration,
}

/// A lease and the client's reckoning of its deadline.
pub struct Session {
    pub id: i64,
    /// Microseconds on the run's clock until which the client believes the
    /// lease lives; only ever moves forward while the session is alive.
    pub deadline: Arc<AtomicU64>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    pub fn alive(&self, clock: &Clock) -> bool {
        clock.now_us() <= self.believed_until()
    }

    pub fn believed_until(&self) -> u64 {
        self.deadline.load(Ordering::SeqCst)
    }

    /// Stop sending keep-alives (a paused or crashed client).
    pub fn stall(&self) {
        self.keeper.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Sessions {
    pub async fn connect(&self, member: usize, timeout: Duration) -> Option<Client> {
        let endpoint = std::slice::from_ref(&self.endpoints[member]);
        connect_with(endpoint, self.tls.as_ref(), timeout)
            .await
            .ok()
    }

    /// Grant a lease of `ttl` seconds through `conn` (connected to `member`)
    /// and start keeping it alive.
    pub async fn grant(&self, conn: &mut Client, member: usize, ttl: i64) -> Option<Session> {
        let invoked = self.clock.now_us();
        let id = conn.lease_grant(ttl, None).await.ok()?.id();
        // The leader starts the lease's deadline no earlier than the grant
        // was invoked.
        let deadline = Arc::new(AtomicU64::new(invoked + seconds_us(ttl)));
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
                        deadline.fetch_max(sent + seconds_us(ack.ttl()), Ordering::SeqCst);
                        let waited = Duration::from_micros(self.clock.now_us() - sent);
                        tokio::time::sleep(self.keep_alive_every.saturating_sub(waited)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn seconds_us(ttl: i64) -> u64 {
    ttl.max(0) as u64 * 1_000_000
}
