//! Generates the client code of `aiprod.v1` from the repository's protos with the pure-Rust
//! `protox` compiler: no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut protos = std::fs::read_dir(root.join("aiprod/v1"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<PathBuf>, _>>()?;
    protos.push(root.join("google/bytestream/bytestream.proto"));
    let fds = protox::compile(&protos, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
