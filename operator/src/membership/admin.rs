//! raftkv's Admin gRPC service (proto/raftkv/admin.proto, compiled once in the
//! `raftkv-proto` crate): member status, Initialize, and AddMember with a
//! chosen id.

pub use raftkv_proto::raftkvpb::admin::*;
