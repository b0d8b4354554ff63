//! Bad input at the transport level, answered in one place (the `gate` layer) before any handler runs, as the gRPC
//! specification and the major implementations (grpc-go, grpc-java) do, without leaking internals:
//!
//! | input | answer |
//! |---|---|
//! | `content-type` not `application/grpc[+proto][;…]` | HTTP 415 with `grpc-status` INTERNAL (spec: 415; grpc-go and grpc-java add INTERNAL) |
//! | `grpc-timeout` not 1–8 digits and a unit of `HMSmun` | INVALID_ARGUMENT (BadRequest on `grpc-timeout`) |
//! | a message longer than `max_message_bytes` | RESOURCE_EXHAUSTED with QuotaFailure (grpc-go and grpc-java) |
//! | no message, or a second one, on a call that takes exactly one | UNIMPLEMENTED (spec: request cardinality violation) |
//! | a body that does not decode (bad wire types, invalid UTF-8, truncation, nesting) | INVALID_ARGUMENT (tonic answers INTERNAL with the decoder's text) |
//!
//! The body is checked as it streams: each gRPC frame header is read (compressed flag, length)
//! and a violation ends the body with a `Status`, which tonic sends as the call's status. Decoder
//! failures come back from tonic as INTERNAL with prost's text: they are recognised and rewritten.

