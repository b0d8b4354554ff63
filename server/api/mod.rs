//! The gRPC transport: one thin handler per RPC (decode and validate, call the use case, encode),
//! and the authentication layer.

pub mod admin;
pub mod auth;
pub mod bytestream;
pub mod convert;
pub mod cost;
pub mod gate;
pub mod icc;
pub mod metrics;
pub mod preset;
pub mod render;
pub mod serve;
pub mod socket;
pub mod transport;
pub mod wire;

use crate::app::{App, Caller};
use crate::error::Error;
use std::sync::Arc;
use tonic::{Request, Status};

/// The handlers' shared state.
#[derive(Clone)]
pub struct Api {
    pub app: Arc<App>,
    /// GetJob's answers by job (`render::JobWire`).
    pub job_wire: Arc<render::JobWireCache>,
}

impl Api {
    pub fn new(app: Arc<App>) -> Api {
        Api {
            app,
            job_wire: Arc::new(render::JobWireCache::new(4096)),
        }
    }
}

/// The tenant that the auth layer authenticated for this call.
pub fn caller<T>(req: &Request<T>) -> Result<Arc<Caller>, Status> {
    req.extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| {
            Status::from(Error::Unauthenticated {
                reason: "MISSING_API_KEY",
                message: "missing `authorization: Bearer <api key>` metadata".into(),
            })
        })
}

/// Maps a domain result into a tonic result.
pub fn reply<T>(r: crate::error::Result<T>) -> Result<tonic::Response<T>, Status> {
    r.map(tonic::Response::new).map_err(Status::from)
}
