//! AIPROD server library.
#![forbid(unsafe_code)]

/// Generated protobuf and gRPC code of `aiprod.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("aiprod.v1");
    /// Encoded descriptor set of every `aiprod.v1` file, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("aiprod_descriptor");
}
