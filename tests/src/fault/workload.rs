//! The client side of a fault run: concurrent clients through the etcd API,
//! each recording what it did (see [`crate::fault::history`]).
//!
//! - register clients: linearizable reads, puts and compare-and-set txns on a
//!   few keys (`r/k0`..), each client talking to one member at a time;
//! - set clients: unique appends `s/<client>/<seq>`;
//! - watchers: one per member, the whole keyspace from one start revision,
//!   re-created from the last revision seen + 1 after any error;
//! - lock clients: take and release one lock on leases of their own
//!   ([`crate::fault::lock_workload`]);
//! - lease clients: one per member, keeping leases alive through it
//!   ([`crate::fault::lease_workload`]);
//! - a catch-up client: compactions while a watcher replays history
//!   ([`crate::fault::catch_up_workload`]), kept behind the watchers above.
//!
//! A client whose operation did not succeed waits a little and moves to the
//! next member, as a real client with several endpoints would. That also bounds
//! the number of unknown outcomes, which the checker pays for.

use crate::fault::catch_up_check::CatchUpRound;
use crate::fault::catch_up_workload::{CatchUpClient, WatchProgress};
use crate::fault::history::{
    value_of, Clock, Outcome, Recorder, RegisterEntry, RegisterOp, RegisterRet, SetAppend, Value,
};
use crate::fault::lease_check::LeaseLife;
use crate::fault::lease_workload::LeaseClient;
use crate::fault::lock_check::LockHold;
use crate::fault::lock_workload::{self, LockClient};
use crate::fault::session::Sessions;
use crate::fault::watch_check::{WatchEvent, WatcherLog};
use crate::grpc::connect_with;
use crate::tls::ClientTls;
use anyhow::{Context, Result};
use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many clients of each kind, and their limits.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub register_clients: usize,
    pub keys: usize,
    pub set_clients: usize,
    pub watchers: usize,
    pub lock_clients: usize,
    pub lease_clients: usize,
    pub catch_up_clients: usize,
    /// A request without an answer after this is recorded as unknown.
    pub op_timeout: Duration,
    /// Pause after an operation that did not succeed, before the next member.
    pub backoff: Duration,
    /// Serializable (local, possibly stale) register reads. Only for the
    /// negative control that shows the checker catches stale reads: such reads
    /// are not linearizable and never go into a real campaign's history.
    pub serializable_reads: bool,
    /// Connect over TLS with these files (a TLS cluster's root client).
    pub tls: Option<ClientTls>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            register_clients: 4,
            keys: 4,
            set_clients: 2,
            watchers: 3,
            lock_clients: 3,
            lease_clients: 3,
            catch_up_clients: 1,
            op_timeout: Duration::from_secs(3),
            backoff: Duration::from_millis(400),
            serializable_reads: false,
            tls: None,
        }
    }
}

/// Running clients; see the module docs.
pub struct Workload {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<()>>,
    pub register: Recorder<RegisterEntry>,
    pub set: Recorder<SetAppend>,
    pub locks: Recorder<LockHold>,
    pub leases: Recorder<LeaseLife>,
    pub catch_up: Recorder<CatchUpRound>,
    watchers: Vec<JoinHandle<WatcherLog>>,
    /// The revision watchers must reach before they stop.
    watch_target: watch::Sender<Option<i64>>,
}

impl Workload {
    /// Start every client against `endpoints`; watchers from `start_revision`.
    pub fn start(
        endpoints: Vec<String>,
        config: &WorkloadConfig,
        seed: u64,
        clock: Clock,
        start_revision: i64,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let register = Recorder::default();
        let set = Recorder::default();
        let locks = Recorder::default();
        let leases = Recorder::default();
        let catch_up = Recorder::default();
        let progress = WatchProgress::default();
        let (watch_target, target_rx) = watch::channel(None);
        let mut writers = Vec::new();
        for client in 0..config.register_clients {
            writers.push(tokio::spawn(register_client(
                client,
                endpoints.clone(),
                config.clone(),
                seed.wrapping_mul(1000).wrapping_add(client as u64),
                clock,
                stop.clone(),
                register.clone(),
            )));
        }
        for client in 0..config.set_clients {
            writers.push(tokio::spawn(set_client(
                client,
                endpoints.clone(),
                config.clone(),
                stop.clone(),
                set.clone(),
            )));
        }
        let sessions = |keep_alive_every| Sessions {
            endpoints: endpoints.clone(),
            tls: config.tls.clone(),
            clock,
            keep_alive_every,
        };
        for client in 0..config.lock_clients {
            let lock_client = LockClient {
                client,
                sessions: sessions(lock_workload::KEEP_ALIVE_EVERY),
                backoff: config.backoff,
                seed: seed.wrapping_mul(1000).wrapping_add(500 + client as u64),
                stop: stop.clone(),
                holds: locks.clone(),
            };
            writers.push(tokio::spawn(lock_client.run()));
        }
        for client in 0..config.lease_clients {
            let lease_client = LeaseClient {
                client,
                // Often, so the last renewal a client got is close to the last
                // one the leader gave.
                sessions: sessions(Duration::from_millis(100)),
                backoff: config.backoff,
                seed: seed.wrapping_mul(1000).wrapping_add(600 + client as u64),
                stop: stop.clone(),
                lives: leases.clone(),
            };
            writers.push(tokio::spawn(lease_client.run()));
        }
        let watchers = (0..config.watchers)
            .map(|w| {
                tokio::spawn(watcher(
                    w,
                    endpoints.clone(),
                    config.clone(),
                    clock,
                    start_revision,
                    (target_rx.clone(), progress.track(start_revision - 1)),
                ))
            })
            .collect();
        for _ in 0..config.catch_up_clients {
            let client = CatchUpClient {
                endpoints: endpoints.clone(),
                tls: config.tls.clone(),
                op_timeout: config.op_timeout,
                progress: progress.clone(),
                start_revision,
                stop: stop.clone(),
                rounds: catch_up.clone(),
            };
            writers.push(tokio::spawn(client.run()));
        }
        Workload {
            stop,
            writers,
            register,
            set,
            locks,
            leases,
            catch_up,
            watchers,
            watch_target,
        }
    }

