//! `raftkv-operator`: `run` starts the controller (with /metrics and /healthz)
//! once this replica leads (see `leader_election`),
//! `crd` prints the RaftCluster CRD YAML (what `crds/` holds).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use raftkv_operator::leader_election::LeaderElection;
use raftkv_operator::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "raftkv-operator",
    version,
    about = "Kubernetes operator for raftkv"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the RaftCluster CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller against the cluster in the kubeconfig / service account.
    Run {
        /// Where /metrics and /healthz are served.
        #[arg(
            long,
            env = "RAFTKV_OPERATOR_METRICS_ADDR",
            default_value = "0.0.0.0:8080"
        )]
        metrics_addr: SocketAddr,
        #[arg(long, env = "RAFTKV_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Run only this namespace's RaftClusters (a namespace-scoped install,
        /// whose rules are a Role there); every namespace's when unset.
        #[arg(long, env = "RAFTKV_OPERATOR_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!(
                "{}",
                raftkv_operator::crd::crd_yaml().context("serializing the CRD")?
            );
            Ok(())
        }
        Command::Run {
            metrics_addr,
            log_format,
            watch_namespace,
        } => {
            run(
                metrics_addr,
                log_format,
                watch_namespace.filter(|n| !n.is_empty()),
            )
            .await
        }
    }
}

async fn run(
    metrics_addr: SocketAddr,
    log_format: LogFormat,
    watch_namespace: Option<String>,
) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster service account)")?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding {metrics_addr} for /metrics"))?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get({
                let metrics = metrics.clone();
                move || async move { metrics.render() }
            }),
        );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "metrics server stopped");
        }
    });
    tracing::info!(
        %metrics_addr,
        watching = watch_namespace.as_deref().unwrap_or("every namespace"),
        "raftkv-operator starting"
    );
    // One replica reconciles (see leader_election): wait to hold the Lease.
    // The pod's name and this process's start: a container restarted in the
    // same pod is another candidate, not the holder it replaced.
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        host.trim().to_string()
    });
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let identity = format!("{pod}_{started:x}");
    let namespace = client.default_namespace().to_string();
    let election = LeaderElection::new(client.clone(), &namespace, identity);
    election.acquire().await;
    tokio::select! {
        () = raftkv_operator::controller::run(client, metrics, watch_namespace) => {
            election.release().await;
            Ok(())
        }
        () = election.renew_until_lost() => {
            // Another replica may be reconciling already: stop at once.
            anyhow::bail!("lost the leader Lease; exiting so a standby leads")
        }
    }
}
