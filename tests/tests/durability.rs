//! raftkv never acknowledges a write before it is fsynced on a quorum, shown
//! with the members' own fsync counters and by cutting every member's power
//! under load; and `raftkv bench` runs its workloads against a real cluster
//! (the same code path bench/compare-etcd.sh uses).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use raftkv_tests::Cluster;
use raftkv_tests::ClusterOptions;
use raftkv_tests::RaftkvCli;

const METRIC_FSYNCS: &str = "raftkv_log_fsyncs_total";

async fn fsyncs(cluster: &Cluster) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for m in cluster.members() {
        let v = m
            .metric(METRIC_FSYNCS)
            .await?
            .with_context(|| format!("member {} has no {METRIC_FSYNCS} on /metrics", m.id))?;
        out.push(v);
    }
    Ok(out)
}

/// Each of N sequential writes is acknowledged only once a quorum fsynced it.
/// On a member in a write's quorum, the fsync that covered it completed before
/// the acknowledgement, so before the next write was even sent: it cannot
/// cover that next write too. Summed over the members, the writes therefore
/// caused at least N x quorum fsyncs.
#[tokio::test(flavor = "multi_thread")]
async fn sequential_acknowledged_writes_are_fsynced_on_a_quorum() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.wait_leader().await?;
    let mut client = cluster.client().await?;
    client.put("warm-up", "x", None).await?;
    let before = fsyncs(&cluster).await?;

    const N: usize = 40;
    for i in 0..N {
        client.put(format!("durable-{i}"), "v", None).await?;
    }
    let after = fsyncs(&cluster).await?;

    let quorum = cluster.members().len() / 2 + 1;
    let deltas: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: f64 = deltas.iter().sum();
    assert!(
        total >= (N * quorum) as f64,
        "{N} acknowledged writes caused only {total} log fsyncs over the members \
         ({deltas:?}); a quorum of {quorum} must have fsynced each one"
    );
    // The leader is in nearly every quorum; at least the quorum's worth of
    // members each did one fsync per write.
    let members_with_n = deltas.iter().filter(|d| **d >= N as f64).count();
    assert!(
        members_with_n >= 1,
        "no member fsynced once per write: {deltas:?}"
    );
    Ok(())
}

/// Writers put distinct keys into a 3-member cluster while the power of every
/// member is cut at once: whatever a member had written but not fsynced is
/// gone (see `raftkv_tests::fault::power_cut`). After the restart every
/// acknowledged put is there. `kill -9` alone could not show this: the
/// kernel keeps unsynced writes across it.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_a_power_cut_of_every_member() -> Result<()> {
    let mut cluster = ClusterOptions::new().power_cuts().start(3).await?;
    cluster.wait_leader().await?;
    let acknowledged = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut client = cluster.client().await?;
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let (key, value) = (format!("cut/{writer}/{i:06}"), format!("v{i}"));
                if client
                    .put(key.as_str(), value.as_str(), None)
                    .await
                    .is_err()
                {
                    // The cut: what was not acknowledged may or may not be there.
                    return;
                }
                acknowledged.lock().unwrap().insert(key, value);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ids: Vec<u64> = cluster.members().iter().map(|m| m.id).collect();
    let mut lost = 0;
    for &id in &ids {
        lost += cluster.power_cut(id)?;
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    for writer in writers {
        writer.abort();
    }
    let syncs = cluster.syncs_recorded()?.unwrap_or(0);
    assert!(
        syncs > 0,
        "the power-cut shim recorded no fsync: the members did not load it"
    );
    assert!(acknowledged.len() > 50, "only {} puts", acknowledged.len());
    eprintln!(
        "power cut: {} acknowledged puts, {syncs} syncs recorded, {lost} unsynced bytes dropped",
        acknowledged.len()
    );

    cluster.restart(&ids).await?;
    cluster.wait_leader().await?;
    let mut client = cluster.client().await?;
    let resp = client
        .get("cut/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await?;
    let stored: BTreeMap<String, String> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|(key, value)| stored.get(*key) != Some(*value))
        .map(|(key, _)| key)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged puts are gone after the power cut, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(())
}

