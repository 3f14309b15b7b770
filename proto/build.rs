//! Compiles the etcd v3 API and raftkv's own protos at build time.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs no
//! system protobuf compiler. Clients and servers are both generated: the node
//! serves every service and the operator and the tests are clients.
//!
//! The etcd messages also get protobuf-JSON serde impls (pbjson), in the form
//! etcd's gRPC gateway speaks: proto field names, bytes as base64, 64-bit
//! integers as strings, enums by name, default values left out.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let protos = [
        "etcd/api/mvccpb/kv.proto",
        "etcd/api/authpb/auth.proto",
        "etcd/api/etcdserverpb/rpc.proto",
        "etcd/api/v3election/v3election.proto",
        "etcd/api/v3lock/v3lock.proto",
        "raftkv/command.proto",
        "raftkv/peer.proto",
        "raftkv/admin.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&protos, &["."])?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3electionpb",
            ".v3lockpb",
        ])?;
    Ok(())
}
