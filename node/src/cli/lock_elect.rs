//! `raftkv lock NAME [COMMAND...]` and `raftkv elect NAME [PROPOSAL] [--listen]`,
//! as etcdctl's: both hold a lease kept alive in the background, so a crashed
//! holder lets go once its lease expires. A holder whose session is lost
//! (lease gone, keep-alives unanswered for a TTL, its key deleted) stops
//! believing it holds the lock: the command is killed and `raftkv` fails.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::client::status_err;
use super::client::Endpoints;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::*;
use crate::proto::v3electionpb::election_client::ElectionClient;
use crate::proto::v3electionpb::*;
use crate::proto::v3lockpb::lock_client::LockClient;
use crate::proto::v3lockpb::*;

/// Seconds a holder's lease lasts without keep-alives.
const SESSION_TTL: i64 = 60;

/// How often a holder checks that its key is still there.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A session lease kept alive in the background, as etcd's concurrency
/// session. It is lost, for good, once a keep-alive says the lease is gone
/// (TTL 0), or none is answered for a whole TTL (counted from the send time
/// of the last one answered, so never later than the server's own
/// deadline), or the key it holds is deleted: a holder that went on after
/// that would share the lock with the next one.
struct Session {
    id: i64,
    verdict: Arc<watch::Sender<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Grant the lease and start keeping it alive.
    async fn start(ch: Channel) -> anyhow::Result<Session> {
        let mut leases = LeaseClient::new(ch);
        let granted_from = Instant::now();
        let id = leases
            .lease_grant(LeaseGrantRequest {
                ttl: SESSION_TTL,
                id: 0,
            })
            .await
            .map_err(status_err)?
            .into_inner()
            .id;
        let verdict = Arc::new(watch::Sender::new(None));
        // The server's deadline starts no earlier than the grant was sent.
        let deadline = granted_from + Duration::from_secs(SESSION_TTL as u64);
        let keeper = tokio::spawn(keep_alive(leases, id, deadline, verdict.clone()));
        Ok(Session {
            id,
            verdict,
            tasks: vec![keeper],
        })
    }

