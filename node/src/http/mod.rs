//! HTTP on a member's ports.
//!
//! The metrics URL serves `/healthz` (or `/livez`), `/readyz` and `/metrics`.
//! The client URL serves HTTP beside gRPC, as etcd's does: the same
//! `/livez`, `/readyz` and `/metrics`, etcd's `/health` and `/version`
//! (`etcd_health`), and etcd's JSON gateway under `/v3/` (`gateway`).
//!
//! Liveness means the process serves requests. Readiness means the member is
//! useful to clients: it is in the membership, knows a leader and has applied
//! everything it knows is committed (so a Kubernetes Service only routes to
//! members that answer without a long catch-up).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::metrics::RaftGauges;
use crate::node::Node;

mod etcd_health;
mod gateway;

/// The metrics URL's routes.
pub fn router(node: Arc<Node>) -> Router {
    probes()
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(node)
}

/// The client URL's HTTP routes beside `grpc`, the member's gRPC services,
/// which the JSON gateway calls. `max_body` bounds a gateway request.
pub fn client_port(node: Arc<Node>, grpc: tonic::service::Routes, max_body: usize) -> Router {
    let http = probes()
        .route("/health", get(etcd_health::health))
        .route("/version", get(etcd_health::version))
        .with_state(node);
    grpc.clone()
        .into_axum_router()
        .merge(http)
        .merge(gateway::routes(grpc, max_body))
}

/// A JSON answer, the form of etcd's HTTP endpoints and gateway.
fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// What both URLs serve: liveness, readiness and metrics.
fn probes() -> Router<Arc<Node>> {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Why the member is not ready, or `None` when it is.
pub fn not_ready_reason(node: &Node) -> Option<String> {
    if let Some(why) = node.epoch().fenced() {
        return Some(format!("fenced: {why}"));
    }
    let m = node.raft_metrics();
    let membership = m.membership_config.membership();
    if membership.get_node(&node.id()).is_none() {
        if let Some(why) = node
            .incarnation()
            .awaiting()
            .filter(|_| node.cluster_id() == 0)
        {
            return Some(format!("not a member: {why}"));
        }
        return Some("not a member of the cluster (yet)".into());
    }
    let Some((leader, _)) = node.leader() else {
        return Some("no leader".into());
    };
    let committed = m.local_committed.map_or(0, |c| c.index);
    let applied = m.last_applied.map_or(0, |a| a.index);
    // A leader's applied index trails its commit index only by the entries it
    // is applying right now; that is not catching up.
    if leader != node.id() && applied < committed {
        return Some(format!("catching up: applied {applied} of {committed}"));
    }
    None
}

async fn readyz(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    match not_ready_reason(&node) {
        None => (StatusCode::OK, "ok\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> String {
    let m = node.raft_metrics();
    let gauges = RaftGauges {
        term: m.current_term,
        has_leader: node.leader().is_some(),
        is_leader: node.leader().is_some_and(|(l, _)| l == node.id()),
        committed: m.local_committed.map_or(0, |c| c.index),
        applied: m.last_applied.map_or(0, |a| a.index),
        last_log: m.last_log_index.unwrap_or(0),
        snapshot: m.snapshot.map_or(0, |s| s.index),
        purged: m.purged.map_or(0, |p| p.index),
        db_size: node.disk_size(),
        quota: node.quota_bytes(),
    };
    node.metrics().render(&gauges)
}