    /// Stop the register and set clients (each finishes its operation in flight).
    pub async fn stop_writers(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.writers.drain(..) {
            task.await.context("a workload client panicked")?;
        }
        Ok(())
    }

    /// Let the watchers run until they have seen `final_revision` (or `timeout`
    /// passes), and return what each saw.
    pub async fn finish_watchers(
        self,
        final_revision: i64,
        timeout: Duration,
    ) -> Result<Vec<WatcherLog>> {
        self.watch_target.send_replace(Some(final_revision));
        let mut logs = Vec::new();
        for task in self.watchers {
            let abort = task.abort_handle();
            match tokio::time::timeout(timeout, task).await {
                Ok(log) => logs.push(log.context("a watcher panicked")?),
                Err(_) => {
                    abort.abort();
                    anyhow::bail!(
                        "a watcher did not reach revision {final_revision} within {timeout:?}"
                    );
                }
            }
        }
        Ok(logs)
    }
}

async fn client_for(endpoint: &str, config: &WorkloadConfig) -> Result<Client> {
    connect_with(
        &[endpoint.to_string()],
        config.tls.as_ref(),
        config.op_timeout,
    )
    .await
}

/// Whether an error certainly means the request never reached a server.
fn certainly_not_sent(err: &etcd_client::Error) -> bool {
    let text = format!("{err:?}");
    text.contains("Connection refused") || text.contains("tcp connect error")
}

async fn register_client(
    client: usize,
    endpoints: Vec<String>,
    config: WorkloadConfig,
    seed: u64,
    clock: Clock,
    stop: Arc<AtomicBool>,
    history: Recorder<RegisterEntry>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut member = client % endpoints.len();
    let mut conn = client_for(&endpoints[member], &config).await.ok();
    let mut seq: u32 = 0;
    // The last value this client saw per key: what its compare-and-sets expect.
    let mut last_seen: Vec<Option<Value>> = vec![None; config.keys];
    while !stop.load(Ordering::SeqCst) {
        let k = rng.random_range(0..config.keys);
        let key = format!("r/k{k}");
        let op = match rng.random_range(0..10) {
            0..4 => RegisterOp::Read,
            4..7 => {
                seq += 1;
                RegisterOp::Write(value_of(client, seq))
            }
            _ => {
                seq += 1;
                let expect = last_seen[k].unwrap_or(value_of(client, 0));
                RegisterOp::Cas {
                    expect,
                    new: value_of(client, seq),
                }
            }
        };
        let invoke = clock.now_us();
        let result = match conn.as_mut() {
            Some(c) => tokio::time::timeout(
                config.op_timeout + Duration::from_secs(1),
                register_op(c, &key, op, config.serializable_reads),
            )
            .await
            .unwrap_or(Err(Outcome::Unknown)),
            None => Err(Outcome::Failed),
        };
        let complete = clock.now_us();
        let (outcome, revision) = match result {
            Ok((ret, revision)) => {
                if let RegisterRet::Read(v) = ret {
                    last_seen[k] = v;
                }
                (Outcome::Ok(ret), Some(revision))
            }
            Err(outcome) => (outcome, None),
        };
        let succeeded = matches!(outcome, Outcome::Ok(_));
        history.push(RegisterEntry {
            client,
            key,
            op,
            invoke,
            complete,
            outcome,
            revision: revision.filter(|_| !matches!(op, RegisterOp::Read)),
            member: endpoints[member].clone(),
        });
        if !succeeded {
            tokio::time::sleep(config.backoff).await;
            member = (member + 1) % endpoints.len();
            conn = client_for(&endpoints[member], &config).await.ok();
        }
    }
}

