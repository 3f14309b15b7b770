//! The fault campaign: seeded fault schedules against a real cluster, with
//! every client operation checked (linearizability of the registers, no lost or
//! invented set elements, gap-free watches, equal HashKV on every member).
//!
//! Every `cargo test` runs a short campaign with a new seed, printed on stderr
//! (uncaptured, so CI logs show it even when the test passes):
//!
//! ```text
//! RAFTKV_FAULT_SEED=N            first schedule's seed (replays a campaign)
//! RAFTKV_SOAK_SCHEDULES=K        number of schedules (default 3; seeds N..N+K)
//! RAFTKV_FAULT_FAULTS=F          faults per schedule (default 5)
//! RAFTKV_FAULT_MEMBERS=M         cluster size (default 3)
//! RAFTKV_FAULT_KEYS=K            register keys (default 4)
//! RAFTKV_FAULT_TLS=1             every schedule over TLS (the default runs one
//!                                more schedule, `fault_campaign_over_tls`, so)
//! ```
//!
//! A long soak: `RAFTKV_SOAK_SCHEDULES=40 cargo test -p raftkv-tests --test
//! fault_campaign -- --nocapture` (see RELIABILITY.md).

use anyhow::Result;
use raftkv_tests::fault::campaign::{
    kinds_covered, partitions_unavailable, run_schedule, run_with_schedule, RunConfig, RunReport,
};
use raftkv_tests::fault::nemesis::{Fault, FaultKind, Schedule};
use std::io::Write;
use std::time::Duration;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// Print past libtest's output capture: the seed must be in every CI log.
fn announce(text: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

async fn campaign(first_seed: u64, schedules: u64, config: &RunConfig) -> Result<Vec<RunReport>> {
    announce(&format!(
        "fault campaign: {schedules} schedule(s), seeds {first_seed}..{} \
         (replay: RAFTKV_FAULT_SEED={first_seed} RAFTKV_SOAK_SCHEDULES={schedules})",
        first_seed + schedules - 1
    ));
    if let Some(reason) = partitions_unavailable(config) {
        announce(&format!("fault campaign: partitions skipped: {reason}"));
    }
    let mut reports = Vec::new();
    for seed in first_seed..first_seed + schedules {
        let report = run_schedule(seed, config).await?;
        announce(&format!("fault campaign: {}", report.summary()));
        if report.anomalies.is_empty() {
            for line in &report.nemesis.lines {
                announce(&format!("    {line}"));
            }
        } else {
            announce(&report.details());
        }
        reports.push(report);
    }
    let ops: usize = reports.iter().map(RunReport::operations).sum();
    let faults: usize = reports.iter().map(|r| r.nemesis.injected.len()).sum();
    let anomalies: usize = reports.iter().map(|r| r.anomalies.len()).sum();
    announce(&format!(
        "fault campaign total: {} schedules, {ops} operations, {faults} faults injected {:?}, {anomalies} anomalies",
        reports.len(),
        kinds_covered(&reports)
    ));
    Ok(reports)
}

fn assert_clean(reports: &[RunReport]) {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.anomalies.is_empty())
        .map(RunReport::details)
        .collect();
    assert!(
        failed.is_empty(),
        "{} schedule(s) found anomalies:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_campaign() -> Result<()> {
    let first_seed = env_u64("RAFTKV_FAULT_SEED").unwrap_or_else(|| rand::random::<u32>() as u64);
    let schedules = env_u64("RAFTKV_SOAK_SCHEDULES").unwrap_or(3).max(1);
    let mut config = RunConfig::default();
    if let Some(f) = env_u64("RAFTKV_FAULT_FAULTS") {
        config.faults_per_schedule = f.max(1) as usize;
    }
    if let Some(n) = env_u64("RAFTKV_FAULT_MEMBERS") {
        config.members = n.max(3) as usize;
    }
    if let Some(k) = env_u64("RAFTKV_FAULT_KEYS") {
        config.workload.keys = k.max(1) as usize;
    }
    config.tls = env_u64("RAFTKV_FAULT_TLS").is_some_and(|t| t != 0);
    let reports = campaign(first_seed, schedules, &config).await?;
    assert_clean(&reports);
    Ok(())
}

/// One schedule with TLS and client certificates on the client and peer
/// ports: the faults (kills, pauses, partitions, member replacement, leader
/// moves) hit members that reconnect to each other over TLS, and every check
/// holds as it does in plaintext.
#[tokio::test(flavor = "multi_thread")]
async fn fault_campaign_over_tls() -> Result<()> {
    let seed = env_u64("RAFTKV_FAULT_SEED").unwrap_or_else(|| rand::random::<u32>() as u64);
    let config = RunConfig {
        tls: true,
        ..RunConfig::default()
    };
    announce("fault campaign over TLS:");
    let reports = campaign(seed, 1, &config).await?;
    assert_clean(&reports);
    Ok(())
}

/// The negative control: the same pipeline with serializable reads (served from
/// a member's local state) recorded as if they were linearizable. Followers
/// apply a little after the leader, and an isolated old leader keeps serving
/// values the majority has since overwritten, so stale reads are certain; the
/// checker must report them. If it did not, a clean campaign would prove nothing.
#[tokio::test(flavor = "multi_thread")]
async fn campaign_catches_stale_serializable_reads() -> Result<()> {
    let mut config = RunConfig::default();
    config.workload.serializable_reads = true;
    if let Some(reason) = partitions_unavailable(&config) {
        announce(&format!(
            "campaign_catches_stale_serializable_reads: skipped, no partitions: {reason}"
        ));
        return Ok(());
    }
    let isolate = Fault {
        kind: FaultKind::IsolateLeader,
        gap: Duration::from_secs(2),
        hold: Duration::from_secs(8),
        pick: 0,
    };
    let report = run_with_schedule(
        Schedule {
            seed: 7,
            faults: vec![isolate],
        },
        &config,
    )
    .await?;
    let stale = report
        .anomalies
        .iter()
        .find(|a| a.contains("is not linearizable"));
    assert!(
        stale.is_some(),
        "no linearizability violation reported for serializable reads from an isolated leader:\n{}",
        report.details()
    );
    announce(&format!(
        "campaign_catches_stale_serializable_reads: caught, as expected:\n{}",
        stale.unwrap()
    ));
    Ok(())
}
