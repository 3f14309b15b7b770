//! The `raftkv` command's client side: etcd-style commands against a cluster,
//! and `dev`, a local cluster in one command.

pub mod backup;
pub mod bench;
pub mod client;
pub mod dev;
mod dev_certs;
pub mod lease;
pub mod lock_elect;
pub mod recover;
pub mod snapshot;
pub mod watch;
