//! `raftkv lock NAME [COMMAND...]` and `raftkv elect NAME [PROPOSAL] [--listen]`,
//! as etcdctl's: both hold a lease kept alive in the background, so a crashed
//! holder lets go once its lease expires.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tonic::transport::Channel;

use super::client::status_err;
use super::client::Endpoints;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::*;
use crate::proto::v3electionpb::election_client::ElectionClient;
use crate::proto::v3electionpb::*;
use crate::proto::v3lockpb::lock_client::LockClient;
use crate::proto::v3lockpb::*;

/// Seconds a holder's lease lasts without keep-alives.
const SESSION_TTL: i64 = 60;

/// Grant a session lease and keep it alive until the returned task is dropped.
async fn session(ch: Channel) -> anyhow::Result<(i64, tokio::task::JoinHandle<()>)> {
    let mut leases = LeaseClient::new(ch);
    let id = leases
        .lease_grant(LeaseGrantRequest {
            ttl: SESSION_TTL,
            id: 0,
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .id;
    let keeper = tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let Ok(replies) = leases
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        else {
            return;
        };
        let mut replies = replies.into_inner();
        loop {
            if tx.send(LeaseKeepAliveRequest { id }).await.is_err()
                || replies.next().await.is_none()
            {
                return;
            }
            tokio::time::sleep(Duration::from_secs((SESSION_TTL / 3) as u64)).await;
        }
    });
    Ok((id, keeper))
}

async fn revoke(ch: Channel, id: i64) {
    let _ = LeaseClient::new(ch)
        .lease_revoke(LeaseRevokeRequest { id })
        .await;
}

pub async fn lock(ep: &Endpoints, name: String, command: Vec<String>) -> anyhow::Result<()> {
    let ch = ep.connect().await?;
    let (lease, keeper) = session(ch.clone()).await?;
    let held = LockClient::new(ch.clone())
        .lock(LockRequest {
            name: name.into_bytes(),
            lease,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let result = if let Some((program, args)) = command.split_first() {
        // Run the command while holding the lock; its exit status is ours.
        let status = tokio::process::Command::new(program)
            .args(args)
            .env(
                "RAFTKV_LOCK_KEY",
                String::from_utf8_lossy(&held.key).as_ref(),
            )
            .status()
            .await
            .with_context(|| format!("running {program}"));
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(anyhow::anyhow!("{program} exited with {s}")),
            Err(e) => Err(e),
        }
    } else {
        println!("{}", String::from_utf8_lossy(&held.key));
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    };
    keeper.abort();
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
    let (lease, keeper) = session(ch.clone()).await?;
    let won = election
        .campaign(CampaignRequest {
            name: name.into_bytes(),
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
    let waited = tokio::signal::ctrl_c().await.context("waiting for Ctrl-C");
    keeper.abort();
    let _ = election
        .resign(ResignRequest {
            leader: Some(leader),
        })
        .await;
    revoke(ch, lease).await;
    waited
}
