//! Generated protobuf and gRPC code, compiled once for the node (servers and
//! peer clients), the operator (the Admin client) and the tests.
//!
//! The etcd packages keep etcd's names (`etcdserverpb`, `mvccpb`, ...) so that the
//! services are wire-compatible with etcd clients; `raftkvpb` holds raftkv's own
//! messages: the replicated command and the peer transport.

#![allow(clippy::all, missing_docs, non_camel_case_types)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
pub mod authpb {
    tonic::include_proto!("authpb");
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}
pub mod raftkvpb {
    tonic::include_proto!("raftkvpb");
    pub mod peer {
        tonic::include_proto!("raftkvpb.peer");
    }
    pub mod admin {
        tonic::include_proto!("raftkvpb.admin");
    }
}
