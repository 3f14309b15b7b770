//! `raftkv serve`: opens the store, starts Raft, and serves the client, peer and
//! HTTP ports until SIGTERM/SIGINT, then shuts down in order.
//!
//! Ports are bound before anything else happens, so a port in use is reported at
//! once. A member initialized before keeps its state and ignores its bootstrap
//! flags; a new one initializes from `--initial-cluster` (every listed member
//! proposes the same membership) or waits to be added (`--join`).
//!
//! The steps, in order: [`Listeners::bind`], `open` (data dir, cluster id,
//! Raft, bootstrap, the member), `services` (the three servers), `background`
//! (the member's chores while it serves), then the shutdown below, on a
//! signal or once the member learns it was removed (`crate::removal`) or its
//! data dir replaced (`crate::incarnation`); then `serve` fails with the
//! reason.

mod background;
mod grpc_metrics;
mod open;
mod services;

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ServeConfig;
use crate::tls::Protocols;
use crate::tls::TlsFiles;

/// The client, peer and metrics ports, bound first, with the TLS settings
/// of the client and peer ports loaded (a certificate that does not load is
/// reported before anything is opened).
struct Listeners {
    client: TcpListener,
    peer: TcpListener,
    http: TcpListener,
    client_tls: Option<TlsAcceptor>,
    peer_tls: Option<TlsAcceptor>,
}

impl Listeners {
    async fn bind(cfg: &ServeConfig) -> anyhow::Result<Self> {
        let acceptor = |flag: &str, files: &Option<TlsFiles>, protocols: Protocols| {
            files
                .as_ref()
                .map(|files| crate::tls::acceptor(files, protocols))
                .transpose()
                .with_context(|| format!("--{flag}"))
        };
        Ok(Listeners {
            client_tls: acceptor("cert-file", &cfg.client_tls, Protocols::Http2AndHttp1)?,
            peer_tls: acceptor("peer-cert-file", &cfg.peer_tls, Protocols::Http2)?,
            client: bind("clients", cfg.listen_client).await?,
            peer: bind("peers", cfg.listen_peer).await?,
            http: bind("metrics", cfg.listen_metrics).await?,
        })
    }
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Run a member until a shutdown signal.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&cfg).await?;
    let opened = open::open(&cfg).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = services::spawn(&cfg, listeners, &opened.node, stop_rx.clone());
    background::spawn(&opened.node, cfg.advertise_client_url.clone(), stop_rx);

    tracing::info!(
        id = %format!("{:x}", cfg.id),
        name = %cfg.name,
        client = %cfg.listen_client,
        peer = %cfg.listen_peer,
        metrics = %cfg.listen_metrics,
        "raftkv member serving"
    );

    let removed = tokio::select! {
        _ = shutdown_signal() => None,
        reason = opened.node.removal().wait() => {
            Some(crate::removal::Removal::advice(cfg.id, &reason))
        }
        reason = opened.node.incarnation().wait() => {
            Some(crate::incarnation::advice(cfg.id, &reason))
        }
    };
    tracing::info!("shutting down");
    if removed.is_none() {
        opened.node.hand_over_leadership().await;
    }
    // Clients and the metrics port first (up to 5 s for in-flight requests),
    // then Raft, then the peer port Raft no longer needs, then the WAL.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = servers.client.await;
        let _ = servers.http.await;
    })
    .await;
    if let Err(e) = opened.raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    servers.peer.abort();
    opened
        .db
        .flush_wal(true)
        .context("syncing the database on shutdown")?;
    tracing::info!("stopped");
    match removed {
        // As etcd: a removed member exits, with the reason, rather than serve
        // on; so does one whose data dir is not the member's any more.
        Some(removed) => Err(removed.into()),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
