//! Responses encoded once and sent as they are: a codec whose messages out are already-encoded
//! protobuf bytes (requests are decoded with prost as usual). WatchJob uses it so that a commit
//! watched by many streams is converted and encoded once, not once per stream.

use super::Api;
use bytes::{BufMut, Bytes};
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic_prost::ProstDecoder;

/// Decodes `Req` with prost; encodes messages that are already protobuf bytes.
pub struct WireCodec<Req> {
    buffer_size: usize,
    request: PhantomData<fn() -> Req>,
}

impl<Req> WireCodec<Req> {
    /// `buffer_size`: the initial size of a call's encoding buffer (tonic allocates it when the
    /// response starts; 8 KiB by default). Small for a stream of small messages: 10,000 streams
    /// would otherwise hold (and, on their first message, fault in) 80 MiB of buffers.
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

/// Answers the calls of the routed methods with already-encoded messages (the API, the maximum
/// request size, the call; its path names the method).
pub type Serve = fn(Api, usize, http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>;

/// A generated service with some methods (`paths`) served by `serve` (through [`WireCodec`]);
/// every other method goes to the generated service.
#[derive(Clone)]
pub struct WireRoute<G> {
    generated: G,
    paths: &'static [&'static str],
    serve: Serve,
    api: Api,
    max_decoding_message_size: usize,
}

impl<G> WireRoute<G> {
    pub fn new(
        generated: G,
        paths: &'static [&'static str],
        serve: Serve,
        api: Api,
        max_decoding_message_size: usize,
    ) -> Self {
        WireRoute {
            generated,
            paths,
            serve,
            api,
            max_decoding_message_size,
        }
    }
}

impl<G: NamedService> NamedService for WireRoute<G> {
    const NAME: &'static str = G::NAME;
}

impl<G> tower::Service<http::Request<Body>> for WireRoute<G>
where
    G: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
        >,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if !self.paths.contains(&req.uri().path()) {
            return self.generated.call(req);
        }
        let answer = (self.serve)(self.api.clone(), self.max_decoding_message_size, req);
        Box::pin(async move { Ok(answer.await) })
    }
}
