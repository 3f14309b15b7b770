//! One fault run end to end: start a cluster, run the workload while the
//! nemesis injects a schedule, heal, wait for convergence, compare HashKV on
//! every member, and run the checkers. Anomalies are collected into the
//! [`RunReport`], with the seed and schedule to replay them.

use crate::cluster::ClusterOptions;
use crate::fault::catch_up_check::{catch_up_summary, check_catch_up};
use crate::fault::checker::{check_history, CheckReport, DEFAULT_BUDGET};
use crate::fault::history::{Clock, Outcome, RegisterOp, RegisterRet};
use crate::fault::lease_check::{check_leases, LeaseLife};
use crate::fault::lease_workload::LEASE_PREFIX;
use crate::fault::lock_check::{check_exclusion, check_ownership, HoldEnd, LockHold};
use crate::fault::lock_workload::LOCK_NAME;
use crate::fault::nemesis::{schedule, FaultKind, Nemesis, NemesisLog, Schedule};
use crate::fault::netns;
use crate::fault::set_check::{check_set, SetReport};
use crate::fault::watch_check::{check_watchers, AckedWrite, WatcherLog};
use crate::fault::workload::{Workload, WorkloadConfig};
use crate::grpc::connect_with;
use crate::kv::get_prefix;
use crate::tls::ClientTls;
use crate::wait::{self, CONVERGE_TIMEOUT};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub members: usize,
    pub faults_per_schedule: usize,
    pub workload: WorkloadConfig,
    /// Members in network namespaces (partitions possible) when the machine allows.
    pub use_netns: bool,
    /// Client and peer ports over TLS, client certificates required on both
    /// (`ClusterOptions::tls`); the workload and the nemesis connect as root.
    pub tls: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            members: 3,
            // With the 14 kinds, any 3 consecutive seeds cover all of them.
            faults_per_schedule: 5,
            workload: WorkloadConfig::default(),
            use_netns: true,
            tls: false,
        }
    }
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub schedule: Schedule,
    pub nemesis: NemesisLog,
    pub register_ok: usize,
    pub register_unknown: usize,
    pub register_failed: usize,
    pub set: SetReport,
    pub watch_events: usize,
    pub watch_reconnects: u32,
    pub lock_holds: Vec<LockHold>,
    pub lease_lives: Vec<LeaseLife>,
    /// Catch-up rounds, those cancelled by their mid-replay compaction, and
    /// the revisions they replayed (see `catch_up_workload`).
    pub catch_up: (usize, usize, i64),
    pub linearizability: Option<CheckReport>,
    pub final_revision: i64,
    pub hash: Option<u32>,
    /// Everything wrong, one line (or block) each; empty for a clean run.
    pub anomalies: Vec<String>,
    pub elapsed: Duration,
}

impl RunReport {
    /// Operations of every kind the clients completed or gave up on.
    pub fn operations(&self) -> usize {
        self.register_ok
            + self.register_unknown
            + self.register_failed
            + self.set.acknowledged
            + self.set.unknown
            + self.set.failed
    }

    fn holds_ended(&self, how: HoldEnd) -> usize {
        self.lock_holds.iter().filter(|h| h.ended == how).count()
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        let kinds: Vec<&str> = self.nemesis.injected.iter().map(|k| k.name()).collect();
        format!(
            "seed {}: {:.0}s, faults [{}]{}, register ops {} ok / {} unknown / {} failed, \
             set appends {} acked / {} unknown ({} of them applied), {} watch events ({} reconnects), \
             lock holds {} ({} unlocked, {} crashed, {} session expired), leases {}, \
             catch-up rounds {} ({} cancelled as compacted, {} revisions replayed), revision {}, hash {:?}, \
             {} anomalies",
            self.schedule.seed,
            self.elapsed.as_secs_f64(),
            kinds.join(", "),
            if self.nemesis.skipped.is_empty() {
                String::new()
            } else {
                format!(" ({} skipped)", self.nemesis.skipped.len())
            },
            self.register_ok,
            self.register_unknown,
            self.register_failed,
            self.set.acknowledged,
            self.set.unknown,
            self.set.unknown_present,
            self.watch_events,
            self.watch_reconnects,
            self.lock_holds.len(),
            self.holds_ended(HoldEnd::Unlocked),
            self.holds_ended(HoldEnd::Crashed),
            self.holds_ended(HoldEnd::SessionExpired),
            self.lease_lives.len(),
            self.catch_up.0,
            self.catch_up.1,
            self.catch_up.2,
            self.final_revision,
            self.hash,
            self.anomalies.len()
        )
    }

    /// Everything needed to understand and replay a failed run.
    pub fn details(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.summary());
        let _ = writeln!(out, "{}", self.schedule);
        let _ = writeln!(
            out,
            "replay: RAFTKV_FAULT_SEED={} RAFTKV_SOAK_SCHEDULES=1 cargo test -p raftkv-tests --test fault_campaign -- --nocapture",
            self.schedule.seed
        );
        let _ = writeln!(out, "lock holds:");
        for hold in &self.lock_holds {
            let _ = writeln!(out, "  {hold}");
        }
        let _ = writeln!(out, "nemesis:");
        for line in &self.nemesis.lines {
            let _ = writeln!(out, "  {line}");
        }
        for a in &self.anomalies {
            let _ = writeln!(out, "ANOMALY: {a}");
        }
        out
    }
}

