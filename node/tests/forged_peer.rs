//! A forged request on the peer port (issue 16, item 3): whoever reaches the
//! peer port and knows the cluster id (every client response carries it) can
//! forward a command to the leader. A command no handler would build, such as
//! a lease grant without an id, must be refused like any bad request, never
//! applied as a storage failure that stops the state machine on every member
//! and again at each replay of the entry.
//!
//! The leader checks a forwarded write as the handler that would have built
//! it does, and apply refuses what slips through (a command already in a log).
//!
//! The request is built with the node's own peer types (`raftkv_node`), as a
//! member would build it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use raftkv_node::node::{ForwardReply, Forwarded};
use raftkv_node::proto::etcdserverpb::{LeaseGrantRequest, PutRequest};
use raftkv_node::proto::raftkvpb;
use raftkv_node::proto::raftkvpb::peer::raft_peer_client::RaftPeerClient;
use raftkv_node::proto::raftkvpb::peer::{PeerHeader, RaftPayload};
use raftkv_node::raft::{codec, Command};
use raftkv_tests::ClusterOptions;

/// Forward `cmd` to the member at `peer_url` as a stranger (member id 99).
async fn forge_forward(peer_url: &str, cluster_id: u64, cmd: Command) -> Result<ForwardReply> {
    let mut peer = RaftPeerClient::connect(peer_url.to_string()).await?;
    let payload = RaftPayload {
        header: Some(PeerHeader {
            cluster_id,
            from_id: 99,
            to_id: 0,
            epoch: 0,
            ..Default::default()
        }),
        data: codec::encode(&Forwarded::Write(cmd))?,
    };
    let reply = peer.forward(payload).await?.into_inner();
    Ok(codec::decode(&reply.data)?)
}

/// Refused as InvalidArgument: by the leader before proposing, or at apply.
fn refused_as_invalid(reply: ForwardReply, what: &str) -> Result<()> {
    let invalid = tonic::Code::InvalidArgument as i32;
    match reply {
        ForwardReply::Error { code, .. } if code == invalid => Ok(()),
        ForwardReply::Write(result) => match result.0.result {
            Some(raftkvpb::command_result::Result::Error(e)) if e.code == invalid => Ok(()),
            other => bail!("{what} was not refused as invalid: {other:?}"),
        },
        other => bail!("unexpected reply to {what}: {other:?}"),
    }
}

/// A forwarded write gets the checks a client's gets: a put without a key,
/// which no handler would propose, is refused by the leader, not written.
#[tokio::test(flavor = "multi_thread")]
async fn the_leader_checks_a_forwarded_write_as_a_handler_would() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let mut client = cluster.client().await?;
    let put = client.put("before", "1", None).await?;
    let cluster_id = put.header().context("no header")?.cluster_id();

    let keyless = Command::new(raftkvpb::command::Op::Put(PutRequest {
        key: Vec::new(),
        value: b"sneaky".to_vec(),
        ..Default::default()
    }));
    let peer_url = cluster.members()[0].peer_url();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        forge_forward(&peer_url, cluster_id, keyless),
    )
    .await
    .context("the forged forward got no answer in 10 s")??;
    refused_as_invalid(reply, "the forged put without a key")?;
    let all = client
        .get(
            vec![0u8],
            Some(etcd_client::GetOptions::new().with_from_key()),
        )
        .await?;
    let keys: Vec<&[u8]> = all.kvs().iter().map(|kv| kv.key()).collect();
    anyhow::ensure!(keys == [&b"before"[..]], "the store holds {keys:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_lease_grant_without_an_id_is_refused_and_the_cluster_keeps_serving() -> Result<()>
{
    let mut cluster = ClusterOptions::new().start(1).await?;
    let mut client = cluster.client().await?;
    let put = client.put("before", "1", None).await?;
    let cluster_id = put.header().context("no header")?.cluster_id();

    let grant = Command::new(raftkvpb::command::Op::LeaseGrant(LeaseGrantRequest {
        ttl: 60,
        id: 0,
    }));
    let (id, peer_url) = (cluster.members()[0].id, cluster.members()[0].peer_url());
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        forge_forward(&peer_url, cluster_id, grant),
    )
    .await
    .context("the forged forward got no answer in 10 s")??;
    refused_as_invalid(reply, "the forged lease grant")?;

    // The state machine still applies: a write is acknowledged and readable.
    tokio::time::timeout(Duration::from_secs(10), client.put("after", "2", None))
        .await
        .context("a write after the forged grant hung")??;
    // And after a restart: the refused entry stays in the log, applied.
    cluster.member_mut(id).stop().await?;
    cluster.restart(&[id]).await?;
    let mut client = cluster.client().await?;
    tokio::time::timeout(Duration::from_secs(10), client.put("restarted", "3", None))
        .await
        .context("a write after the restart hung")??;
    let got = client.get("after", None).await?;
    anyhow::ensure!(
        got.kvs().first().map(|kv| kv.value()) == Some(&b"2"[..]),
        "the write before the restart is gone: {:?}",
        got.kvs()
    );
    Ok(())
}
