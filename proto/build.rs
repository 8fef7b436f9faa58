//! Generates the gRPC code from `proto/*.proto` with a vendored `protoc`, so building needs
//! no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/chunk.proto",
        "proto/meta.proto",
        "proto/raft.proto",
        "proto/etcd_kv.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Shard payloads are large; `Bytes` lets them move through tonic without copies.
        .bytes(".")
        .compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
