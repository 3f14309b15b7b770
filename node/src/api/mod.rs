//! The etcd v3 API services a member serves on its client port.

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
pub mod validate;
pub mod watch;
