//! Responses encoded once and sent as they are, and the fast lane that serves them before routing:
//! GetJob and EstimateCost answer a cached encoding through a codec whose messages out are
//! already-encoded protobuf bytes (requests are decoded with prost as usual); WatchJob streams
//! events framed once per commit (`FramedBody`), so a commit watched by many streams is converted,
//! encoded and framed once, not once per stream.

use super::Api;
use crate::app::Caller;
use bytes::{BufMut, Bytes};
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// Decodes `Req` with prost; encodes messages that are already protobuf bytes.
pub struct WireCodec<Req> {
    buffer_size: usize,
    request: PhantomData<fn() -> Req>,
}

impl<Req> WireCodec<Req> {
    /// `buffer_size`: the initial size of a call's encoding buffer (tonic allocates it when the
    /// response starts; 8 KiB by default).
    pub fn new(buffer_size: usize) -> Self {
        WireCodec {
            buffer_size,
            request: PhantomData,
        }
    }
}

impl<Req: prost::Message + Default + Send + 'static> Codec for WireCodec<Req> {
    type Encode = Bytes;
    type Decode = Req;
    type Encoder = BytesEncoder;
    type Decoder = RequestDecoder<Req>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder {
            buffer_size: self.buffer_size,
        }
    }

    fn decoder(&mut self) -> RequestDecoder<Req> {
        RequestDecoder(ProstDecoder::default())
    }
}

/// Copies an encoded message into the frame.
pub struct BytesEncoder {
    buffer_size: usize,
}

/// tonic's default: a response body yields once this much is buffered.
const YIELD_THRESHOLD: usize = 32 * 1024;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(self.buffer_size, YIELD_THRESHOLD)
    }
}

/// prost's decoder (the same errors as the generated services, so the transport layer's
/// rewriting of undecodable requests applies).
pub struct RequestDecoder<Req>(ProstDecoder<Req>);

impl<Req: prost::Message + Default> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        self.0.decode(src)
    }
}

/// A message's protobuf encoding.
pub fn encode(message: &impl prost::Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Answers one method's calls with already-encoded messages (the API, the maximum request size,
/// the call).
pub type Serve = fn(Api, usize, http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>;

/// The methods answered before routing, by path: the `gate` layer hands their calls straight to
/// their `Serve` (through [`WireCodec`]), skipping the router and the generated service, which
/// still exist for every other method (and answer these the same way, if reached).
#[derive(Clone)]
pub struct FastLane {
    api: Api,
    max_decoding_message_size: usize,
    routes: Vec<(&'static str, Serve)>,
}

impl FastLane {
    pub fn new(
        api: Api,
        max_decoding_message_size: usize,
        routes: Vec<(&'static str, Serve)>,
    ) -> FastLane {
        FastLane {
            api,
            max_decoding_message_size,
            routes,
        }
    }

    /// The answer of `path`'s method, if it is in the lane.
    pub fn route(&self, path: &str) -> Option<Serve> {
        self.routes
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, serve)| *serve)
    }

    /// Answers a call routed to `serve`.
    pub fn serve(
        &self,
        serve: Serve,
        req: http::Request<Body>,
    ) -> BoxFuture<'static, http::Response<Body>> {
        serve(self.api.clone(), self.max_decoding_message_size, req)
    }
}

/// A message framed for gRPC (uncompressed flag, big-endian length, the message), ready to be
/// sent as a response body's data.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = bytes::BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    frame.freeze()
}

/// The caller (from the gate) and the one request message of a call, decoded as tonic's
/// generated services do (same errors, so the gate's rewriting of undecodable requests applies).
pub async fn unary_request<Req: prost::Message + Default + Send + 'static>(
    req: http::Request<Body>,
    max_decoding_message_size: usize,
) -> Result<(Arc<Caller>, Req), Status> {
    if let Some(encoding) = req.headers().get("grpc-encoding")
        && encoding.as_bytes() != b"identity"
    {
        return Err(Status::unimplemented(
            "compressed requests are not supported (grpc-encoding must be identity)",
        ));
    }
    let (parts, body) = req.into_parts();
    let mut messages = std::pin::pin!(tonic::codec::Streaming::new_request(
        RequestDecoder::<Req>(ProstDecoder::default()),
        body,
        None,
        Some(max_decoding_message_size),
    ));
    let message = messages
        .try_next()
        .await?
        .ok_or_else(|| Status::internal("Missing request message."))?;
    let who = parts
        .extensions
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| {
            Status::from(crate::error::Error::Unauthenticated {
                reason: "MISSING_API_KEY",
                message: "missing `authorization: Bearer <api key>` metadata".into(),
            })
        })?;
    Ok((who, message))
}

/// Frames sent together at most (a stream catching up sends its backlog in few DATA frames).
const COALESCE_BYTES: usize = 16 * 1024;

/// A server-streaming response body of already-framed messages (`grpc_frame`): a message is
/// handed to the connection as it is — no copy into a per-stream encoding buffer, so a commit
/// watched by thousands of streams is one allocation, not one per stream; messages already
/// waiting behind it are joined into the same DATA frame — then the status as trailers.
pub struct FramedBody {
    frames: BoxStream<'static, Result<Bytes, Status>>,
    /// How the stream ends (`Ok`: status OK), once known; sent after the last message.
    end: Option<Result<(), Status>>,
    /// The yield to the runtime between the last message and the trailers (`poll_frame`).
    settle: Option<BoxFuture<'static, ()>>,
    /// A message was sent.
    sent: bool,
    done: bool,
}

