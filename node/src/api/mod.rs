//! The gRPC services a member serves: the etcd v3 API on its client port
//! (one file per service; `watch_stream` is one Watch stream), raftkv's Admin
//! service, and `peer`, the peer port's service other members call.

pub mod admin;
pub mod admin_backup;
pub mod auth;
pub mod cluster;
pub mod election;
pub mod key_queue;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod peer;
pub mod watch;
pub mod watch_stream;