/// A leader that comes back from a power cut must not answer reads from what
/// its disk kept: its record of the commit index is written unsynced, so it
/// may trail the writes the cluster acknowledged. A client overwrites one key
/// and stops; every member's power is cut; the first linearizable read
/// through each member, as soon as it answers, sees the last acknowledged
/// value. (Found by the power-cut test above: openraft by default lets a
/// restarted leader resume its term without an election.)
#[tokio::test(flavor = "multi_thread")]
async fn the_first_reads_after_a_power_cut_see_the_last_acknowledged_write() -> Result<()> {
    let mut cluster = ClusterOptions::new().power_cuts().start(3).await?;
    cluster.wait_leader().await?;
    let mut client = cluster.client().await?;
    let mut last = 0u64;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        last += 1;
        client.put("last", last.to_string(), None).await?;
    }
    let ids: Vec<u64> = cluster.members().iter().map(|m| m.id).collect();
    for &id in &ids {
        cluster.power_cut(id)?;
    }
    for &id in &ids {
        cluster.member_mut(id).restart()?;
    }
    for &id in &ids {
        let member = cluster.member(id);
        // Polled every 10 ms, not at wait::until's 100 ms: the stale window
        // is short, and the point is the member's first answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let read = loop {
            let answer = match member.client().await {
                Ok(mut c) => c.get("last", None).await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match answer {
                Ok(resp) => break resp,
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(e.context(format!("member {id} answered no read in 20 s")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let seen = read
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
        assert_eq!(
            seen,
            Some(last.to_string()),
            "the first linearizable read through member {id} after the power cut \
             missed the last acknowledged write"
        );
    }
    Ok(())
}

/// `raftkv bench --json` against a 3-member cluster: each workload completes
/// its requests without errors and reports a latency summary.
#[tokio::test(flavor = "multi_thread")]
async fn bench_runs_every_workload_against_a_cluster() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.wait_leader().await?;
    let cli = RaftkvCli::new(&cluster.endpoints())?;
    let runs: [&[&str]; 5] = [
        &["put"],
        &["range"],
        &["range", "--serializable"],
        &["txn"],
        &["mixed", "--read-ratio", "0.5"],
    ];
    for args in runs {
        let mut full = vec!["bench"];
        full.extend_from_slice(args);
        full.extend_from_slice(&[
            "--total",
            "60",
            "--conns",
            "2",
            "--clients",
            "4",
            "--key-space",
            "20",
            "--json",
        ]);
        let out = cli.run(&full).await?.ok()?;
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("raftkv {full:?} printed no JSON: {}", out.stdout))?;
        assert_eq!(report["requests"], 60, "{full:?}: {report}");
        assert_eq!(report["errors"], 0, "{full:?}: {report}");
        let p99 = report["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
        let max = report["latency_ms"]["max"].as_f64().unwrap_or(0.0);
        assert!(p99 > 0.0 && p99 <= max, "{full:?}: {report}");
        assert!(report["throughput"].as_f64().unwrap_or(0.0) > 0.0);
    }
    // The puts really landed: the key space is readable through etcd's API.
    let mut client = cluster.client().await?;
    let resp = client
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await?;
    assert!(resp.count() > 0 && resp.count() <= 20, "{}", resp.count());
    // --target picks members by role (through Maintenance.Status).
    let leader = cluster.wait_leader().await?;
    let leader_url = cluster.member(leader).client_url();
    for (target, on_leader) in [("leader", true), ("followers", false)] {
        let args = ["bench", "range", "--serializable", "--total", "10"];
        let out = cli
            .run(&[&args[..], &["--target", target, "--json"]].concat())
            .await?
            .ok()?;
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("--target {target} printed no JSON: {}", out.stdout))?;
        let used: Vec<&str> = report["endpoints"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            used.len(),
            if on_leader { 1 } else { 2 },
            "{target}: {report}"
        );
        assert_eq!(
            used.contains(&leader_url.as_str()),
            on_leader,
            "{target}: {report}"
        );
        assert_eq!(report["errors"], 0, "{target}: {report}");
    }
    // A bad flag is a one-line usage error.
    let out = cli
        .run(&["bench", "put", "--key-size", "2", "--key-space", "1000"])
        .await?
        .failed()?;
    assert!(out.stderr.contains("too small"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    Ok(())
}
