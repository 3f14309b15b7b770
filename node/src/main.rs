//! `raftkv`: run a member (`serve`), a local cluster (`dev`), or talk to one.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::Subcommand;
use raftkv_node::cli::client;
use raftkv_node::cli::client::Endpoints;
use raftkv_node::cli::dev;
use raftkv_node::config::LogFormat;
use raftkv_node::config::ServeArgs;
use raftkv_node::config::ServeConfig;

/// mimalloc instead of glibc's malloc for Rust's allocations: see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A Raft-replicated key-value store that speaks the etcd v3 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a member (with no flags: a single-member cluster on 127.0.0.1:2379).
    Serve(Box<ServeArgs>),
    /// Run a local cluster of member processes; Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Put a key.
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease (hex id, as `lease grant` prints it).
        #[arg(long)]
        lease: Option<String>,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Watch a key (or a prefix) and print its events, until Ctrl-C.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (history first, then live events).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print each key's previous value too.
        #[arg(long)]
        prev_kv: bool,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Acquire a distributed lock; hold it until Ctrl-C, or while COMMAND runs
    /// (put flags such as --endpoints before NAME: what follows is the command).
    Lock {
        name: String,
        /// A command to run while holding the lock.
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Campaign to lead an election with PROPOSAL (until Ctrl-C), or watch its
    /// leaders with --listen.
    Elect {
        name: String,
        proposal: Option<String>,
        #[arg(long, short = 'l')]
        listen: bool,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Grant, revoke, keep alive or inspect leases.
    Lease {
        #[command(subcommand)]
        action: raftkv_node::cli::lease::LeaseCmd,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Get a key (or all keys with a prefix).
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Read at this store revision (0 = latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Delete a key (or all keys with a prefix); prints how many were deleted.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// List, add, promote or remove members.
    Member {
        #[command(subcommand)]
        action: MemberCmd,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Make a member started with `--join` the first member of a new cluster
    /// (what the operator does once per cluster; safe to repeat).
    Initialize {
        /// Mixed into the cluster id; the same token makes a repeat a no-op.
        #[arg(long)]
        cluster_token: String,
        /// Start from this backup (a file name in the member's backup dir).
        #[arg(long)]
        restore_from_backup: Option<String>,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Backups kept by a member in its --backup-dir (Admin.SaveBackup & co).
    Backup {
        #[command(subcommand)]
        action: raftkv_node::cli::backup::BackupCmd,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Raft status of every member of the cluster.
    Status {
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Backups (save, status, restore) and Raft snapshots on demand (now).
    Snapshot {
        #[command(subcommand)]
        action: raftkv_node::cli::snapshot::SnapshotCmd,
    },
    /// Solo recovery of a stopped member whose cluster lost quorum.
    Recover(raftkv_node::cli::recover::RecoverArgs),
    /// Wipe a stopped member's state so it can be added again as a new member.
    Reset(raftkv_node::cli::recover::ResetArgs),
    /// Load a cluster (raftkv or etcd) through the etcd v3 API; report
    /// throughput and latency.
    Bench(raftkv_node::cli::bench::BenchArgs),
    /// One failover trial (raftkv or etcd): stop the leader, time until a
    /// survivor acknowledges a write. bench/failover.sh repeats it.
    BenchFailover(raftkv_node::cli::bench::failover::FailoverArgs),
}

#[derive(Subcommand)]
enum MemberCmd {
    List,
    /// Add a member (it then starts with `raftkv serve --join --id ID`).
    Add {
        name: String,
        #[arg(long)]
        peer_urls: String,
        /// Add as a non-voting learner (promote it once caught up).
        #[arg(long)]
        learner: bool,
        /// Choose the member id (decimal) instead of deriving it from the peer URL.
        #[arg(long)]
        id: Option<u64>,
    },
    /// Promote a caught-up learner to voter (ID in hex, as `member list` shows).
    Promote {
        id: String,
    },
    /// Remove a member (ID in hex).
    Remove {
        id: String,
    },
    /// The first endpoint's own status: role, term, leader, epoch, indexes.
    Status,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line, not clap's multi-line report: the first line names the problem.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("raftkv: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let command = cli
        .command
        .unwrap_or_else(|| Cmd::Serve(Box::new(default_serve_args())));
    // Flag values are checked before anything starts: a bad value is a usage
    // error (exit 2), like a malformed flag.
    let serve = match &command {
        Cmd::Serve(args) => match ServeConfig::from_args((**args).clone()) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                eprintln!("raftkv: {}", one_line(&e));
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftkv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match serve {
        Some(cfg) => {
            init_logs(cfg.log_format);
            runtime.block_on(raftkv_node::server::serve(cfg))
        }
        None => runtime.block_on(run(command)),
    };
    // Every task goes with the runtime, and with them the log store's last
    // handles; then the database closes on its sync thread, which is waited
    // for before the process exits (see `join_sync_threads`).
    drop(runtime);
    if !raftkv_node::store::log_store::join_sync_threads(Duration::from_secs(10)) {
        eprintln!("raftkv: the database did not close within 10 s; exiting anyway");
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftkv: {}", one_line(&e));
            if e.downcast_ref::<raftkv_node::errors::NoLongerMember>()
                .is_some()
            {
                ExitCode::from(raftkv_node::errors::NO_LONGER_MEMBER_EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// The client-side commands (`serve` is started by `main` itself).
async fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Serve(_) => anyhow::bail!("serve is started by main"),
        Cmd::Dev(args) => dev::run(args).await,
        Cmd::Put {
            key,
            value,
            lease,
            ep,
        } => client::put(&ep, key, value, lease).await,
        Cmd::Watch {
            key,
            prefix,
            rev,
            prev_kv,
            ep,
        } => raftkv_node::cli::watch::run(&ep, key, prefix, rev, prev_kv).await,
        Cmd::Lease { action, ep } => raftkv_node::cli::lease::run(&ep, action).await,
        Cmd::Lock { name, command, ep } => {
            raftkv_node::cli::lock_elect::lock(&ep, name, command).await
        }
        Cmd::Elect {
            name,
            proposal,
            listen,
            ep,
        } => raftkv_node::cli::lock_elect::elect(&ep, name, proposal, listen).await,
        Cmd::Get {
            key,
            prefix,
            rev,
            ep,
        } => client::get(&ep, key, prefix, rev).await,
        Cmd::Del { key, prefix, ep } => client::del(&ep, key, prefix).await,
        Cmd::Member { action, ep } => match action {
            MemberCmd::List => client::member_list(&ep).await,
            MemberCmd::Add {
                name,
                peer_urls,
                learner,
                id,
            } => client::member_add(&ep, name, peer_urls, learner, id).await,
            MemberCmd::Promote { id } => client::member_promote(&ep, &id).await,
            MemberCmd::Remove { id } => client::member_remove(&ep, &id).await,
            MemberCmd::Status => client::member_status(&ep).await,
        },
        Cmd::Initialize {
            cluster_token,
            restore_from_backup,
            ep,
        } => client::initialize(&ep, cluster_token, restore_from_backup).await,
        Cmd::Backup { action, ep } => raftkv_node::cli::backup::run(&ep, action).await,
        Cmd::Status { ep } => client::status(&ep).await,
        Cmd::Snapshot { action } => raftkv_node::cli::snapshot::run(action).await,
        Cmd::Recover(args) => raftkv_node::cli::recover::recover(args).await,
        Cmd::Reset(args) => raftkv_node::cli::recover::reset(args),
        Cmd::Bench(args) => raftkv_node::cli::bench::run(args).await,
        Cmd::BenchFailover(args) => raftkv_node::cli::bench::failover::run(args).await,
    }
}

fn default_serve_args() -> ServeArgs {
    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        args: ServeArgs,
    }
    Only::parse_from(["raftkv"]).args
}
