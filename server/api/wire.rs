//! Responses encoded once and sent as they are: a codec whose messages out are already-encoded
//! protobuf bytes (requests are decoded with prost as usual), and the fast lane that serves the
//! methods using it. WatchJob uses it so that a commit watched by many streams is converted and
//! encoded once, not once per stream; GetJob and EstimateCost to send a cached answer as it is.

use super::Api;
use bytes::{BufMut, Bytes};
use futures::future::BoxFuture;
use std::marker::PhantomData;
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
