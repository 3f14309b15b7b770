//! Watch through the etcd-client crate against real members: live events, replay
//! from a revision with prev_kv, filters, cancel, compaction, and a client that
//! stops reading its stream while writes go on (it must not stall the member).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::{Client, EventType, WatchFilterType, WatchOptions, WatchStream};
use raftkv_tests::kv::revision;
use raftkv_tests::ClusterOptions;

/// Read responses until `n` events arrived (or fail after a deadline).
async fn next_events(
    stream: &mut WatchStream,
    n: usize,
) -> Result<Vec<(EventType, String, String, Option<String>, i64)>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        let resp = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("waited for {n} events, got {out:?}"))??
            .context("watch stream ended")?;
        ensure!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
        for e in resp.events() {
            let kv = e.kv().context("event without kv")?;
            out.push((
                e.event_type(),
                kv.key_str()?.to_string(),
                kv.value_str()?.to_string(),
                e.prev_kv()
                    .map(|p| p.value_str().unwrap_or_default().to_string()),
                kv.mod_revision(),
            ));
        }
    }
    Ok(out)
}

async fn created(stream: &mut WatchStream) -> Result<i64> {
    let resp = stream.message().await?.context("no create response")?;
    ensure!(resp.created(), "first response is not 'created': {resp:?}");
    Ok(resp.watch_id())
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_live_replay_filters_cancel_and_compaction() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let leader = cluster.wait_leader().await?;
    let follower = cluster
        .live_ids()
        .into_iter()
        .find(|id| *id != leader)
        .context("no follower")?;
    let mut writer = cluster.client().await?;
    let mut watcher: Client = cluster.member(follower).client().await?;

    let first = revision(writer.put("w/a", "1", None).await?.header())?;
    writer.put("w/a", "2", None).await?;
    writer.delete("w/a", None).await?;

    // Replay from the first revision with prev_kv, on a follower, then live events.
    let mut replay = watcher
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(first)
                    .with_prev_key(),
            ),
        )
        .await?;
    created(&mut replay).await?;
    writer.put("w/b", "3", None).await?;
    let events = next_events(&mut replay, 4).await?;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.0, e.1.as_str(), e.2.as_str(), e.3.as_deref()))
        .collect();
    ensure!(
        kinds
            == vec![
                (EventType::Put, "w/a", "1", None),
                (EventType::Put, "w/a", "2", Some("1")),
                (EventType::Delete, "w/a", "", Some("2")),
                (EventType::Put, "w/b", "3", None),
            ],
        "events {events:?}"
    );
    let revs: Vec<i64> = events.iter().map(|e| e.4).collect();
    ensure!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revisions not increasing: {revs:?}"
    );

    // Filters: no deletes; and cancel.
    let mut puts_only = watcher
        .watch(
            "w/c",
            Some(WatchOptions::new().with_filters([WatchFilterType::NoDelete])),
        )
        .await?;
    let id = created(&mut puts_only).await?;
    writer.put("w/c", "x", None).await?;
    writer.delete("w/c", None).await?;
    writer.put("w/c", "y", None).await?;
    let seen = next_events(&mut puts_only, 2).await?;
    ensure!(
        seen.iter().all(|e| e.0 == EventType::Put),
        "a delete passed the filter: {seen:?}"
    );
    puts_only.cancel(id).await?;
    let canceled = puts_only.message().await?.context("no cancel response")?;
    ensure!(
        canceled.canceled() && canceled.watch_id() == id,
        "cancel answered {canceled:?}"
    );

    // Compaction: a watch from before the compacted revision is canceled with it.
    let now = revision(writer.put("w/d", "z", None).await?.header())?;
    writer.compact(now, None).await?;
    // Compact returns once the leader applied it; wait until the watcher's
    // member has too (a serializable read there of a compacted revision fails).
    let local = watcher.clone();
    raftkv_tests::wait::until(
        raftkv_tests::wait::CONVERGE_TIMEOUT,
        "the watcher's member applying the compaction",
        || {
            let mut local = local.clone();
            async move {
                let opts = etcd_client::GetOptions::new()
                    .with_revision(first)
                    .with_serializable();
                Ok(local.get("w/", Some(opts)).await.is_err().then_some(()))
            }
        },
    )
    .await?;
    let mut old = watcher
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(first)),
        )
        .await?;
    created(&mut old).await?;
    let resp = old.message().await?.context("no compaction response")?;
    ensure!(
        resp.canceled() && resp.compact_revision() == now,
        "expected cancel with compact_revision {now}, got {resp:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_stops_reading_cannot_stall_writes_and_misses_nothing() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let mut writer = cluster.client().await?;
    let mut lazy = cluster.client().await?;
    let mut stream = lazy
        .watch("slow/", Some(WatchOptions::new().with_prefix()))
        .await?;
    created(&mut stream).await?;

    // Enough data to overflow every buffer between the member and the client.
    const N: usize = 3000;
    let value = "v".repeat(2048);
    let started = std::time::Instant::now();
    for i in 0..N {
        tokio::time::timeout(
            Duration::from_secs(5),
            writer.put(format!("slow/{i:05}"), value.clone(), None),
        )
        .await
        .with_context(|| format!("put {i} stalled while a watcher was not reading"))??;
    }
    let took = started.elapsed();

    // Now read: every event, once, in order.
    let events = next_events(&mut stream, N).await?;
    ensure!(
        events.len() == N,
        "got {} events, expected {N}",
        events.len()
    );
    for (i, e) in events.iter().enumerate() {
        ensure!(
            e.1 == format!("slow/{i:05}"),
            "event {i} is {} (missing or out of order)",
            e.1
        );
    }
    eprintln!("{N} puts took {took:?} with a watcher not reading");
    Ok(())
}

