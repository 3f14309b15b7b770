//! A tiny HTTP/1.1 GET for the metrics listener (`/readyz`, `/healthz`, `/metrics`).
//!
//! Readiness polling needs only a status code, so a raw request over a tokio
//! `TcpStream` is enough and spares the tests an HTTP client crate.

use anyhow::{bail, Context, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back: the status code and the raw body (not de-chunked).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET path` from `addr` (`127.0.0.1:PORT`), with a 5 s limit on the whole exchange.
pub async fn get(addr: &str, path: &str) -> Result<HttpResponse> {
    tokio::time::timeout(Duration::from_secs(5), get_inner(addr, path))
        .await
        .with_context(|| format!("GET http://{addr}{path} took over 5s"))?
}

async fn get_inner(addr: &str, path: &str) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr} for GET {path}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .with_context(|| format!("reading the answer to GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status_line = text.lines().next().unwrap_or_default();
    // "HTTP/1.1 200 OK"
    let Some(status) = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
    else {
        bail!("GET http://{addr}{path}: no HTTP status line in {status_line:?}");
    };
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok(HttpResponse { status, body })
}

/// Wait up to `limit` until `GET path` from `addr` answers with a body that
/// contains `needle` (a member saying why it is not ready); that body.
pub async fn until_body_contains(
    addr: &str,
    path: &str,
    needle: &str,
    limit: Duration,
) -> Result<String> {
    crate::wait::until(
        limit,
        format!("GET {path} on {addr} to say {needle:?}"),
        || async {
            let body = get(addr, path).await?.body;
            Ok(body.contains(needle).then_some(body))
        },
    )
    .await
}