/// Why partitions are skipped in this run, if they are.
pub fn partitions_unavailable(config: &RunConfig) -> Option<String> {
    if !config.use_netns {
        return Some("network namespaces disabled for this run".to_string());
    }
    netns::unavailable_reason()
}

/// Run the schedule of `seed`; `Err` only when the harness itself fails.
pub async fn run_schedule(seed: u64, config: &RunConfig) -> Result<RunReport> {
    run_with_schedule(schedule(seed, config.faults_per_schedule), config).await
}

/// Run `schedule` (its seed also seeds the clients); `Err` only when the
/// harness itself fails.
pub async fn run_with_schedule(schedule: Schedule, config: &RunConfig) -> Result<RunReport> {
    let started = Instant::now();
    let seed = schedule.seed;
    let no_partitions = partitions_unavailable(config);
    // Snapshots well inside a schedule's few thousand writes, so a member cut
    // off by a fault catches up by installing one (the default, 100000, would
    // never be reached here).
    // Every member's fsyncs are recorded, so the power-loss fault can take
    // from it what it had not synced.
    let mut options = ClusterOptions::new()
        .arg("--snapshot-count", 2000)
        .power_cuts();
    if no_partitions.is_none() {
        options = options.in_netns();
    }
    if config.tls {
        options = options.tls();
    }
    let mut cluster = options.start(config.members).await?;
    cluster.wait_leader().await?;
    let endpoints = cluster.endpoints();
    let tls = cluster.client_tls().cloned();
    let start_revision = {
        let mut client = connect_with(&endpoints, tls.as_ref(), Duration::from_secs(5)).await?;
        let resp = client
            .get("r/", None)
            .await
            .context("reading the start revision")?;
        resp.header().map_or(0, |h| h.revision()) + 1
    };
    let clock = Clock::start();
    let workload_config = WorkloadConfig {
        tls: tls.clone(),
        ..config.workload.clone()
    };
    let mut workload = Workload::start(
        endpoints.clone(),
        &workload_config,
        seed,
        clock,
        start_revision,
    );
    let mut anomalies = Vec::new();

    let mut nemesis = Nemesis::new(&mut cluster, started, no_partitions);
    nemesis.run(&schedule).await?;
    nemesis.heal_all()?;
    let nemesis_log = nemesis.log;
    for err in &nemesis_log.errors {
        anomalies.push(format!("nemesis: {err}"));
    }

    // Convergence: every member back, one leader all agree on, then a little
    // more load on the healed cluster before the clients stop.
    if let Err(err) = converge(&mut cluster).await {
        anomalies.push(format!("cluster did not converge after healing: {err:#}"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    workload.stop_writers().await?;

    let live = cluster.endpoints();
    let client = connect_with(&live, tls.as_ref(), Duration::from_secs(10)).await?;
    let (set_read, final_revision) = wait::until(CONVERGE_TIMEOUT, "the final read", || {
        let mut client = client.clone();
        async move { Ok(Some(get_prefix(&mut client, "s/").await?)) }
    })
    .await?;
    let register = workload.register.snapshot();
    let appends = workload.set.snapshot();
    let lock_holds = workload.locks.snapshot();
    let lease_lives = workload.leases.snapshot();
    let catch_up = workload.catch_up.snapshot();
    let watchers = workload
        .finish_watchers(final_revision, Duration::from_secs(60))
        .await;

    let hash = match equal_hashes(&live, tls.as_ref(), final_revision).await {
        Ok(hash) => Some(hash),
        Err(err) => {
            anomalies.push(format!("HashKV at revision {final_revision}: {err:#}"));
            None
        }
    };
    if let Err(err) = cluster.check_no_crash() {
        anomalies.push(format!("a member crashed: {err:#}"));
    }

    // The checkers.
    let linearizability = check_history(&register, DEFAULT_BUDGET, Duration::from_secs(60));
    for (key, minimal) in linearizability.violations() {
        let mut text = format!(
            "register {key} is not linearizable; smallest failing sub-history ({} ops):",
            minimal.len()
        );
        for e in minimal {
            let _ = write!(text, "\n    {e}");
        }
        anomalies.push(text);
    }
    for key in linearizability.inconclusive() {
        anomalies.push(format!(
            "register {key}: linearizability check inconclusive (search budget exhausted)"
        ));
    }
    let set = check_set(&appends, &set_read);
    if !set.lost.is_empty() {
        anomalies.push(format!(
            "{} acknowledged appends lost, e.g. {:?}",
            set.lost.len(),
            &set.lost[..set.lost.len().min(10)]
        ));
    }
    if !set.unexpected.is_empty() {
        anomalies.push(format!(
            "{} unexpected set elements, e.g. {:?}",
            set.unexpected.len(),
            &set.unexpected[..set.unexpected.len().min(10)]
        ));
    }
    let acked = acked_writes(&register, &appends);
    let (watch_events, watch_reconnects) = match &watchers {
        Ok(logs) => {
            let watch_problems = check_watchers(logs, final_revision, &acked);
            // Ownership is judged from a complete log: any watcher's, when
            // all saw every revision.
            if let (true, Some(log)) = (watch_problems.is_empty(), logs.first()) {
                let prefix = format!("{LOCK_NAME}/");
                for problem in check_ownership(&lock_holds, &log.events, &prefix) {
                    anomalies.push(format!("lock: {problem}"));
                }
            }
            for problem in watch_problems {
                anomalies.push(format!("watch: {problem}"));
            }
            for problem in check_leases(&lease_lives, &deletes_seen(logs, LEASE_PREFIX)) {
                anomalies.push(format!("lease: {problem}"));
            }
            (
                logs.iter().map(|l| l.events.len()).sum(),
                logs.iter().map(|l| l.reconnects).sum(),
            )
        }
        Err(err) => {
            anomalies.push(format!("watch: {err:#}"));
            (0, 0)
        }
    };

    for problem in check_exclusion(&lock_holds) {
        anomalies.push(format!("lock: {problem}"));
    }
    for problem in check_catch_up(&catch_up) {
        anomalies.push(format!("catch-up watch: {problem}"));
    }

    let count =
        |f: fn(&Outcome<RegisterRet>) -> bool| register.iter().filter(|e| f(&e.outcome)).count();
    Ok(RunReport {
        schedule,
        nemesis: nemesis_log,
        register_ok: count(|o| matches!(o, Outcome::Ok(_))),
        register_unknown: count(|o| matches!(o, Outcome::Unknown)),
        register_failed: count(|o| matches!(o, Outcome::Failed)),
        set,
        watch_events,
        watch_reconnects,
        lock_holds,
        lease_lives,
        catch_up: catch_up_summary(&catch_up),
        linearizability: Some(linearizability),
        final_revision,
        hash,
        anomalies,
        elapsed: started.elapsed(),
    })
}

/// For every key under `prefix` some watcher saw deleted: the earliest time
/// one did.
fn deletes_seen(logs: &[WatcherLog], prefix: &str) -> HashMap<String, u64> {
    let mut seen = HashMap::new();
    for log in logs {
        for (event, &at) in log.events.iter().zip(&log.seen_at) {
            if event.value.is_none() && event.key.starts_with(prefix) {
                let first = seen.entry(event.key.clone()).or_insert(at);
                *first = (*first).min(at);
            }
        }
    }
    seen
}

async fn converge(cluster: &mut crate::Cluster) -> Result<()> {
    cluster.wait_ready_all().await?;
    cluster.wait_leader_all().await?;
    Ok(())
}

/// HashKV at `revision` on every endpoint, once each has applied it; all equal.
async fn equal_hashes(endpoints: &[String], tls: Option<&ClientTls>, revision: i64) -> Result<u32> {
    let mut hashes = BTreeMap::new();
    for endpoint in endpoints {
        let client =
            connect_with(std::slice::from_ref(endpoint), tls, Duration::from_secs(5)).await?;
        let hash = wait::until(
            CONVERGE_TIMEOUT,
            format!("HashKV({revision}) on {endpoint}"),
            || {
                let mut client = client.clone();
                async move { Ok(Some(client.hash_kv(revision).await?.hash())) }
            },
        )
        .await?;
        hashes.insert(endpoint.clone(), hash);
    }
    let first = *hashes.values().next().context("no endpoints")?;
    if hashes.values().any(|&h| h != first) {
        bail!("members disagree: {hashes:?}");
    }
    Ok(first)
}

/// Every acknowledged write with the revision it was applied at.
fn acked_writes(
    register: &[crate::fault::history::RegisterEntry],
    appends: &[crate::fault::history::SetAppend],
) -> Vec<AckedWrite> {
    let mut out = Vec::new();
    for e in register {
        let (Outcome::Ok(ret), Some(revision)) = (&e.outcome, e.revision) else {
            continue;
        };
        let value = match (e.op, ret) {
            (RegisterOp::Write(v), RegisterRet::Written) => v,
            (RegisterOp::Cas { new, .. }, RegisterRet::Cas(true)) => new,
            _ => continue,
        };
        out.push(AckedWrite {
            key: e.key.clone(),
            value: value.to_string(),
            revision,
        });
    }
    for a in appends {
        if let (Outcome::Ok(()), Some(revision)) = (&a.outcome, a.revision) {
            out.push(AckedWrite {
                key: a.key.clone(),
                value: a.key.clone(),
                revision,
            });
        }
    }
    out
}

/// Seeds of a campaign and how many faults of each kind its runs injected.
pub fn kinds_covered(reports: &[RunReport]) -> BTreeMap<FaultKind, usize> {
    let mut out = BTreeMap::new();
    for r in reports {
        for &k in &r.nemesis.injected {
            *out.entry(k).or_default() += 1;
        }
    }
    out
}
