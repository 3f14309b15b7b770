//! Compiles the etcd v3 API and raftkv's own protos at build time.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs no
//! system protobuf compiler. Clients and servers are both generated: the node
//! serves every service and the operator and the tests are clients.

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
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["."])?;
    Ok(())
}
