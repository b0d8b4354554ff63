//! Rust SDK for AIPROD.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("aiprod.v1");
}
