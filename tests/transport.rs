//! Transport-level bad input (issue 9, departure 9): raw HTTP/2 requests to the real server, each
//! answered as the README's error table says, without internals, and the server stays healthy.

use crate::harness::*;
use aiprod_sdk::pb;
use bytes::Bytes;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::transport::Channel;
use tower::ServiceExt;

/// A request body sent as one data frame.
struct Raw(Option<Bytes>);

impl Body for Raw {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

/// One gRPC frame: uncompressed flag, big-endian length, then `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    framed(payload.len() as u32, payload)
}

fn framed(len: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

struct Answer {
    http: u16,
    code: Option<i32>,
    message: String,
}

/// Sends a raw request; the answer's gRPC status (headers of a trailers-only response, or
/// trailers).
async fn call(
    channel: &Channel,
    key: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("te", "trailers")
        .header("authorization", format!("Bearer {key}"));
    let mut has_content_type = false;
    for (k, v) in headers {
        has_content_type |= k.eq_ignore_ascii_case("content-type");
        req = req.header(*k, *v);
    }
    if !has_content_type {
        req = req.header("content-type", "application/grpc");
    }
    let req = req
        .body(tonic::body::Body::new(Raw(Some(Bytes::from(body)))))
        .unwrap();
    let response = channel.clone().oneshot(req).await.expect("http call");
    let http = response.status().as_u16();
    let mut code = None;
    let mut message = String::new();
    let read = |h: &http::HeaderMap, code: &mut Option<i32>, message: &mut String| {
        if let Some(c) = h.get("grpc-status") {
            *code = c.to_str().ok().and_then(|c| c.parse().ok());
            *message = h
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .map(percent_decode)
                .unwrap_or_default();
        }
    };
    read(response.headers(), &mut code, &mut message);
    let mut body = response.into_body();
    while let Some(frame) = futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(frame) = frame
            && let Some(t) = frame.trailers_ref()
        {
            read(t, &mut code, &mut message);
        }
    }
    Answer {
        http,
        code,
        message,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_no_internals(a: &Answer) {
    for leak in [
        "Protobuf",
        "DecodeError",
        "prost",
        "decoded message length",
        "EOF",
    ] {
        assert!(!a.message.contains(leak), "leaks {leak:?}: {}", a.message);
    }
}

#[tokio::test]
async fn transport_level_bad_input_is_answered_per_the_spec() {
    let server = TestServer::start().await;
    let (_, key, client) = server.tenant("acme", pb::Tier::Platinum).await;
    let channel = Channel::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let estimate = "/aiprod.v1.CostEstimatorService/EstimateCost";
    // A valid EstimateCostRequest { preset_id: "quick_social" }.
    let mut good = vec![0x0a, 12];
    good.extend_from_slice(b"quick_social");

    let healthy = || async {
        client
            .costs()
            .estimate_cost(pb::EstimateCostRequest {
                preset_id: "quick_social".into(),
                ..Default::default()
            })
            .await
            .expect("the server stays healthy");
    };

    // The raw client itself works.
    let a = call(&channel, &key, estimate, &[], frame(&good)).await;
    assert_eq!(a.code, Some(0), "{}", a.message);

    // Undecodable bodies: INVALID_ARGUMENT, nothing of the decoder's text.
    let bodies: [(&str, Vec<u8>); 5] = [
        ("invalid UTF-8", vec![0x0a, 2, 0xff, 0xfe]),
        // 200 nested groups of an unknown field: past the decoder's recursion limit.
        ("deep nesting", vec![0x7b; 200]),
        ("wrong wire type", vec![0x0d, 1, 2, 3, 4]),
        ("truncated field", vec![0x0a, 50, b'a']),
        (
            "bad varint",
            vec![
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
    ];
    for (what, body) in bodies {
        let a = call(&channel, &key, estimate, &[], frame(&body)).await;
        assert_eq!(a.code, Some(3), "{what}: {}", a.message);
        assert_no_internals(&a);
        healthy().await;
    }
    // A body that ends inside its message.
    let a = call(&channel, &key, estimate, &[], framed(100, &good)).await;
    assert_eq!(a.code, Some(3), "truncated body: {}", a.message);
    assert_no_internals(&a);
    healthy().await;

    // Over-size: RESOURCE_EXHAUSTED as grpc-go and grpc-java answer, with a clear message.
    let a = call(&channel, &key, estimate, &[], framed(5 << 20, &good)).await;
    assert_eq!(a.code, Some(8), "{}", a.message);
    assert!(a.message.contains("largest accepted"), "{}", a.message);
    assert_no_internals(&a);
    healthy().await;

    // Two messages on a unary call, and none: UNIMPLEMENTED (request cardinality violation).
    let a = call(
        &channel,
        &key,
        estimate,
        &[],
        [frame(&good), frame(&good)].concat(),
    )
    .await;
    assert_eq!(a.code, Some(12), "{}", a.message);
    let a = call(&channel, &key, estimate, &[], vec![]).await;
    assert_eq!(a.code, Some(12), "{}", a.message);
    healthy().await;

    // A wrong content-type: HTTP 415 (spec), grpc-status INTERNAL (grpc-go, grpc-java).
    let a = call(
        &channel,
        &key,
        estimate,
        &[("content-type", "application/json")],
        frame(&good),
    )
    .await;
    assert_eq!((a.http, a.code), (415, Some(13)), "{}", a.message);
    healthy().await;

    // A garbage grpc-timeout: INVALID_ARGUMENT naming the header.
    for t in ["soon", "30", "123456789S", "-5S"] {
        let a = call(
            &channel,
            &key,
            estimate,
            &[("grpc-timeout", t)],
            frame(&good),
        )
        .await;
        assert_eq!(a.code, Some(3), "{t}: {}", a.message);
        assert!(a.message.contains("grpc-timeout"), "{}", a.message);
    }
    let a = call(
        &channel,
        &key,
        estimate,
        &[("grpc-timeout", "10S")],
        frame(&good),
    )
    .await;
    assert_eq!(a.code, Some(0), "a valid timeout: {}", a.message);

    // A server-streaming call takes exactly one request too.
    let mut watch = vec![0x0a, 3];
    watch.extend_from_slice(b"job");
    let a = call(
        &channel,
        &key,
        "/aiprod.v1.RenderService/WatchJob",
        &[],
        [frame(&watch), frame(&watch)].concat(),
    )
    .await;
    assert_eq!(a.code, Some(12), "{}", a.message);
    healthy().await;
}
