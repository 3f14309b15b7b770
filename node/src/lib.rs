//! raftkv node: a Raft-replicated key-value store that speaks the etcd v3 API.
//!
//! Layout: `store` (RocksDB: log, MVCC state machine, snapshots), `raft` (openraft
//! types), `transport` (the peer transport's client side), `node` (the member: proposals, reads and read
//! indexes, forwarding, what the leader alone does, lease expiry, and every
//! question or chore the handlers bring to its store), `api` (etcd services,
//! which ask the member and never open the database), `server` (wiring and
//! lifecycle), `cli` (the `raftkv` command's client side), `tls` (certificates
//! for the client and peer ports, re-read when their files change).

pub mod api;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod epoch;
pub mod errors;
pub mod http;
pub mod incarnation;
pub mod lease;
pub mod metrics;
pub mod node;
/// The generated etcd and raftkv protobuf code (the `raftkv-proto` crate).
pub use raftkv_proto as proto;
pub mod raft;
pub mod recovery;
pub mod removal;
pub mod restart;
pub mod server;
pub mod store;
pub mod tls;
pub mod transport;
pub mod watch;
