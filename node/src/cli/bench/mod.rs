//! `raftkv bench`: load a cluster through the etcd v3 API and report throughput
//! and latency. It speaks only etcd's API, so the same command measures etcd,
//! which is how bench/compare-etcd.sh compares the two side by side.
//!
//! Like etcd's own benchmark tool: N gRPC connections (spread round-robin over
//! the endpoints), M concurrent clients sharing them, each client sending one
//! request at a time, until a total number of requests or a duration is reached.

pub mod failover;
mod latency;
mod report;
mod target;
mod workload;

use std::io::IsTerminal;
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;

use latency::Samples;
pub use report::Report;
use workload::Client;
use workload::Outcome;
use workload::Shape;
pub use workload::Workload;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to send.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Comma-separated client endpoints; connections are spread over them.
    #[arg(long, env = "RAFTKV_ENDPOINTS", default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// etcdctl's TLS flags, for members serving TLS.
    #[command(flatten)]
    pub tls: crate::cli::client::ClientTlsFiles,
    /// gRPC connections.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients (each sends one request at a time).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Total requests to send (ignored with --duration).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Run for this many seconds instead of a fixed number of requests.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Number of distinct keys the requests pick from at random.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    /// Key size in bytes (etcd's benchmark default).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes (etcd's benchmark default).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Reads are serializable (served by the member, no read index).
    #[arg(long)]
    pub serializable: bool,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Which members to send to: all endpoints given, or only the leader's
    /// or only followers' (found through Maintenance.Status).
    #[arg(long, value_enum, default_value = "all")]
    pub target: target::Target,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = bench(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

/// When the run stops.
#[derive(Clone, Copy)]
enum Stop {
    After(u64),
    At(Instant),
}

/// Counters shared by the clients and the progress line.
#[derive(Default)]
struct Progress {
    /// Requests handed out (only with a total).
    issued: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
}

/// What one client measured.
#[derive(Default)]
struct ClientResult {
    samples: Samples,
    cas_failed: u64,
    error_samples: Vec<String>,
}

pub async fn bench(args: &BenchArgs) -> anyhow::Result<Report> {
    let shape = Shape {
        key_size: args.key_size,
        value_size: args.value_size,
        key_space: args.key_space,
        serializable: args.serializable,
        read_ratio: args.read_ratio,
    };
    shape.validate()?;
    if args.conns == 0 || args.clients == 0 {
        anyhow::bail!("--conns and --clients must be at least 1");
    }
    let tls = args.tls.config()?;
    let endpoints = crate::cli::client::endpoint_urls(&args.endpoints, tls.is_some());
    if endpoints.is_empty() {
        anyhow::bail!("--endpoints is empty");
    }
    let term_before = target::highest_term(&endpoints, &tls).await;
    let all_endpoints = endpoints.clone();
    let endpoints = target::select(endpoints, args.target, &tls).await?;
    let mut channels = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        channels.push(connect(&endpoints[i % endpoints.len()], &tls).await?);
    }

    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let stop = match args.duration {
        Some(secs) if secs > 0.0 => Stop::At(started + Duration::from_secs_f64(secs)),
        Some(_) => anyhow::bail!("--duration must be positive"),
        None => Stop::After(args.total),
    };
    let per_client = match stop {
        Stop::After(total) => (total as usize / args.clients) + 1,
        Stop::At(_) => 1024,
    };
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let client = Client::new(channels[i % channels.len()].clone(), shape.clone());
        let progress = progress.clone();
        let workload = args.workload;
        tasks.push(tokio::spawn(async move {
            run_client(client, workload, stop, progress, per_client).await
        }));
    }
    let ticker = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(progress.clone(), stop, started)));

    let mut samples = Samples::with_capacity(per_client * args.clients);
    let mut cas_failed = 0;
    let mut error_samples: Vec<String> = Vec::new();
    for task in tasks {
        let r = task.await.context("a benchmark client panicked")?;
        samples.merge(r.samples);
        cas_failed += r.cas_failed;
        for e in r.error_samples {
            if error_samples.len() < 5 && !error_samples.contains(&e) {
                error_samples.push(e);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
        eprint!("\r\x1b[2K");
    }
    let requests = samples.len() as u64;
    let term_after = target::highest_term(&all_endpoints, &tls).await;
    Ok(Report {
        workload: args.workload,
        serializable: args.serializable,
        read_ratio: (args.workload == Workload::Mixed).then_some(args.read_ratio),
        endpoints,
        conns: args.conns,
        clients: args.clients,
        key_size: args.key_size,
        value_size: args.value_size,
        key_space: args.key_space,
        requests,
        errors: progress.errors.load(Ordering::Relaxed),
        cas_failed,
        seconds,
        throughput: requests as f64 / seconds,
        latency_ms: samples.summary(),
        error_samples,
        elections: term_after
            .zip(term_before)
            .map(|(after, before)| after.saturating_sub(before)),
    })
}

async fn run_client(
    mut client: Client,
    workload: Workload,
    stop: Stop,
    progress: Arc<Progress>,
    expected: usize,
) -> ClientResult {
    let mut result = ClientResult {
        samples: Samples::with_capacity(expected),
        ..Default::default()
    };
    loop {
        let more = match stop {
            Stop::After(total) => progress.issued.fetch_add(1, Ordering::Relaxed) < total,
            Stop::At(at) => Instant::now() < at,
        };
        if !more {
            return result;
        }
        let sent = Instant::now();
        match client.one(workload).await {
            Ok(outcome) => {
                result.samples.record(sent.elapsed());
                if outcome == Outcome::CasFailed {
                    result.cas_failed += 1;
                }
            }
            Err(status) => {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                if result.error_samples.len() < 5 {
                    result
                        .error_samples
                        .push(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A live progress line on stderr (only shown when stderr is a terminal).
async fn show_progress(progress: Arc<Progress>, stop: Stop, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let done = progress.done.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let of = match stop {
            Stop::After(total) => format!("{done}/{total} requests"),
            Stop::At(at) => format!(
                "{done} requests, {:.0} s left",
                at.saturating_duration_since(Instant::now()).as_secs_f64()
            ),
        };
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        eprint!("\r\x1b[2K{of}, {rate:.0} req/s, {errors} errors");
        let _ = std::io::stderr().flush();
    }
}

/// One gRPC connection of its own (a `Channel` is one HTTP/2 connection).
async fn connect(url: &str, tls: &Option<ClientTlsConfig>) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad endpoint {url}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .with_context(|| format!("TLS for {url}"))?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}
