//! A forged epoch on the peer port (issue 16, item 2): the cluster id is in
//! every client response header, so anyone who reaches a peer port can send a
//! peer request claiming a newer epoch of the cluster. Such a claim fenced the
//! member that read it, for good. A claim may only fence once the member it
//! names, reached at the peer URL the membership records, confirms it; a
//! real solo recovery still fences the members it left behind
//! (tests/tests/recovery.rs).
//!
//! The requests are built with the node's own peer types (`raftkv_node`), as a
//! member would build them.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use raftkv_node::proto::raftkvpb::peer::raft_peer_client::RaftPeerClient;
use raftkv_node::proto::raftkvpb::peer::{PeerHeader, RaftPayload};
use raftkv_node::raft::codec;
use raftkv_tests::ClusterOptions;

/// A ClusterInfo call to `peer_url` that says it comes from member `from_id`
/// at epoch `epoch`.
async fn claim_epoch(peer_url: &str, cluster_id: u64, from_id: u64, epoch: u64) -> Result<()> {
    let mut peer = RaftPeerClient::connect(peer_url.to_string()).await?;
    let payload = RaftPayload {
        header: Some(PeerHeader {
            cluster_id,
            from_id,
            to_id: 0,
            epoch,
            ..Default::default()
        }),
        data: codec::encode(&())?,
    };
    let refused = peer.cluster_info(payload).await;
    ensure!(
        refused.is_err(),
        "a peer request with a newer epoch was answered: {refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_newer_epoch_does_not_fence_a_member() -> Result<()> {
    let cluster = ClusterOptions::new().start(3).await?;
    let mut client = cluster.client().await?;
    let put = client.put("before", "1", None).await?;
    let cluster_id = put.header().context("no header")?.cluster_id();

    let target = &cluster.members()[0];
    let other = &cluster.members()[1];
    let other_id = other
        .status()
        .await?
        .header()
        .context("no header")?
        .member_id();
    // A stranger, and a stranger pretending to be a member.
    claim_epoch(&target.peer_url(), cluster_id, 99, 1_000).await?;
    claim_epoch(&target.peer_url(), cluster_id, other_id, 1_000).await?;

    // Give a fence (or the check that prevents it) time to happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut on_target = target.client().await?;
    tokio::time::timeout(Duration::from_secs(10), on_target.put("after", "2", None))
        .await
        .context("a write through the member that got the claims hung")?
        .with_context(|| {
            format!(
                "a write through the member that got the claims failed; its log:\n{}",
                target.log_tail(20)
            )
        })?;
    let got = on_target.get("after", None).await?;
    ensure!(
        got.kvs().first().map(|kv| kv.value()) == Some(&b"2"[..]),
        "the write is not readable on the member that got the claims: {:?}",
        got.kvs()
    );
    let log = target.log_tail(200);
    ensure!(
        !log.contains("fencing this member"),
        "the member fenced itself; its log:\n{}",
        target.log_tail(20)
    );
    ensure!(
        log.contains("ignored a peer request claiming a newer epoch"),
        "the member did not say it ignored the claims; its log:\n{}",
        target.log_tail(20)
    );
    Ok(())
}