impl FramedBody {
    /// The response: gRPC headers, then `frames`.
    pub fn response(frames: BoxStream<'static, Result<Bytes, Status>>) -> http::Response<Body> {
        let mut response = http::Response::new(Body::new(FramedBody {
            frames,
            end: None,
            settle: None,
            sent: false,
            done: false,
        }));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }

    /// `first` and the frames already waiting after it, as one buffer (`first` as it is when
    /// nothing waits, the usual case of a stream that keeps up). A status that ends the stream
    /// is kept for the next poll.
    fn more(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let mut joined: Option<bytes::BytesMut> = None;
        while joined.as_ref().map_or(first.len(), |j| j.len()) < COALESCE_BYTES {
            let next = match self.frames.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(next))) => next,
                Poll::Ready(Some(Err(status))) => {
                    self.end = Some(Err(status));
                    break;
                }
                Poll::Ready(None) => {
                    self.end = Some(Ok(()));
                    break;
                }
                Poll::Pending => break,
            };
            joined
                .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                .extend_from_slice(&next);
        }
        joined.map_or(first, bytes::BytesMut::freeze)
    }
}

impl http_body::Body for FramedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.end.is_none() {
            self.end = Some(match std::task::ready!(self.frames.poll_next_unpin(cx)) {
                Some(Ok(frame)) => {
                    self.sent = true;
                    return Poll::Ready(Some(Ok(http_body::Frame::data(self.more(frame, cx)))));
                }
                Some(Err(status)) => Err(status),
                None => Ok(()),
            });
        }
        // Between the last message and the trailers, the task yields to the runtime once: when
        // a terminal event ends thousands of streams, every connection sends the event before any
        // spends time ending its streams (trailers, stream teardown), so ending streams does not
        // delay the event on the connections served last.
        if self.sent {
            let settle = self
                .settle
                .get_or_insert_with(|| tokio::task::yield_now().boxed());
            std::task::ready!(settle.as_mut().poll(cx));
        }
        self.done = true;
        let mut trailers = http::HeaderMap::with_capacity(1);
        match self.end.take().unwrap_or(Ok(())) {
            // The usual end, without building a `Status` (10,000 streams end together).
            Ok(()) => {
                trailers.insert(
                    http::HeaderName::from_static("grpc-status"),
                    http::HeaderValue::from_static("0"),
                );
            }
            Err(status) => {
                if let Err(unencodable) = status.add_header(&mut trailers) {
                    let _ = unencodable.add_header(&mut trailers);
                }
            }
        }
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    /// Every frame of a body: data as bytes, trailers as their `grpc-status`.
    async fn frames(mut body: FramedBody) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(data) => out.push(String::from_utf8_lossy(&data).into_owned()),
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap();
                    out.push(format!("status {:?}", trailers["grpc-status"]));
                }
            }
        }
        out
    }

    fn body(items: Vec<Result<&'static str, Status>>) -> FramedBody {
        FramedBody {
            frames: futures::stream::iter(
                items
                    .into_iter()
                    .map(|i| i.map(|s| Bytes::from_static(s.as_bytes()))),
            )
            .boxed(),
            end: None,
            settle: None,
            sent: false,
            done: false,
        }
    }

    #[tokio::test]
    async fn ready_frames_go_together_and_the_status_follows() {
        assert_eq!(
            frames(body(vec![Ok("a"), Ok("b"), Ok("c")])).await,
            ["abc", "status \"0\""]
        );
        // An error met while joining is sent after the data before it.
        assert_eq!(
            frames(body(vec![Ok("a"), Ok("b"), Err(Status::unavailable("x"))])).await,
            ["ab", "status \"14\""]
        );
        assert_eq!(frames(body(vec![])).await, ["status \"0\""]);
        assert_eq!(grpc_frame(b"hi").as_ref(), [0, 0, 0, 0, 2, b'h', b'i']);
    }

    /// The poll that sends the last message does not also end the stream: the task yields
    /// before the trailers (a stream that sent nothing ends at once).
    #[tokio::test]
    async fn the_trailers_wait_one_yield_after_the_last_message() {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = |body: &mut FramedBody| match std::pin::Pin::new(body).poll_frame(&mut cx) {
            Poll::Pending => "pending".to_string(),
            Poll::Ready(None) => "end".to_string(),
            Poll::Ready(Some(frame)) => match frame.unwrap().into_data() {
                Ok(data) => String::from_utf8_lossy(&data).into_owned(),
                Err(_) => "trailers".to_string(),
            },
        };
        let mut sent = body(vec![Ok("a")]);
        let polls: Vec<_> = (0..4).map(|_| poll(&mut sent)).collect();
        assert_eq!(polls, ["a", "pending", "trailers", "end"]);
        let mut empty = body(vec![]);
        assert_eq!(poll(&mut empty), "trailers");
    }
}
