//! `raftkv lease grant|revoke|keep-alive|ttl`, printing what etcdctl prints.
//! Lease ids are hexadecimal, as etcdctl shows them.

use anyhow::Context;
use futures::StreamExt;

use super::client::parse_lease_id;
use super::client::status_err;
use super::client::Endpoints;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::*;

#[derive(clap::Subcommand, Debug)]
pub enum LeaseCmd {
    /// Create a lease with a TTL in seconds.
    Grant { ttl: i64 },
    /// Revoke a lease, deleting its keys.
    Revoke { id: String },
    /// Keep a lease alive (until Ctrl-C, or once with --once).
    KeepAlive {
        id: String,
        #[arg(long)]
        once: bool,
    },
    /// Remaining TTL of a lease, and with --keys its keys.
    Ttl {
        id: String,
        #[arg(long)]
        keys: bool,
    },
}

pub async fn run(ep: &Endpoints, cmd: LeaseCmd) -> anyhow::Result<()> {
    let mut leases = LeaseClient::new(ep.connect().await?);
    match cmd {
        LeaseCmd::Grant { ttl } => {
            let resp = leases
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("lease {:x} granted with TTL({}s)", resp.id, resp.ttl);
        }
        LeaseCmd::Revoke { id } => {
            let id = parse_lease_id(&id)?;
            leases
                .lease_revoke(LeaseRevokeRequest { id })
                .await
                .map_err(status_err)?;
            println!("lease {id:x} revoked");
        }
        LeaseCmd::KeepAlive { id, once } => {
            let id = parse_lease_id(&id)?;
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut replies = leases
                .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(status_err)?
                .into_inner();
            loop {
                tx.send(LeaseKeepAliveRequest { id })
                    .await
                    .context("keep-alive stream closed")?;
                let reply = replies
                    .next()
                    .await
                    .context("keep-alive stream ended")?
                    .map_err(status_err)?;
                if reply.ttl <= 0 {
                    anyhow::bail!("lease {id:x} expired or revoked");
                }
                println!("lease {id:x} keepalived with TTL({})", reply.ttl);
                if once {
                    return Ok(());
                }
                // Renew at a third of the TTL, as etcd's client does.
                tokio::time::sleep(std::time::Duration::from_millis(
                    (reply.ttl * 1000 / 3) as u64,
                ))
                .await;
            }
        }
        LeaseCmd::Ttl { id, keys } => {
            let id = parse_lease_id(&id)?;
            let resp = leases
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                .await
                .map_err(status_err)?
                .into_inner();
            if resp.ttl == -1 {
                println!("lease {id:x} already expired");
            } else if keys {
                let names: Vec<String> = resp
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                println!(
                    "lease {id:x} granted with TTL({}s), remaining({}s), attached keys([{}])",
                    resp.granted_ttl,
                    resp.ttl,
                    names.join(" ")
                );
            } else {
                println!(
                    "lease {id:x} granted with TTL({}s), remaining({}s)",
                    resp.granted_ttl, resp.ttl
                );
            }
        }
    }
    Ok(())
}