use crate::error::Error;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tonic::{Code, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether a `content-type` is one this server speaks (protobuf over gRPC).
fn grpc_content_type(value: Option<&http::HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = v.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/grpc")
        || media.eq_ignore_ascii_case("application/grpc+proto")
}

/// `grpc-timeout` per the spec: 1–8 ASCII digits and one unit of `H M S m u n`.
fn valid_timeout(v: &http::HeaderValue) -> bool {
    let b = v.as_bytes();
    b.len() >= 2
        && b.len() <= 9
        && b[..b.len() - 1].iter().all(u8::is_ascii_digit)
        && b"HMSmun".contains(&b[b.len() - 1])
}

/// Whether a method takes exactly one request message (every unary and server-streaming RPC
/// here; reflection is bidirectional and ByteStream `Write` is client-streaming).
fn single_request(path: &str) -> bool {
    !(path.starts_with("/grpc.reflection.") || path == "/google.bytestream.ByteStream/Write")
}

/// The header checks: an error is the whole response (HTTP 415 for a foreign content-type, a
/// gRPC status otherwise).
pub fn check_headers<RB: Default>(headers: &http::HeaderMap) -> Result<(), http::Response<RB>> {
    let content_type = headers.get(http::header::CONTENT_TYPE);
    if !grpc_content_type(content_type) {
        let got = content_type
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let status = Status::internal(format!(
            "content-type must be application/grpc (got {})",
            crate::domain::validate::echo(&got)
        ));
        let mut response = status.into_http::<RB>();
        *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(response);
    }
    if let Some(t) = headers.get("grpc-timeout")
        && !valid_timeout(t)
    {
        let status = Status::from(Error::invalid(
            "grpc-timeout",
            "must be 1–8 digits followed by one of H, M, S, m, u, n (e.g. 30S)",
        ));
        return Err(status.into_http());
    }
    Ok(())
}

/// The request with its body's framing checked as it streams (`max`: the largest message).
pub fn checked<B>(req: http::Request<B>, max: usize) -> http::Request<CheckedBody<B>> {
    let single = single_request(req.uri().path());
    req.map(|body| CheckedBody::new(body, max, single))
}

/// tonic answers a request that does not decode with INTERNAL and the decoder's own text; it is
/// the caller's input, not our bug: INVALID_ARGUMENT with a plain message, nothing internal.
pub fn rewrite_decoder_errors<RB: Default>(response: http::Response<RB>) -> http::Response<RB> {
    let headers = response.headers();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    if code != Some(Code::Internal as i32) {
        return response;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The status message is percent-encoded on the wire; the prefixes are plain ASCII.
    let status = if message.starts_with("failed%20to%20decode%20Protobuf%20message")
        || message.starts_with("failed to decode Protobuf message")
    {
        Status::from(Error::invalid(
            "request",
            "is not a valid encoding of the method's request message",
        ))
    } else if message.starts_with("Unexpected%20EOF") || message.starts_with("Unexpected EOF") {
        Status::from(Error::invalid(
            "request",
            "ended inside a message (truncated body)",
        ))
    } else if message.starts_with("Missing%20request%20message")
        || message.starts_with("Missing request message")
    {
        Status::unimplemented("this method takes exactly one request message; none was sent")
    } else {
        return response;
    };
    status.into_http()
}

/// A request body whose gRPC framing is checked as it streams.
pub struct CheckedBody<B> {
    inner: B,
    max: usize,
    single: bool,
    /// Bytes still to skip of the current message's body.
    remaining: usize,
    /// A partial frame header (5 bytes: compressed flag + big-endian length).
    header: Vec<u8>,
    messages: u32,
    failed: bool,
}

impl<B> CheckedBody<B> {
    fn new(inner: B, max: usize, single: bool) -> Self {
        CheckedBody {
            inner,
            max,
            single,
            remaining: 0,
            header: Vec::with_capacity(5),
            messages: 0,
            failed: false,
        }
    }

    /// Walks the frames in `data`; an error is the status the call ends with.
    fn check(&mut self, data: &Bytes) -> Result<(), Status> {
        let mut buf = data.clone();
        while buf.has_remaining() {
            if self.remaining > 0 {
                let n = self.remaining.min(buf.remaining());
                buf.advance(n);
                self.remaining -= n;
                continue;
            }
            let n = (5 - self.header.len()).min(buf.remaining());
            self.header.extend_from_slice(&buf[..n]);
            buf.advance(n);
            if self.header.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            self.header.clear();
            self.messages += 1;
            if self.single && self.messages > 1 {
                return Err(Status::unimplemented(
                    "this method takes exactly one request message; a second one was sent",
                ));
            }
            if len > self.max {
                return Err(Status::from(Error::ResourceExhausted {
                    subject: "max_message_bytes".into(),
                    message: format!(
                        "the request message is {len} bytes; the largest accepted is {} bytes",
                        self.max
                    ),
                    retry_after: None::<Duration>,
                }));
            }
            self.remaining = len;
        }
        Ok(())
    }
}

impl<B> Body for CheckedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = this.check(data)
                {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_and_timeouts() {
        let ok = |s: &str| grpc_content_type(Some(&http::HeaderValue::from_str(s).unwrap()));
        assert!(ok("application/grpc"));
        assert!(ok("application/grpc+proto"));
        assert!(ok("application/grpc; charset=utf-8"));
        assert!(!ok("application/json"));
        assert!(!ok("application/grpc+json"));
        assert!(!grpc_content_type(None));
        let t = |s: &str| valid_timeout(&http::HeaderValue::from_str(s).unwrap());
        assert!(t("30S") && t("100m") && t("99999999n"));
        assert!(!t("S") && !t("30") && !t("30s") && !t("123456789S") && !t("-1S") && !t("abc"));
    }

    #[test]
    fn frames_are_counted_and_bounded() {
        let frame = |len: u32| {
            let mut v = vec![0u8];
            v.extend_from_slice(&len.to_be_bytes());
            v.extend(std::iter::repeat_n(1u8, len as usize));
            v
        };
        let mut body = CheckedBody::new((), 100, true);
        // One message split across chunks is fine.
        let one = frame(10);
        assert!(body.check(&Bytes::copy_from_slice(&one[..3])).is_ok());
        assert!(body.check(&Bytes::copy_from_slice(&one[3..])).is_ok());
        // A second is a cardinality violation.
        let e = body.check(&Bytes::from(frame(1))).unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        // Too large.
        let mut body = CheckedBody::new((), 100, true);
        let e = body.check(&Bytes::from(frame(101))).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        // Streams may carry many.
        let mut body = CheckedBody::new((), 100, false);
        assert!(
            body.check(&Bytes::from([frame(1), frame(2)].concat()))
                .is_ok()
        );
    }
}
