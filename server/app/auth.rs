//! Authentication of tenant keys and of the operator credential.

use super::App;
use crate::domain::Tier;
use crate::domain::tenant::{ApiKey, KeyMode, Tenant, key_matches, parse_key};
use crate::error::{Error, Result};
use crate::store::now_ms;

/// An authenticated tenant call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant_id: String,
    pub key_id: String,
    /// Test-mode key: sandbox backends and a separate ledger.
    pub sandbox: bool,
    /// The tenant's tier in force for this call (a trial's while it runs).
    pub tier: Tier,
}

fn unauthenticated(reason: &'static str, message: &str) -> Error {
    Error::Unauthenticated {
        reason,
        message: message.to_string(),
    }
}

impl App {
    /// Checks a presented key: shape and checksum first (no lookup for a typo), then the stored
    /// hash in constant time, revocation and expiry.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Caller> {
        let secret = presented.ok_or_else(|| {
            unauthenticated(
                "MISSING_API_KEY",
                "missing `authorization: Bearer <api key>` metadata",
            )
        })?;
        let parsed = parse_key(secret).ok_or_else(|| {
            unauthenticated(
                "MALFORMED_API_KEY",
                "the API key is malformed (checksum mismatch)",
            )
        })?;
        let invalid = || unauthenticated("INVALID_API_KEY", "the API key is not valid");
        let (key, tenant) = match self.auth_cache.get(&parsed.key_id) {
            Some(hit) => hit,
            None => {
                let key = self.store.key(&parsed.key_id).await?.ok_or_else(invalid)?;
                let tenant = self
                    .store
                    .tenant(&key.tenant_id)
                    .await?
                    .ok_or_else(invalid)?;
                self.auth_cache.put(key.clone(), tenant.clone());
                (key, tenant)
            }
        };
        if !key_matches(secret, &key.secret_hash) || key.mode != parsed.mode {
            return Err(invalid());
        }
        let now = now_ms();
        if key.revoked_ms.is_some() {
            return Err(unauthenticated(
                "API_KEY_REVOKED",
                "the API key was revoked",
            ));
        }
        if key.expires_ms.is_some_and(|e| e <= now) {
            return Err(unauthenticated(
                "API_KEY_EXPIRED",
                "the API key has expired",
            ));
        }
        if key.last_used_ms.is_none_or(|t| t < now - 60_000) {
            // Last-used time is best effort: never fail a call because of it.
            if let Err(e) = self.store.touch_key(&key.id, now).await {
                tracing::warn!(error = %e, "could not record key use");
            }
            self.auth_cache.touched(&key.id, now);
        }
        Ok(Caller {
            tenant_id: key.tenant_id,
            key_id: key.id,
            sandbox: key.mode == KeyMode::Test,
            tier: tenant.tier_at(now),
        })
    }

    /// Takes one request from the tenant's per-minute allowance (its tier's `requests_per_minute`).
    pub fn rate_limit(&self, caller: &Caller) -> Result<()> {
        let per_minute = self.config.catalog.tier(caller.tier).requests_per_minute;
        self.rate_limiter
            .check(&caller.tenant_id, per_minute)
            .map_err(|wait| Error::ResourceExhausted {
                subject: format!("tenants/{}/requests_per_minute", caller.tenant_id),
                message: format!(
                    "the {} tier allows {per_minute} requests per minute; retry in {} ms",
                    caller.tier.as_str(),
                    wait.as_millis()
                ),
                retry_after: Some(wait),
            })
    }

    /// Checks the operator credential in constant time.
    pub fn authenticate_admin(&self, presented: Option<&str>) -> Result<()> {
        use subtle::ConstantTimeEq;
        let Some(expected) = self.config.admin_token.as_deref() else {
            return Err(unauthenticated(
                "ADMIN_API_DISABLED",
                "the admin API is disabled: no admin_token is configured",
            ));
        };
        let presented = presented.ok_or_else(|| {
            unauthenticated(
                "MISSING_ADMIN_TOKEN",
                "missing `authorization: Bearer <admin token>`",
            )
        })?;
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(unauthenticated(
                "INVALID_ADMIN_TOKEN",
                "the admin token is not valid",
            ))
        }
    }
}

/// Keys and their tenants, kept for at most a second so the hot path does not read them on every
/// call. Revocations and tenant changes made through this process clear it at once; other
/// replicas (or the offline admin CLI) take effect within the TTL.
#[derive(Default)]
pub struct AuthCache {
    entries:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, ApiKey, Tenant)>>,
}

const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl AuthCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (std::time::Instant, ApiKey, Tenant)>,
    > {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key_id: &str) -> Option<(ApiKey, Tenant)> {
        let entries = self.lock();
        let (at, key, tenant) = entries.get(key_id)?;
        (at.elapsed() < AUTH_CACHE_TTL).then(|| (key.clone(), tenant.clone()))
    }

    fn put(&self, key: ApiKey, tenant: Tenant) {
        let mut entries = self.lock();
        if entries.len() > 10_000 {
            entries.retain(|_, (at, _, _)| at.elapsed() < AUTH_CACHE_TTL);
        }
        entries.insert(key.id.clone(), (std::time::Instant::now(), key, tenant));
    }

    fn touched(&self, key_id: &str, now_ms: i64) {
        if let Some((_, key, _)) = self.lock().get_mut(key_id) {
            key.last_used_ms = Some(now_ms);
        }
    }

    /// Forgets everything (after a revocation or a tenant change).
    pub fn clear(&self) {
        self.lock().clear();
    }
}