/// One register operation: its answer and header revision, or how it ended.
async fn register_op(
    client: &mut Client,
    key: &str,
    op: RegisterOp,
    serializable: bool,
) -> std::result::Result<(RegisterRet, i64), Outcome<RegisterRet>> {
    let unknown_unless_unsent = |err: etcd_client::Error| {
        if certainly_not_sent(&err) {
            Outcome::Failed
        } else {
            Outcome::Unknown
        }
    };
    match op {
        RegisterOp::Read => {
            let options = serializable.then(|| GetOptions::new().with_serializable());
            let resp = client
                .get(key, options)
                .await
                .map_err(unknown_unless_unsent)?;
            let revision = resp.header().map_or(0, |h| h.revision());
            let value = match resp.kvs() {
                [] => None,
                [kv] => Some(
                    kv.value_str()
                        .ok()
                        .and_then(|s| s.parse::<Value>().ok())
                        .unwrap_or(Value::MAX),
                ),
                _ => Some(Value::MAX),
            };
            Ok((RegisterRet::Read(value), revision))
        }
        RegisterOp::Write(v) => {
            let resp = client
                .put(key, v.to_string(), None)
                .await
                .map_err(unknown_unless_unsent)?;
            Ok((
                RegisterRet::Written,
                resp.header().map_or(0, |h| h.revision()),
            ))
        }
        RegisterOp::Cas { expect, new } => {
            let txn = Txn::new()
                .when([Compare::value(key, CompareOp::Equal, expect.to_string())])
                .and_then([TxnOp::put(key, new.to_string(), None)]);
            let resp = client.txn(txn).await.map_err(unknown_unless_unsent)?;
            Ok((
                RegisterRet::Cas(resp.succeeded()),
                resp.header().map_or(0, |h| h.revision()),
            ))
        }
    }
}

async fn set_client(
    client: usize,
    endpoints: Vec<String>,
    config: WorkloadConfig,
    stop: Arc<AtomicBool>,
    history: Recorder<SetAppend>,
) {
    let mut member = (client + 1) % endpoints.len();
    let mut conn = client_for(&endpoints[member], &config).await.ok();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = format!("s/{client}/{seq:08}");
        let result = match conn.as_mut() {
            Some(c) => tokio::time::timeout(
                config.op_timeout + Duration::from_secs(1),
                c.put(key.clone(), key.clone(), None),
            )
            .await
            .map_err(|_| Outcome::Unknown)
            .and_then(|r| {
                r.map_err(|err| {
                    if certainly_not_sent(&err) {
                        Outcome::Failed
                    } else {
                        Outcome::Unknown
                    }
                })
            }),
            None => Err(Outcome::Failed),
        };
        let (outcome, revision) = match result {
            Ok(resp) => (Outcome::Ok(()), resp.header().map(|h| h.revision())),
            Err(outcome) => (outcome, None),
        };
        let succeeded = outcome == Outcome::Ok(());
        history.push(SetAppend {
            key,
            outcome,
            revision,
        });
        if !succeeded {
            tokio::time::sleep(config.backoff).await;
            member = (member + 1) % endpoints.len();
            conn = client_for(&endpoints[member], &config).await.ok();
        }
    }
}

/// Watch everything from `start_revision` until `target` is set and reached,
/// keeping `seen` at the last revision received (compactions stay behind it).
async fn watcher(
    w: usize,
    endpoints: Vec<String>,
    config: WorkloadConfig,
    clock: Clock,
    start_revision: i64,
    (mut target, seen): (watch::Receiver<Option<i64>>, Arc<AtomicI64>),
) -> WatcherLog {
    let mut member = w % endpoints.len();
    let mut log = WatcherLog {
        member: endpoints[member].clone(),
        start_revision,
        ..WatcherLog::default()
    };
    let mut next = start_revision;
    let mut first = true;
    loop {
        if matches!(*target.borrow(), Some(t) if next > t) {
            return log;
        }
        if !first {
            log.reconnects += 1;
            tokio::time::sleep(config.backoff).await;
        }
        first = false;
        let stream = async {
            let mut c = client_for(&endpoints[member], &config).await?;
            let options = WatchOptions::new()
                .with_all_keys()
                .with_start_revision(next);
            anyhow::Ok(c.watch("", Some(options)).await?)
        };
        let mut stream = match tokio::time::timeout(config.op_timeout, stream).await {
            Ok(Ok(s)) => s,
            _ => {
                member = (member + 1) % endpoints.len();
                continue;
            }
        };
        loop {
            if matches!(*target.borrow(), Some(t) if next > t) {
                return log;
            }
            let message = tokio::select! {
                m = stream.message() => m,
                _ = target.changed() => continue,
            };
            match message {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        break;
                    }
                    let seen_at = clock.now_us();
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        log.seen_at.push(seen_at);
                        let revision = kv.mod_revision();
                        log.events.push(WatchEvent {
                            revision,
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: match ev.event_type() {
                                EventType::Put => {
                                    Some(String::from_utf8_lossy(kv.value()).into_owned())
                                }
                                EventType::Delete => None,
                            },
                        });
                        next = next.max(revision + 1);
                    }
                    seen.store(next - 1, Ordering::SeqCst);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Reconnect to the same member; it moves on only when it cannot connect.
    }
}
