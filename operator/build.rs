//! Compiles raftkv's Admin service definition (shared with the node) into a
//! tonic client, with a vendored protoc so a fresh machine needs nothing extra.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto = "../node/proto/raftkv/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&[proto], &["../node/proto"])?;
    Ok(())
}
