//! etcd v3 gRPC helpers: connecting the `etcd-client` crate to members, and
//! checking the gRPC status of a refused request.
//!
//! A member of a TLS cluster is reached with [`connect_with`] and the client
//! files the cluster hands out ([`ClientTls`]); `Cluster::client` and
//! `Member::client` pick the right one.
//!
//! etcd's errors are part of its API: clients match on the code and often on the
//! message ("etcdserver: ..."), so tests compare both exactly.

use crate::tls::ClientTls;
use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, ConnectOptions};
use std::fmt::Debug;
use std::time::Duration;

/// The per-request limit of [`connect`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `endpoints` (`127.0.0.1:PORT`). Connecting is lazy: an unreachable
/// endpoint fails the first request, not this call. Each request is limited to 10 s
/// so a hung member fails a test instead of stalling it.
pub async fn connect(endpoints: &[String]) -> Result<Client> {
    connect_with_timeout(endpoints, REQUEST_TIMEOUT).await
}

/// Like [`connect`] with a different per-request limit.
pub async fn connect_with_timeout(endpoints: &[String], timeout: Duration) -> Result<Client> {
    connect_with(endpoints, None, timeout).await
}

/// Like [`connect_with_timeout`], over TLS when `tls` is given: the endpoints
/// (`HOST:PORT`) are then dialed as `https://`, the server's certificate must
/// chain to `tls.ca`, and the client presents `tls.cert`.
pub async fn connect_with(
    endpoints: &[String],
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(timeout);
    if let Some(tls) = tls {
        options = options.with_tls(tls.options()?);
    }
    Client::connect(endpoints, Some(options))
        .await
        .with_context(|| match tls {
            None => format!("connecting etcd-client to {endpoints:?}"),
            Some(tls) => format!("connecting etcd-client to {endpoints:?} over TLS with {tls:?}"),
        })
}

/// The gRPC status inside an etcd-client error, if the server sent one.
pub fn grpc_status(err: &etcd_client::Error) -> Option<&tonic::Status> {
    match err {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        _ => None,
    }
}

/// Check that `result` is a gRPC error with exactly `code` and `message`.
pub fn expect_grpc_error<T: Debug>(
    result: std::result::Result<T, etcd_client::Error>,
    code: tonic::Code,
    message: &str,
) -> Result<()> {
    let err = match result {
        Ok(value) => bail!("expected {code:?} {message:?}, got success: {value:?}"),
        Err(err) => err,
    };
    let status = grpc_status(&err)
        .ok_or_else(|| anyhow!("expected gRPC {code:?} {message:?}, got non-gRPC error: {err}"))?;
    if status.code() != code || status.message() != message {
        bail!(
            "expected gRPC {code:?} {message:?}, got {:?} {:?}",
            status.code(),
            status.message()
        );
    }
    Ok(())
}
