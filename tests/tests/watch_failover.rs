//! 100 watchers on followers while writes continue and the leader is killed:
//! watchers that lose their stream reconnect (to any live member) from the
//! revision after the last one they saw; in the end every watcher has seen
//! every write exactly once, in revision order, and all saw the same sequence.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::{Client, EventType, WatchOptions};
use raftkv_tests::grpc::connect_with_timeout;
use raftkv_tests::ClusterOptions;

const WATCHERS: usize = 100;
const STREAMS_PER_CLIENT: usize = 25;

/// (revision, key) of each event a watcher saw, in arrival order.
type Seen = Arc<Mutex<Vec<(i64, String)>>>;

async fn watch_until(
    endpoints: Vec<String>,
    mut client: Client,
    start: i64,
    seen: Seen,
    target: Arc<Mutex<i64>>,
) -> Result<()> {
    let mut next = start;
    let mut which = 0;
    loop {
        let goal = *target.lock().unwrap();
        if goal > 0 && next > goal {
            return Ok(());
        }
        let opts = WatchOptions::new().with_prefix().with_start_revision(next);
        let stream = client.watch("ev/", Some(opts)).await.ok();
        if let Some(mut stream) = stream {
            while let Ok(Ok(Some(resp))) =
                tokio::time::timeout(Duration::from_secs(2), stream.message()).await
            {
                ensure!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
                for e in resp.events() {
                    ensure!(e.event_type() == EventType::Put, "unexpected delete");
                    let kv = e.kv().context("no kv")?;
                    seen.lock()
                        .unwrap()
                        .push((kv.mod_revision(), kv.key_str()?.to_string()));
                    next = kv.mod_revision() + 1;
                }
                let goal = *target.lock().unwrap();
                if goal > 0 && next > goal {
                    return Ok(());
                }
            }
        }
        // The stream ended, failed or went quiet: reconnect, maybe elsewhere.
        which = (which + 1) % endpoints.len();
        if let Ok(c) = connect_with_timeout(
            std::slice::from_ref(&endpoints[which]),
            Duration::from_secs(3),
        )
        .await
        {
            client = c;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_on_followers_see_every_event_once_in_order_across_a_leader_kill() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let leader = cluster.wait_leader().await?;
    let followers: Vec<u64> = cluster
        .live_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let follower_endpoints: Vec<String> = followers
        .iter()
        .map(|id| cluster.member(*id).client_endpoint())
        .collect();
    let mut writer = cluster.client().await?;
    let start = writer
        .put("ev-start", "x", None)
        .await?
        .header()
        .context("no header")?
        .revision()
        + 1;

    let target = Arc::new(Mutex::new(0i64));
    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let seen: Seen = Arc::default();
        let endpoint = &follower_endpoints[(i / STREAMS_PER_CLIENT) % follower_endpoints.len()];
        let client =
            connect_with_timeout(std::slice::from_ref(endpoint), Duration::from_secs(5)).await?;
        let task = tokio::spawn(watch_until(
            follower_endpoints.clone(),
            client,
            start,
            seen.clone(),
            target.clone(),
        ));
        watchers.push((seen, task));
    }

    // Write continuously through every member; kill the leader part way.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let write_task = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let endpoints = cluster.endpoints();
        tokio::spawn(async move {
            let mut clients = Vec::new();
            for e in &endpoints {
                clients.push(
                    connect_with_timeout(std::slice::from_ref(e), Duration::from_secs(2)).await?,
                );
            }
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && i < 100_000 {
                let key = format!("ev/{i:06}");
                let c = &mut clients[(i % 3) as usize];
                if c.put(key.clone(), "v", None).await.is_ok() {
                    acked.lock().unwrap().insert(key);
                }
                i += 1;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.member_mut(leader).kill9()?;
    let new_leader = cluster.wait_leader().await?;
    ensure!(new_leader != leader, "no new leader after the kill");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    write_task.await??;

    // Everything written is at or below the current revision: watch up to it.
    let mut reader = cluster.member(new_leader).client().await?;
    let last = reader
        .get("ev/", None)
        .await?
        .header()
        .context("no header")?
        .revision();
    *target.lock().unwrap() = last;
    let acked = acked.lock().unwrap().clone();
    ensure!(
        acked.len() > 50,
        "only {} writes were acknowledged",
        acked.len()
    );

    let mut reference: Option<Vec<(i64, String)>> = None;
    for (n, (seen, task)) in watchers.into_iter().enumerate() {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .with_context(|| format!("watcher {n} did not reach revision {last}"))???;
        let seen = seen.lock().unwrap().clone();
        let revs: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
        ensure!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "watcher {n}: duplicate or out-of-order revisions"
        );
        let keys: BTreeSet<&String> = seen.iter().map(|(_, k)| k).collect();
        for k in &acked {
            ensure!(
                keys.contains(k),
                "watcher {n} never saw acknowledged write {k}"
            );
        }
        match &reference {
            None => reference = Some(seen),
            Some(r) => ensure!(
                *r == seen,
                "watcher {n} saw a different sequence than watcher 0"
            ),
        }
    }
    Ok(())
}
