//! Multi-process test harness for raftkv.
//!
//! The integration tests in `tests/tests/` start real `raftkv` processes on
//! 127.0.0.1 and talk to them the way operators and applications do: the etcd v3
//! gRPC API through the `etcd-client` crate, the real `etcdctl`, and the `raftkv`
//! client subcommands. Nothing here links the node's code: what is tested is the
//! binary and the interface fixed in `docs/node-interface.md`.
//!
//! The `raftkv` binary must be built before the tests run:
//!
//! ```text
//! cargo build -p raftkv-node --bin raftkv && cargo test -p raftkv-tests
//! ```
//!
//! A typical test:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use raftkv_tests::Cluster;
//!
//! let mut cluster = Cluster::start(3).await?; // returns once every member is ready
//! let leader = cluster.wait_leader().await?;
//! let mut client = cluster.client().await?;
//! client.put("k", "v", None).await?;
//! cluster.member_mut(leader).kill9()?;
//! # Ok(())
//! # }
//! ```

/// The repository's root (the parent of `tests/`), for the charts, CRDs and
/// scripts the tests use as they are checked in.
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

pub mod admin;
pub mod auth;
pub mod binaries;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod cluster_waits;
pub mod command;
pub mod control_plane;
pub mod curl;
pub mod etcdctl;
pub mod fault;
pub mod files;
pub mod grpc;
pub mod http;
pub mod k8s;
pub mod kv;
pub mod layering;
pub mod member;
pub mod pod_set;
pub mod ports;
pub mod tls;
pub mod tls_probe;
pub mod wait;

pub use cli::RaftkvCli;
pub use cluster::{Cluster, ClusterOptions};
pub use command::CmdOutput;
pub use etcdctl::Etcdctl;
pub use grpc::{connect, expect_grpc_error, grpc_status};
pub use member::Member;
pub use ports::Ports;