    /// Also count the session lost once `key` is gone.
    fn guard(&mut self, ch: Channel, key: Vec<u8>) {
        let verdict = self.verdict.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut kv = KvClient::new(ch);
            loop {
                tokio::time::sleep(KEY_CHECK_EVERY).await;
                let range = RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                };
                // An error says nothing about the key: the keep-alives judge.
                if let Ok(resp) = kv.range(range).await {
                    if resp.into_inner().kvs.is_empty() {
                        let key = String::from_utf8_lossy(&key);
                        verdict.send_replace(Some(format!("its key {key} was deleted")));
                        return;
                    }
                }
            }
        }));
    }

    /// Wait until the session is lost; why.
    async fn lost(&self) -> String {
        let mut verdict = self.verdict.subscribe();
        let why = verdict
            .wait_for(Option::is_some)
            .await
            .map(|why| why.clone());
        match why {
            Ok(Some(why)) => why,
            // The sender lives in `self`: never closed while we wait.
            _ => std::future::pending().await,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Keep lease `id` alive until it is lost, moving `deadline` (when the
/// lease may be gone at the latest) with each keep-alive answered; a broken
/// stream is opened again.
async fn keep_alive(
    mut leases: LeaseClient<Channel>,
    id: i64,
    mut deadline: Instant,
    verdict: Arc<watch::Sender<Option<String>>>,
) {
    const UNANSWERED: &str = "no keep-alive was answered for the session's TTL";
    let every = Duration::from_secs((SESSION_TTL / 3) as u64);
    let why = 'session: loop {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let stream = tokio::time::timeout_at(
            deadline.into(),
            leases.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        match stream {
            Err(_) => break UNANSWERED,
            Ok(Err(_)) => {}
            Ok(Ok(replies)) => {
                let mut replies = replies.into_inner();
                loop {
                    let sent = Instant::now();
                    if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline.into(), replies.next()).await {
                        Err(_) => break 'session UNANSWERED,
                        Ok(Some(Ok(reply))) if reply.ttl > 0 => {
                            deadline = deadline.max(sent + Duration::from_secs(reply.ttl as u64));
                        }
                        Ok(Some(Ok(_))) => break 'session "its lease expired or was revoked",
                        // The stream broke: open another.
                        Ok(_) => break,
                    }
                    tokio::time::sleep(every).await;
                }
            }
        }
        if Instant::now() >= deadline {
            break UNANSWERED;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    verdict.send_replace(Some(why.to_string()));
}

async fn revoke(ch: Channel, id: i64) {
    let _ = LeaseClient::new(ch)
        .lease_revoke(LeaseRevokeRequest { id })
        .await;
}

pub async fn lock(ep: &Endpoints, name: String, command: Vec<String>) -> anyhow::Result<()> {
    let ch = ep.connect().await?;
    let mut session = Session::start(ch.clone()).await?;
    let lease = session.id;
    let held = LockClient::new(ch.clone())
        .lock(LockRequest {
            name: name.clone().into_bytes(),
            lease,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    session.guard(ch.clone(), held.key.clone());
    let result = if let Some((program, args)) = command.split_first() {
        // Run the command while holding the lock; its exit status is ours.
        let child = tokio::process::Command::new(program)
            .args(args)
            .env(
                "RAFTKV_LOCK_KEY",
                String::from_utf8_lossy(&held.key).as_ref(),
            )
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {program}"));
        match child {
            Ok(mut child) => tokio::select! {
                status = child.wait() => match status {
                    Ok(s) if s.success() => Ok(()),
                    Ok(s) => Err(anyhow::anyhow!("{program} exited with {s}")),
                    Err(e) => Err(e).with_context(|| format!("waiting for {program}")),
                },
                why = session.lost() => {
                    // It must not go on believing it holds the lock.
                    let _ = child.kill().await;
                    Err(anyhow::anyhow!("lost the lock {name} ({why}); killed {program}"))
                }
            },
            Err(e) => Err(e),
        }
    } else {
        println!("{}", String::from_utf8_lossy(&held.key));
        tokio::select! {
            waited = tokio::signal::ctrl_c() => waited.context("waiting for Ctrl-C"),
            why = session.lost() => Err(anyhow::anyhow!("lost the lock {name} ({why})")),
        }
    };
    drop(session);
    let _ = LockClient::new(ch.clone())
        .unlock(UnlockRequest { key: held.key })
        .await;
    revoke(ch, lease).await;
    result
}

pub async fn elect(
    ep: &Endpoints,
    name: String,
    proposal: Option<String>,
    listen: bool,
) -> anyhow::Result<()> {
    let ch = ep.connect().await?;
    let mut election = ElectionClient::new(ch.clone());
    if listen {
        let mut leaders = election
            .observe(LeaderRequest {
                name: name.into_bytes(),
            })
            .await
            .map_err(status_err)?
            .into_inner();
        loop {
            let next = tokio::select! {
                n = leaders.next() => n,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let Some(resp) = next else { return Ok(()) };
            if let Some(kv) = resp.map_err(status_err)?.kv {
                println!(
                    "{}\n{}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                );
            }
        }
    }
    let proposal = proposal.context("a proposal is required unless --listen is given")?;
    let mut session = Session::start(ch.clone()).await?;
    let lease = session.id;
    let won = election
        .campaign(CampaignRequest {
            name: name.clone().into_bytes(),
            lease,
            value: proposal.clone().into_bytes(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let leader = won
        .leader
        .context("campaign answered without a leader key")?;
    println!("{}\n{}", String::from_utf8_lossy(&leader.key), proposal);
    session.guard(ch.clone(), leader.key.clone());
    let waited = tokio::select! {
        waited = tokio::signal::ctrl_c() => waited.context("waiting for Ctrl-C"),
        why = session.lost() => Err(anyhow::anyhow!("lost the leadership of {name} ({why})")),
    };
    drop(session);
    let _ = election
        .resign(ResignRequest {
            leader: Some(leader),
        })
        .await;
    revoke(ch, lease).await;
    waited
}
