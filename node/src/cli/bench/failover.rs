//! `raftkv bench-failover`: one failover trial, timed from outside, against
//! raftkv or etcd alike (it speaks only etcd's API).
//!
//! It finds the leader through Maintenance.Status, signals the leader's
//! process (kill -9 for a crash, SIGTERM for a planned restart), and times,
//! from the signal, three moments seen from the surviving members:
//!
//! - `term_bumped`: a survivor reports a higher Raft term: a candidate has
//!   started its real election (with pre-vote, after winning the pre-vote
//!   round), so this is detection plus the pre-vote round;
//! - `leader_known`: a survivor names a new leader;
//! - `write_acked`: the first put through a survivor is acknowledged: the
//!   new leader's first commit, forwarding, and the client's retries.
//!
//! Writes are started every [`ATTEMPT_EVERY`] on alternating survivors, each
//! with its own long deadline, and the first acknowledgement wins: the time
//! is when a client could first have written, within that step, and not an
//! artefact of one client's retry policy. bench/failover.sh restarts the
//! member and repeats the trial, for both systems, and prints the table.

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::mpsc;

use super::target::member_status;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::PutRequest;

/// How often a new write attempt starts.
const ATTEMPT_EVERY: Duration = Duration::from_millis(20);
/// How often each survivor is asked for its status.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// A trial that has not written by then failed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Comma-separated client endpoints of every member.
    #[arg(long, env = "RAFTKV_ENDPOINTS")]
    pub endpoints: String,
    /// The members' process ids, in the order of --endpoints.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<i32>,
    /// How the leader is stopped: `kill` (SIGKILL, a crash) or `term`
    /// (SIGTERM, a planned restart).
    #[arg(long, value_enum, default_value = "kill")]
    pub signal: StopSignal,
    /// etcdctl's TLS flags, for members serving TLS.
    #[command(flatten)]
    pub tls: crate::cli::client::ClientTlsFiles,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopSignal {
    Kill,
    Term,
}

/// One trial's result, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct Trial {
    pub signal: StopSignal,
    /// Index (in --endpoints) of the member that was stopped.
    pub stopped: usize,
    pub old_term: u64,
    /// Milliseconds from the signal; `None` if never seen (e.g. a leadership
    /// handed over without a term a survivor was asked in between).
    pub term_bumped_ms: Option<f64>,
    pub leader_known_ms: Option<f64>,
    pub write_acked_ms: f64,
    /// Write attempts that failed before the first acknowledgement.
    pub failed_attempts: u64,
    /// The distinct errors those attempts met (a few).
    pub errors: Vec<String>,
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let trial = trial(&args).await?;
    println!("{}", serde_json::to_string(&trial)?);
    Ok(())
}

