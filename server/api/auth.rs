//! Authentication as a tower layer: it runs before routing, so every `aiprod.v1` RPC is covered in
//! one place. Tenant calls get a `Caller` in the request extensions; AdminService needs the operator
//! credential; health and reflection pass through.

use crate::app::App;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;

#[derive(Clone)]
pub struct AuthLayer {
    pub app: Arc<App>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            app: self.app.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    app: Arc<App>,
}

/// Marker for calls authenticated with the operator credential.
#[derive(Clone, Copy, Debug)]
pub struct Operator;

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S, B, RB> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The ready service is the one we were polled for; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let app = self.app.clone();
        Box::pin(async move {
            let path = req.uri().path();
            // ByteStream serves tenants' artifacts: the same credential and limits as aiprod.v1.
            if path.starts_with("/aiprod.v1.") || path.starts_with("/google.bytestream.") {
                // The credential is borrowed from the headers (no copy); the outcome is stored
                // in the extensions once the borrow ends.
                let token = bearer(req.headers());
                let outcome = if path.starts_with("/aiprod.v1.AdminService/") {
                    app.authenticate_admin(token).map(|()| None)
                } else {
                    // Rate limiting sits after authentication: the bucket is the tenant's, sized by its tier.
                    match app.authenticate(token).await {
                        Ok(caller) => app.rate_limit(&caller).map(|()| Some(caller)),
                        Err(e) => Err(e),
                    }
                };
                match outcome {
                    Ok(Some(caller)) => {
                        req.extensions_mut().insert(caller);
                    }
                    Ok(None) => {
                        req.extensions_mut().insert(Operator);
                    }
                    Err(e) => return Ok(Status::from(e).into_http()),
                }
            }
            inner.call(req).await
        })
    }
}