/// Regression (fault campaign seed 202151180: move-leader, bridge,
/// kill-follower): a member cut off long enough to need a snapshot from the
/// leader installed it without broadcasting the revisions it skipped, so its
/// watchers jumped over them (a 4000-revision gap). They are now served from
/// history. Replayed here directly: a paused follower with a watcher open
/// misses 300 writes whose log the leader has purged.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_on_a_member_that_installs_a_snapshot_misses_nothing() -> Result<()> {
    let mut cluster = ClusterOptions::new()
        .arg("--snapshot-count", 20)
        .start(3)
        .await?;
    let leader = cluster.wait_leader().await?;
    let follower = cluster.follower().await?.id;
    let mut leader_client = cluster.member(leader).client().await?;
    let start = revision(leader_client.get("snap/", None).await?.header())? + 1;
    let mut follower_client = cluster.member(follower).client().await?;
    let mut stream = follower_client
        .watch("snap/", Some(WatchOptions::new().with_prefix()))
        .await?;
    created(&mut stream).await?;

    cluster.member_mut(follower).pause()?;
    const WRITES: usize = 300;
    for i in 0..WRITES {
        leader_client
            .put(format!("snap/{i:04}"), format!("v{i}"), None)
            .await?;
    }
    // The leader purges once its replication to the silent follower gives up.
    let leader_member = cluster.member(leader);
    raftkv_tests::wait::until(
        raftkv_tests::wait::CONVERGE_TIMEOUT,
        "the leader purging past the paused follower's log",
        || async move {
            let purged = leader_member
                .metric("raftkv_raft_purged_index")
                .await?
                .context("no raftkv_raft_purged_index on the leader")?;
            Ok((purged > 250.0).then_some(()))
        },
    )
    .await?;
    cluster.member_mut(follower).resume()?;

    let events = next_events(&mut stream, WRITES).await?;
    let revisions: Vec<i64> = events.iter().map(|e| e.4).collect();
    let expected: Vec<i64> = (start..start + WRITES as i64).collect();
    ensure!(
        revisions == expected,
        "the follower's watcher saw revisions {:?}..{:?} ({} events), expected {start}..={}",
        revisions.first(),
        revisions.last(),
        revisions.len(),
        start + WRITES as i64 - 1
    );
    let log = std::fs::read_to_string(cluster.member(follower).log_path())?;
    ensure!(
        log.contains("installed a snapshot from the leader"),
        "the follower caught up without a snapshot, so this test proved nothing"
    );
    Ok(())
}

/// A compaction while a watcher replays a long history (issue 17, item 3):
/// the replay reads history in chunks, and a compaction between two chunks
/// removed revisions the watcher had not been sent yet. It must get every
/// revision in order, or be cancelled with the compaction revision: never a
/// gap. `prev_kv` makes each chunk slow to send (a lookup per event), so the
/// compaction lands in the middle of the replay.
#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_during_a_replay_cancels_the_watcher_instead_of_skipping() -> Result<()> {
    use etcd_client::{CompactionOptions, Compare, Txn, TxnOp};
    const TXNS: i64 = 2000;
    const PUTS_PER_TXN: usize = 10;
    let cluster = ClusterOptions::new().start(1).await?;
    let mut client = cluster.client().await?;
    let first = revision(client.put("r/start", "0", None).await?.header())? + 1;
    for t in 0..TXNS {
        let puts: Vec<TxnOp> = (0..PUTS_PER_TXN)
            .map(|k| TxnOp::put(format!("r/{k}"), format!("{t}"), None))
            .collect();
        let txn = Txn::new().when(Vec::<Compare>::new()).and_then(puts);
        client.txn(txn).await?;
    }
    let last = first + TXNS - 1;
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(first)
        .with_prev_key();
    let mut stream = client.watch("r/", Some(options)).await?;
    let compact_at = first + TXNS * 3 / 5;
    client
        .compact(compact_at, Some(CompactionOptions::new().with_physical()))
        .await?;

    let mut next = first;
    let mut cancelled = None;
    while next <= last && cancelled.is_none() {
        let resp = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .context("the watcher got nothing for 20 s")??
            .context("the watch stream ended")?;
        for e in resp.events() {
            let rev = e.kv().context("an event without a kv")?.mod_revision();
            ensure!(
                rev == next || rev == next - 1,
                "the watcher skipped from revision {} to {rev} (compacted at {compact_at})",
                next - 1
            );
            next = rev + 1;
        }
        if resp.canceled() {
            cancelled = Some(resp.compact_revision());
        }
    }
    println!(
        "delivered up to {} of {first}..={last}; cancelled: {cancelled:?}",
        next - 1
    );
    if let Some(at) = cancelled {
        ensure!(
            at == compact_at,
            "cancelled at {at}, compacted at {compact_at}"
        );
    }
    Ok(())
}