pub async fn trial(args: &FailoverArgs) -> anyhow::Result<Trial> {
    let tls = args.tls.config()?;
    let urls = crate::cli::client::endpoint_urls(&args.endpoints, tls.is_some());
    if urls.len() != args.pids.len() || urls.len() < 3 {
        anyhow::bail!(
            "give --endpoints and --pids for the same members, at least 3 ({} endpoints, {} pids)",
            urls.len(),
            args.pids.len()
        );
    }
    let Before {
        stopped,
        leader,
        old_term,
        survivors,
    } = before(&urls, &tls)
        .await
        .context("nothing was stopped; try again")?;

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let signal = match args.signal {
        StopSignal::Kill => libc::SIGKILL,
        StopSignal::Term => libc::SIGTERM,
    };
    // SAFETY: kill(2) with a pid and a signal number touches no memory.
    if unsafe { libc::kill(args.pids[stopped], signal) } != 0 {
        anyhow::bail!(
            "cannot signal pid {}: {}",
            args.pids[stopped],
            std::io::Error::last_os_error()
        );
    }
    let signalled = Instant::now();
    let pollers: Vec<_> = survivors
        .iter()
        .map(|channel| {
            tokio::spawn(poll_status(
                channel.clone(),
                leader,
                old_term,
                seen_tx.clone(),
            ))
        })
        .collect();

    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel();
    let mut failed_attempts = 0u64;
    let mut errors: Vec<String> = Vec::new();
    let mut term_bumped = None;
    let mut leader_known = None;
    let mut tick = tokio::time::interval(ATTEMPT_EVERY);
    let mut attempt = 0usize;
    let write_acked = loop {
        tokio::select! {
            _ = tick.tick() => {
                if signalled.elapsed() > GIVE_UP_AFTER {
                    anyhow::bail!("no write was acknowledged {GIVE_UP_AFTER:?} after the signal");
                }
                let channel = survivors[attempt % survivors.len()].clone();
                attempt += 1;
                tokio::spawn(put_once(channel, acked_tx.clone()));
            }
            Some(seen) = seen_rx.recv() => match seen {
                Seen::TermBumped(at) => {
                    term_bumped = Some(term_bumped.map_or(at, |t: Instant| t.min(at)));
                }
                Seen::LeaderKnown(at) => {
                    leader_known = Some(leader_known.map_or(at, |t: Instant| t.min(at)));
                }
            },
            Some(result) = acked_rx.recv() => match result {
                Ok(at) => break at,
                Err(e) => {
                    failed_attempts += 1;
                    if errors.len() < 3 && !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            },
        }
    };
    for p in pollers {
        p.abort();
    }
    let ms = |at: Instant| at.saturating_duration_since(signalled).as_secs_f64() * 1000.0;
    Ok(Trial {
        signal: args.signal,
        stopped,
        old_term,
        term_bumped_ms: term_bumped.map(ms),
        leader_known_ms: leader_known.map(ms),
        write_acked_ms: ms(write_acked),
        failed_attempts,
        errors,
    })
}

/// The cluster as the trial finds it, before anything is stopped.
struct Before {
    /// Index of the leader in the endpoints.
    stopped: usize,
    leader: u64,
    old_term: u64,
    /// Connections to the other members, made beforehand so that connecting
    /// is not timed.
    survivors: Vec<tonic::transport::Channel>,
}

async fn before(
    urls: &[String],
    tls: &Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<Before> {
    // Each member's own connection; the survivors' are kept for the trial.
    let mut members = Vec::new();
    for url in urls {
        let channel = super::connect(url, tls).await?;
        let status = member_status(&channel)
            .await
            .with_context(|| format!("asking {url} for its status"))?;
        members.push((status, channel));
    }
    let leader = members[0].0.leader;
    if leader == 0 || members.iter().any(|(m, _)| m.leader != leader) {
        anyhow::bail!("the members do not agree on a leader yet");
    }
    let stopped = members
        .iter()
        .position(|(m, _)| m.id == leader)
        .context("the leader is not among --endpoints")?;
    let old_term = members.iter().map(|(m, _)| m.term).max().unwrap_or(0);
    let survivors = members
        .into_iter()
        .filter(|(m, _)| m.id != leader)
        .map(|(_, channel)| channel)
        .collect();
    Ok(Before {
        stopped,
        leader,
        old_term,
        survivors,
    })
}

enum Seen {
    TermBumped(Instant),
    LeaderKnown(Instant),
}

/// Report when this survivor first shows a higher term and a new leader.
async fn poll_status(
    channel: tonic::transport::Channel,
    old_leader: u64,
    old_term: u64,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let (mut bumped, mut known) = (false, false);
    while !(bumped && known) {
        if let Ok(status) = member_status(&channel).await {
            let (leader, term) = (status.leader, status.term);
            let now = Instant::now();
            if !bumped && term > old_term {
                bumped = true;
                let _ = seen.send(Seen::TermBumped(now));
            }
            if !known && leader != 0 && leader != old_leader {
                known = true;
                let _ = seen.send(Seen::LeaderKnown(now));
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// One put with a long deadline; reports when it was acknowledged.
async fn put_once(
    channel: tonic::transport::Channel,
    acked: mpsc::UnboundedSender<Result<Instant, String>>,
) {
    let mut request = tonic::Request::new(PutRequest {
        key: b"bench-failover".to_vec(),
        value: b"x".to_vec(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(10));
    let result = KvClient::new(channel).put(request).await;
    let _ = acked.send(
        result
            .map(|_| Instant::now())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
    );
}
