//! Compiles `proto/` with the pure-Rust `protox` compiler (no system `protoc`) into server and
//! client code, and writes the encoded descriptor set that gRPC reflection serves.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds the migrations at compile time: a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let mut protos = std::fs::read_dir("proto/aiprod/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<PathBuf>, _>>()?;
    // Artifacts are downloaded with Google's ByteStream API (served by the server, used by the SDK).
    protos.push(PathBuf::from("proto/google/bytestream/bytestream.proto"));
    let fds = protox::compile(&protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("aiprod_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
