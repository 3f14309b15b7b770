//! raftkv's Admin gRPC service (node/proto/raftkv/admin.proto), generated at
//! build time: member status, Initialize, and AddMember with a chosen id.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("raftkvpb.admin");
