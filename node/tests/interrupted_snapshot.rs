//! A snapshot transfer cut off mid-stream leaves no file behind (issue 17,
//! finding 8). A leader drops its InstallSnapshot call whenever replication to
//! that follower is closed (it stepped down, the follower was removed), and the
//! follower's half-written `incoming-*.part` must not wait for a restart to go:
//! a flapping link would fill the disk with them.
//!
//! The transfer is sent with the node's own peer types (`raftkv_node`), as a
//! leader would send it, and never finished. (The handler sees this drop as an
//! error on its request stream; a drop while it installs, after the last
//! chunk, ends it at an await instead, which the file's guard also covers.)

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use raftkv_node::proto::raftkvpb::peer::raft_peer_client::RaftPeerClient;
use raftkv_node::proto::raftkvpb::peer::{PeerHeader, SnapshotChunk};
use raftkv_node::raft::{codec, SnapshotMeta, Vote};
use raftkv_tests::wait::until;
use raftkv_tests::ClusterOptions;

/// The incoming snapshot files in `dir`.
fn incoming(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("incoming-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_transfer_dropped_mid_stream_leaves_no_file() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let mut client = cluster.client().await?;
    let put = client.put("k", "v", None).await?;
    let cluster_id = put.header().context("no header")?.cluster_id();
    let member = &cluster.members()[0];
    let snapshots = member.data_dir().join("snapshots");

    let (chunks, stream) = tokio::sync::mpsc::channel::<SnapshotChunk>(1);
    chunks
        .send(SnapshotChunk {
            header: Some(PeerHeader {
                cluster_id,
                from_id: 99,
                ..Default::default()
            }),
            meta: codec::encode(&SnapshotMeta::default())?,
            vote: codec::encode(&Vote::new(1, 99))?,
            data: vec![7; 64 * 1024],
            done: false,
        })
        .await?;
    let mut peer = RaftPeerClient::connect(member.peer_url()).await?;
    let transfer = tokio::spawn(async move {
        peer.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(stream))
            .await
    });

    until(
        Duration::from_secs(10),
        "the member to write an incoming-*.part file",
        || async { Ok((!incoming(&snapshots).is_empty()).then_some(())) },
    )
    .await?;
    // The sender gives up as a leader's replication does: the call is dropped
    // while its request stream is still open (`chunks` lives on).
    transfer.abort();
    let _ = transfer.await;

    until(
        Duration::from_secs(10),
        format!(
            "the dropped transfer's file to leave {}",
            snapshots.display()
        ),
        || async {
            match incoming(&snapshots) {
                left if left.is_empty() => Ok(Some(())),
                left => bail!("still there: {left:?}"),
            }
        },
    )
    .await?;
    drop(chunks);
    // The member is fine and serves on.
    client.put("after", "1", None).await?;
    Ok(())
}
