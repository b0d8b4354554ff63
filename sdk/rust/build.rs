//! Generates the client code of `aiprod.v1` with the pure-Rust `protox` compiler (no system
//! `protoc`) from the protos vendored in this crate (`proto/`, copied from the repository's
//! `proto/` by `scripts/codegen.sh`, so the published crate builds on its own), plus one wrapper per
//! service whose unary methods go through the SDK's retry policy and return `aiprod_sdk::Error`.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Calls that are safe to repeat after `UNAVAILABLE` besides every `Get*`/`List*` read:
/// `CreateJob` is idempotent by `request_id` (the SDK fills one), `CancelJob` by nature.
const IDEMPOTENT: &[&str] = &["EstimateCost", "CreateJob", "CancelJob"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut protos = std::fs::read_dir(root.join("aiprod/v1"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<PathBuf>, _>>()?;
    protos.sort();
    protos.push(root.join("google/bytestream/bytestream.proto"));
    let fds = protox::compile(&protos, [&root])?;
    let services = wrappers(&fds);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("aiprod_services.rs"), services)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn rust_type(proto: &str) -> String {
    let name = proto
        .strip_prefix(".aiprod.v1.")
        .unwrap_or_else(|| panic!("unexpected message type {proto}"));
    format!("crate::pb::{name}")
}

fn wrappers(fds: &prost_types::FileDescriptorSet) -> String {
    let mut s = String::new();
    for file in fds.file.iter().filter(|f| f.package() == "aiprod.v1") {
        for service in &file.service {
            let name = service.name();
            let raw = format!(
                "crate::pb::{}_client::{}Client<crate::AuthChannel>",
                snake(name),
                name
            );
            writeln!(
                s,
                "/// `aiprod.v1.{name}`: unary calls are retried by the client's policy (see the crate docs)\n\
                 /// and fail with [`crate::Error`].\n\
                 #[derive(Clone)]\n\
                 pub struct {name} {{\n    raw: {raw},\n    caller: crate::retry::Caller,\n}}\n\n\
                 impl {name} {{\n\
                 \x20   pub(crate) fn new(channel: crate::AuthChannel, caller: crate::retry::Caller) -> Self {{\n\
                 \x20       {name} {{ raw: <{raw}>::new(channel), caller }}\n    }}\n\n\
                 \x20   /// The generated tonic client (no retries; errors are raw `tonic::Status`).\n\
                 \x20   pub fn raw(&self) -> {raw} {{\n        self.raw.clone()\n    }}\n"
            )
            .unwrap();
            for method in &service.method {
                let rpc = method.name();
                let fn_name = snake(rpc);
                let input = rust_type(method.input_type());
                let output = rust_type(method.output_type());
                let path = format!("/aiprod.v1.{name}/{rpc}");
                if method.client_streaming() {
                    continue;
                }
                if method.server_streaming() {
                    writeln!(
                        s,
                        "    /// `{path}` as a raw stream (prefer [`crate::Client::watch_job`], which resumes).\n\
                         \x20   pub async fn {fn_name}(&self, request: impl tonic::IntoRequest<{input}>) -> Result<tonic::Response<tonic::Streaming<{output}>>, crate::Error> {{\n\
                         \x20       self.raw.clone().{fn_name}(request).await.map_err(crate::Error::from)\n    }}\n"
                    )
                    .unwrap();
                    continue;
                }
                let idempotent =
                    rpc.starts_with("Get") || rpc.starts_with("List") || IDEMPOTENT.contains(&rpc);
                let prepare = if rpc == "CreateJob" {
                    // Before the first attempt, so every retry carries the same idempotency key.
                    "        let mut request = request;\n        if request.get_ref().request_id.is_empty() {\n            request.get_mut().request_id = crate::retry::new_request_id();\n        }\n"
                } else {
                    ""
                };
                let kind = if idempotent {
                    "retried on `UNAVAILABLE` and on `RESOURCE_EXHAUSTED` with `RetryInfo`"
                } else {
                    "retried only on `RESOURCE_EXHAUSTED` with `RetryInfo` (refused before any work)"
                };
                writeln!(
                    s,
                    "    /// `{path}`, {kind}.\n\
                     \x20   pub async fn {fn_name}(&self, request: impl tonic::IntoRequest<{input}>) -> Result<tonic::Response<{output}>, crate::Error> {{\n\
                     \x20       let request = tonic::IntoRequest::into_request(request);\n{prepare}\
                     \x20       let raw = &self.raw;\n\
                     \x20       self.caller.call(\"{path}\", {idempotent}, request, |r| {{ let mut raw = raw.clone(); async move {{ raw.{fn_name}(r).await }} }}).await\n    }}\n"
                )
                .unwrap();
            }
            s.push_str("}\n\n");
        }
    }
    s
}
