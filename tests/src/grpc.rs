//! etcd v3 gRPC helpers: connecting the `etcd-client` crate to members, and
//! checking the gRPC status of a refused request.
//!
//! etcd's errors are part of its API: clients match on the code and often on the
//! message ("etcdserver: ..."), so tests compare both exactly.

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, ConnectOptions};
use std::fmt::Debug;
use std::time::Duration;

/// A client for `endpoints` (`127.0.0.1:PORT`). Connecting is lazy: an unreachable
/// endpoint fails the first request, not this call. Each request is limited to 10 s
/// so a hung member fails a test instead of stalling it.
pub async fn connect(endpoints: &[String]) -> Result<Client> {
    connect_with_timeout(endpoints, Duration::from_secs(10)).await
}

/// Like [`connect`] with a different per-request limit.
pub async fn connect_with_timeout(endpoints: &[String], timeout: Duration) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(timeout);
    Client::connect(endpoints, Some(options))
        .await
        .with_context(|| format!("connecting etcd-client to {endpoints:?}"))
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
