//! `kill -9` of the leader under a continuous write load: a new leader takes over,
//! writes continue, and once the killed member is back every acknowledged write is
//! readable from every member with the acknowledged value; and a leader cut
//! off from its quorum stops answering linearizable reads. How fast a
//! failover is, is measured by bench/failover.sh (BENCHMARKS.md), not here.

use anyhow::{ensure, Context, Result};
use raftkv_tests::grpc::connect_with_timeout;
use raftkv_tests::kv::{get_prefix, get_value, get_value_serializable};
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT};
use raftkv_tests::Cluster;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Acknowledged puts: (key, value), in acknowledgement order.
type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// A task putting `failover/NNNNNN = value-N` for N = 0, 1, ... until stopped,
/// each key once, recording every put that was acknowledged. A put that fails may
/// or may not have been applied; only acknowledged ones are promised.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Acked,
    task: JoinHandle<anyhow::Result<u64>>,
}

impl Writer {
    fn start(endpoints: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Acked = Arc::default();
        let task = tokio::spawn(write_continuously(endpoints, stop.clone(), acked.clone()));
        Writer { stop, acked, task }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Wait until at least `n` puts have been acknowledged.
    async fn wait_acked(&self, n: usize, what: &str) -> Result<()> {
        wait::until(CONVERGE_TIMEOUT, what, || {
            let count = self.acked_count();
            async move { Ok((count >= n).then_some(())) }
        })
        .await
    }

    /// Stop writing; returns the acknowledged puts and the number of failed ones.
    async fn finish(self) -> Result<(Vec<(String, String)>, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self.task.await.context("writer task panicked")??;
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        Ok((acked, failures))
    }
}

async fn write_continuously(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> Result<u64> {
    // One client per member, so a dead member costs one failed put, after which
    // the writer moves on to the next member.
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(
            connect_with_timeout(std::slice::from_ref(endpoint), Duration::from_secs(5)).await?,
        );
    }
    let mut cursor = 0;
    let mut failures = 0;
    // Bounded: the test stops the writer long before this.
    for seq in 0..200_000u64 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = format!("failover/{seq:06}");
        let value = format!("value-{seq}");
        match clients[cursor].put(key.clone(), value.clone(), None).await {
            Ok(_) => acked.lock().unwrap().push((key, value)),
            Err(_) => {
                failures += 1;
                cursor = (cursor + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(failures)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_leader_under_writes_loses_no_acknowledged_write() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let old_leader = cluster.wait_leader().await?;

    let writer = Writer::start(cluster.endpoints());
    writer
        .wait_acked(50, "50 acknowledged puts before the kill")
        .await?;

    cluster.member_mut(old_leader).kill9()?;
    let acked_at_kill = writer.acked_count();

    let new_leader = cluster.wait_leader().await?;
    ensure!(
        new_leader != old_leader,
        "the surviving members agree on leader {new_leader}, which was killed"
    );
    writer
        .wait_acked(
            acked_at_kill + 50,
            "50 more acknowledged puts after the leader was killed",
        )
        .await?;

    let (acked, failures) = writer.finish().await?;
    eprintln!(
        "writer: {} acknowledged, {failures} failed; {acked_at_kill} acknowledged before the kill",
        acked.len()
    );

    cluster.restart(&[old_leader]).await?;
    cluster.wait_leader_all().await?;

    let expected: BTreeMap<String, String> = acked.into_iter().collect();
    let mut reference: Option<(String, BTreeMap<String, String>)> = None;
    for m in cluster.members() {
        let mut client = m.client().await?;
        let (actual, _) = get_prefix(&mut client, "failover/").await?;
        let lost: Vec<_> = expected
            .iter()
            .filter(|(k, v)| actual.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v} (read {:?})", actual.get(k)))
            .take(10)
            .collect();
        ensure!(
            lost.is_empty(),
            "{} lost acknowledged writes, e.g. {lost:?}",
            m.name
        );
        // Writes have stopped, so linearizable reads on every member see one state,
        // including puts that failed on the client but were applied.
        if let Some((name, first)) = &reference {
            ensure!(
                first == &actual,
                "{} and {name} return different data for failover/ ({} vs {} keys)",
                m.name,
                actual.len(),
                first.len()
            );
        } else {
            reference = Some((m.name.clone(), actual));
        }
    }
    Ok(())
}

/// Regression (found by the fault campaign, seed 2, kill-follower): while a
/// member was down the leader reopened its replication stream at once after
/// every failed connect, thousands of times a second, flooding its log and
/// burning a core. It now waits the retry interval between attempts.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_follower_is_retried_at_a_bounded_rate() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    let follower = cluster.follower().await?.id;
    cluster.member_mut(follower).kill9()?;
    // Let the leader notice, then count what it logs about the dead peer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = cluster.member(leader).log_path();
    let count = || -> Result<usize> {
        let text = std::fs::read_to_string(&log).context("reading the leader's log")?;
        Ok(text.matches("tcp connect error").count())
    };
    let before = count()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let per_second = (count()? - before) / 5;
    // One stream attempt and one heartbeat per 200 ms interval log a few lines
    // each: tens per second. Without the pause it was 2,000-5,000.
    ensure!(
        per_second < 100,
        "the leader logged {per_second} connect errors per second about a dead peer"
    );
    Ok(())
}

/// The members' `--election-timeout` (the default).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// A leader cut off from its quorum (both followers paused, so nothing it
/// sends is acknowledged) must not answer a linearizable read from then on:
/// each needs a quorum round (a read index), and none can complete. Within
/// the leader timeout (two election timeouts) it also stops naming itself
/// leader, etcd's check-quorum step-down, so clients look elsewhere; that the
/// same leader stops renewing leases within one election timeout is
/// `tests/lease.rs`, `a_leader_cut_off_from_its_quorum_stops_renewing_leases`.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_its_quorum_stops_serving_linearizable_reads() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    let endpoint = cluster.member(leader).client_endpoint();
    let mut client = connect_with_timeout(&[endpoint], Duration::from_secs(3)).await?;
    client.put("cut/key", "before", None).await?;
    ensure!(
        get_value(&mut client, "cut/key").await?.as_deref() == Some("before"),
        "the leader did not serve a linearizable read before the cut"
    );

    let followers = cluster.cut_off(leader)?;
    let cut_off = Instant::now();
    let mut answered = None;
    let mut attempts = 0;
    while cut_off.elapsed() < 3 * ELECTION_TIMEOUT {
        attempts += 1;
        let started = cut_off.elapsed();
        match tokio::time::timeout(ELECTION_TIMEOUT, client.get("cut/key", None)).await {
            Ok(Ok(resp)) => {
                answered = Some(format!(
                    "{:?} after {started:?}: {resp:?}",
                    cut_off.elapsed()
                ));
                break;
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => {}
        }
    }
    let local = get_value_serializable(&mut client, "cut/key").await;
    let status = wait::until(
        4 * ELECTION_TIMEOUT,
        "the cut-off leader to report no leader",
        || {
            let member = cluster.member(leader);
            async move { Ok((member.status().await?.leader() == 0).then_some(())) }
        },
    )
    .await;
    cluster.resume_each(&followers)?;
    if let Some(answered) = answered {
        anyhow::bail!("the cut-off leader answered a linearizable read: {answered}");
    }
    ensure!(
        attempts >= 3,
        "only {attempts} read attempts in three election timeouts"
    );
    ensure!(
        local?.as_deref() == Some("before"),
        "the cut-off leader did not answer a serializable read from its own state"
    );
    status?;
    Ok(())
}

/// A leader stopped with SIGTERM hands leadership to another voter before it
/// goes, as etcd's does, so the others need not wait out an election. With a
/// 5 s election timeout no election can even begin until the survivors have
/// not heard from their leader for 5 s (the vote lease); the survivors
/// acknowledge a write well before that, and the stopped member exits
/// cleanly, saying it handed over.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_stopped_with_sigterm_hands_leadership_over_first() -> Result<()> {
    const ELECTION_TIMEOUT: Duration = Duration::from_secs(5);
    let mut cluster = raftkv_tests::ClusterOptions::new()
        .arg("--election-timeout", ELECTION_TIMEOUT.as_millis())
        .start(3)
        .await?;
    let leader = cluster.wait_leader().await?;
    let survivors: Vec<String> = cluster
        .members()
        .iter()
        .filter(|m| m.id != leader)
        .map(|m| m.client_endpoint())
        .collect();
    let client = connect_with_timeout(&survivors, Duration::from_secs(2)).await?;
    client.clone().put("sigterm/before", "1", None).await?;

    let stopped_at = Instant::now();
    cluster.member_mut(leader).signal_term()?;
    wait::until(
        2 * ELECTION_TIMEOUT,
        "a write through a survivor after the leader's SIGTERM",
        || {
            let mut client = client.clone();
            async move {
                Ok(client
                    .put("sigterm/after", "1", None)
                    .await
                    .ok()
                    .map(|_| ()))
            }
        },
    )
    .await?;
    let took = stopped_at.elapsed();
    ensure!(
        took < ELECTION_TIMEOUT,
        "the survivors wrote again {took:?} after the leader's SIGTERM: they waited out an \
         election instead of being handed leadership"
    );
    let stopped = cluster.member_mut(leader);
    let exit = stopped.wait_exit(Duration::from_secs(15)).await?;
    ensure!(exit.success(), "the stopped leader exited with {exit}");
    let log = stopped.log_tail(200);
    ensure!(
        log.contains("handing leadership over first"),
        "the stopped leader's log does not say it handed over:\n{log}"
    );
    Ok(())
}
