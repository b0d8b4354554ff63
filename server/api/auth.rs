//! Authentication, run by the `gate` layer before routing, so every `aiprod.v1` RPC is covered in
//! one place. Tenant calls get a `Caller` in the request extensions; AdminService needs the operator
//! credential; health and reflection pass through.

use crate::app::App;
use tonic::Status;

/// Marker for calls authenticated with the operator credential.
#[derive(Clone, Copy, Debug)]
pub struct Operator;

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates an `aiprod.v1` or ByteStream call (health and reflection pass): a tenant's call
/// gets its `Caller` in the request extensions, an AdminService call `Operator`.
pub async fn authorize<B>(app: &App, req: &mut http::Request<B>) -> Result<(), Status> {
    let path = req.uri().path();
    // ByteStream serves tenants' artifacts: the same credential and limits as aiprod.v1.
    if !(path.starts_with("/aiprod.v1.") || path.starts_with("/google.bytestream.")) {
        return Ok(());
    }
    // The credential is borrowed from the headers (no copy); the outcome is stored in the
    // extensions once the borrow ends.
    let token = bearer(req.headers());
    if path.starts_with("/aiprod.v1.AdminService/") {
        app.authenticate_admin(token)?;
        req.extensions_mut().insert(Operator);
        return Ok(());
    }
    let caller = app.authenticate(token).await?;
    // Rate limiting sits after authentication: the bucket is the tenant's, sized by its tier.
    app.rate_limit(&caller)?;
    req.extensions_mut().insert(caller);
    Ok(())
}
