//! `google.bytestream.ByteStream`: downloads of clips, cuts and posters. `Read` streams a tenant's
//! artifact in 256 KiB chunks from `read_offset`; a dropped read resumes with the offset reached.
//! Partners never upload, so `Write` and `QueryWriteStatus` are UNIMPLEMENTED.

use super::{Api, caller};
use crate::app::artifacts::READ_CHUNK;
use crate::bytestream::byte_stream_server::ByteStream;
use crate::bytestream::*;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

#[tonic::async_trait]
impl ByteStream for Api {
    type ReadStream = BoxStream<'static, Result<ReadResponse, Status>>;

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let plan = self
            .app
            .open_read(&who, &r.resource_name, r.read_offset, r.read_limit)
            .await?;
        let app = self.app.clone();
        // Chunks are read one at a time as the client takes them: a slow reader holds no buffer.
        let stream = futures::stream::try_unfold(plan.start, move |pos| {
            let app = app.clone();
            let key = plan.key.clone();
            let end = plan.end;
            async move {
                if pos >= end {
                    return Ok(None);
                }
                let next = (pos + READ_CHUNK).min(end);
                let data = app.read_chunk(&key, pos..next).await?;
                Ok(Some((ReadResponse { data: data.into() }, next)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn write(
        &self,
        _req: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        Err(Status::unimplemented(
            "AIPROD artifacts are read-only: use Read",
        ))
    }

    async fn query_write_status(
        &self,
        _req: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        Err(Status::unimplemented(
            "AIPROD artifacts are read-only: use Read",
        ))
    }
}
