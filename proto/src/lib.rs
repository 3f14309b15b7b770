//! Generated protobuf and gRPC code, compiled once for the node (servers and
//! peer clients), the operator (the Admin client) and the tests.
//!
//! The etcd packages keep etcd's names (`etcdserverpb`, `mvccpb`, ...) so that the
//! services are wire-compatible with etcd clients; `raftkvpb` holds raftkv's own
//! messages: the replicated command and the peer transport.
//!
//! The etcd packages' messages also implement serde's traits in protobuf's
//! JSON form (see build.rs), for the JSON gateway on the client port.

#![allow(clippy::all, missing_docs, non_camel_case_types)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
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
