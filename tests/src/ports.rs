//! Free TCP ports on 127.0.0.1 (and fixed ports on a member's own address).
//!
//! Every member needs a client, a peer and a metrics port, and tests of one binary
//! run in parallel, so fixed ports would collide. The kernel picks a free port when
//! we bind port 0; we release it at once and hand the number to `raftkv`. Another
//! process could grab it in between, but that window is small. Numbers handed out
//! by this test process are remembered, so two members never get the same one.
//!
//! A member in its own network namespace (the fault campaign's partitions, see
//! `fault::netns`) has an address of its own, so it gets etcd's fixed ports there.
//!
//! A member of a TLS cluster ([`crate::ClusterOptions::tls`]) serves its client
//! and peer ports over TLS, so their URLs are `https://` ([`Ports::with_https`]);
//! the metrics port stays `http://`.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// The address and three ports of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// 127.0.0.1, or the member's own address in its network namespace.
    pub host: Ipv4Addr,
    pub client: u16,
    pub peer: u16,
    pub metrics: u16,
    /// Whether the client and peer URLs are `https://` (see [`Ports::with_https`]).
    pub https: bool,
}

impl Ports {
    /// Three fresh ports on 127.0.0.1.
    pub fn allocate() -> Result<Ports> {
        Ok(Ports {
            host: Ipv4Addr::LOCALHOST,
            client: free_port()?,
            peer: free_port()?,
            metrics: free_port()?,
            https: false,
        })
    }

    /// etcd's ports (2379, 2380, 2381) on `host`, an address no other member uses.
    pub fn fixed_on(host: Ipv4Addr) -> Ports {
        Ports {
            host,
            client: 2379,
            peer: 2380,
            metrics: 2381,
            https: false,
        }
    }

    /// The same ports with `https://` client and peer URLs when `https` is set.
    pub fn with_https(self, https: bool) -> Ports {
        Ports { https, ..self }
    }

    /// `https` or `http`: the scheme of the client and peer URLs.
    pub fn scheme(&self) -> &'static str {
        match self.https {
            true => "https",
            false => "http",
        }
    }

    /// `HOST:PORT` of the client (gRPC) listener, as etcdctl and etcd-client take it.
    pub fn client_endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client)
    }

    /// `http://HOST:PORT` of the client listener (`https://` in a TLS cluster).
    pub fn client_url(&self) -> String {
        format!("{}://{}:{}", self.scheme(), self.host, self.client)
    }

    /// `http://HOST:PORT` of the peer listener (`https://` in a TLS cluster).
    pub fn peer_url(&self) -> String {
        format!("{}://{}:{}", self.scheme(), self.host, self.peer)
    }

    /// `HOST:PORT` of the peer (Raft gRPC) listener.
    pub fn peer_endpoint(&self) -> String {
        format!("{}:{}", self.host, self.peer)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}:{}", self.host, self.metrics)
    }

    /// `HOST:PORT` of the metrics (HTTP) listener.
    pub fn metrics_addr(&self) -> String {
        format!("{}:{}", self.host, self.metrics)
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
