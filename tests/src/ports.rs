//! Free TCP ports on 127.0.0.1.
//!
//! Every member needs a client, a peer and a metrics port, and tests of one binary
//! run in parallel, so fixed ports would collide. The kernel picks a free port when
//! we bind port 0; we release it at once and hand the number to `raftkv`. Another
//! process could grab it in between, but that window is small. Numbers handed out
//! by this test process are remembered, so two members never get the same one.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// The three ports of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
    pub metrics: u16,
}

impl Ports {
    /// Three fresh ports.
    pub fn allocate() -> Result<Ports> {
        Ok(Ports {
            client: free_port()?,
            peer: free_port()?,
            metrics: free_port()?,
        })
    }

    /// `127.0.0.1:PORT` of the client (gRPC) listener, as etcdctl and etcd-client take it.
    pub fn client_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }

    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics)
    }

    /// `127.0.0.1:PORT` of the metrics (HTTP) listener.
    pub fn metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", self.metrics)
    }
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has not
/// handed out before.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener.local_addr()?.port();
        let mut seen = handed_out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.insert(port) {
            return Ok(port);
        }
    }
    bail!("no fresh free port on 127.0.0.1 after 100 tries")
}
