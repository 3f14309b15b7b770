//! The three servers a member runs: etcd's services and raftkv's Admin on the
//! client port (with etcd's HTTP endpoints and JSON gateway beside them), the
//! peer service on the peer port, metrics and health on the HTTP port. Each
//! stops accepting when the stop signal flips.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

use super::Listeners;
use crate::api::admin::AdminService;
use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::peer::PeerService;
use crate::api::watch::WatchService;
use crate::auth::CERT_USER_METADATA;
use crate::config::ServeConfig;
use crate::node::Node;
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::raftkvpb::admin::admin_server::AdminServer;
use crate::proto::raftkvpb::peer::raft_peer_server::RaftPeerServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;

/// gRPC framing and header overhead allowed on top of `--max-request-bytes`,
/// so an oversized request reaches our check and gets etcd's error message.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The servers' tasks, for an ordered shutdown.
pub(super) struct Servers {
    pub client: JoinHandle<Result<(), tonic::transport::Error>>,
    pub peer: JoinHandle<Result<(), tonic::transport::Error>>,
    pub http: JoinHandle<std::io::Result<()>>,
}

pub(super) fn spawn(
    cfg: &ServeConfig,
    listeners: Listeners,
    node: &Arc<Node>,
    stop_rx: watch::Receiver<bool>,
) -> Servers {
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let max_msg = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let grpc = Routes::new(
        KvServer::new(KvService { node: node.clone() }).max_decoding_message_size(max_msg),
    )
    .add_service(ClusterServer::new(ClusterService { node: node.clone() }))
    .add_service(MaintenanceServer::new(MaintenanceService {
        node: node.clone(),
    }))
    .add_service(AdminServer::new(AdminService::new(node.clone())))
    .add_service(LeaseServer::new(LeaseService {
        node: node.clone(),
        min_ttl: (cfg.election_timeout * 3 / 2).div_ceil(1000) as i64,
    }))
    .add_service(LockServer::new(LockService { node: node.clone() }))
    .add_service(AuthServer::new(AuthService { node: node.clone() }))
    .add_service(ElectionServer::new(ElectionService { node: node.clone() }))
    .add_service(WatchServer::new(WatchService {
        node: node.clone(),
        progress_every: Duration::from_secs(cfg.watch_progress_notify_interval),
    }));
    // Every call to etcd's services is counted, the JSON gateway's included.
    let counted =
        axum::middleware::from_fn_with_state(node.clone(), super::grpc_metrics::count_calls);
    let grpc = Routes::from(grpc.into_axum_router().layer(counted));
    // HTTP/1.1 and HTTP/2 on the one port, as etcd: gRPC, and beside it the
    // probes, etcd's /health and /version, and the JSON gateway (crate::http),
    // all behind the layer that names a certificate's user.
    let gateway_body = max_msg * 2;
    let client_routes = Routes::from(crate::http::client_port(node.clone(), grpc, gateway_body));
    let client_server = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(tonic::service::InterceptorLayer::new(certificate_user))
        .add_routes(client_routes);
    let client = match listeners.client_tls {
        Some(tls) => tokio::spawn(client_server.serve_with_incoming_shutdown(
            crate::tls::incoming(listeners.client, tls),
            stopped(stop_rx.clone()),
        )),
        None => tokio::spawn(
            client_server
                .serve_with_incoming_shutdown(no_delay(listeners.client), stopped(stop_rx.clone())),
        ),
    };
    let peer_server = tonic::transport::Server::builder().add_service(
        RaftPeerServer::new(PeerService { node: node.clone() })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    );
    let peer = match listeners.peer_tls {
        Some(tls) => tokio::spawn(peer_server.serve_with_incoming_shutdown(
            crate::tls::incoming(listeners.peer, tls),
            stopped(stop_rx.clone()),
        )),
        None => tokio::spawn(
            peer_server
                .serve_with_incoming_shutdown(no_delay(listeners.peer), stopped(stop_rx.clone())),
        ),
    };
    let http_server = axum::serve(listeners.http, crate::http::router(node.clone()))
        .with_graceful_shutdown(stopped(stop_rx));

    Servers {
        client,
        peer,
        http: tokio::spawn(async move { http_server.await }),
    }
}

/// With `--client-cert-auth`, a verified client certificate's common name is
/// the caller's user when the call carries no token (as etcd). It reaches the
/// handlers as metadata that only this layer may set: whatever a client sent
/// under that name is dropped first.
fn certificate_user(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.metadata_mut().remove(CERT_USER_METADATA);
    let name = req
        .peer_certs()
        .and_then(|certs| certs.first().and_then(crate::tls::common_name));
    if let Some(value) = name.and_then(|n| n.parse().ok()) {
        req.metadata_mut().insert(CERT_USER_METADATA, value);
    }
    Ok(req)
}

/// Accepted connections with Nagle's algorithm off. tonic sets TCP_NODELAY only
/// on listeners it binds itself, not on an incoming stream handed to it; without
/// it a small response waits for the peer's delayed ACK (~40 ms on Linux), which
/// `raftkv bench` showed as a 44 ms p50 for a single client's serializable reads.
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!("cannot set TCP_NODELAY on a connection: {e}");
            }
        })
    })
}
