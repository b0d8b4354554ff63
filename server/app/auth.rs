//! Authentication of tenant keys and of the operator credential.

use super::App;
use crate::domain::Tier;
use crate::domain::tenant::{KeyMode, Tenant, key_matches, parse_key};
use crate::error::{Error, Result};
use crate::store::now_ms;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// An authenticated tenant call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant_id: String,
    pub key_id: String,
    /// Test-mode key: sandbox backends and a separate ledger.
    pub sandbox: bool,
    /// The tenant's tier in force for this call (a trial's while it runs).
    pub tier: Tier,
    /// The tenant as read when the key was verified: at most the key cache's TTL old, and
    /// re-read at once after a change made through this process (which clears the cache).
    pub tenant: Arc<Tenant>,
}

fn malformed() -> Error {
    unauthenticated(
        "MALFORMED_API_KEY",
        "the API key is malformed (checksum mismatch)",
    )
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
    ///
    /// The hot path: a key verified in the last `AUTH_CACHE_TTL` is recognised by comparing the
    /// presented secret, in constant time, with the one that matched the stored hash: no parsing,
    /// no hashing, no database read; revocation and expiry are still checked on every call.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Arc<Caller>> {
        let secret = presented.ok_or_else(|| {
            unauthenticated(
                "MISSING_API_KEY",
                "missing `authorization: Bearer <api key>` metadata",
            )
        })?;
        let entry = match self.auth_cache.lookup(secret) {
            Lookup::Hit(entry) => entry,
            Lookup::Miss => self.verify(secret).await?,
            // Another secret with a cached key's id: checked against the cached hash, so that
            // guessing costs no database read.
            Lookup::Other(entry) => {
                let parsed = parse_key(secret).ok_or_else(malformed)?;
                if parsed.mode != entry.mode || !key_matches(secret, &entry.secret_hash) {
                    return Err(unauthenticated(
                        "INVALID_API_KEY",
                        "the API key is not valid",
                    ));
                }
                entry
            }
        };
        let now = now_ms();
        if entry.revoked {
            return Err(unauthenticated(
                "API_KEY_REVOKED",
                "the API key was revoked",
            ));
        }
        if entry.expires_ms.is_some_and(|e| e <= now) {
            return Err(unauthenticated(
                "API_KEY_EXPIRED",
                "the API key has expired",
            ));
        }
        let last = entry.last_used_ms.load(Ordering::Relaxed);
        // Last-used time is best effort, at most once a minute per key, and off the hot path: only
        // a key never used before is recorded before the call goes on (so a listing that follows
        // its first call shows it).
        if now - last >= 60_000
            && entry
                .last_used_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let store = self.store.clone();
            let key_id = entry.key_id.clone();
            let touch = async move {
                if let Err(e) = store.touch_key(&key_id, now).await {
                    tracing::warn!(error = %e, "could not record key use");
                }
            };
            if last == NEVER {
                touch.await;
            } else {
                tokio::spawn(touch);
            }
        }
        // The caller made when the key was verified, unless the tenant's tier changed since (a
        // trial that ended).
        let tier = entry.tenant.tier_at(now);
        if entry.caller.tier == tier {
            return Ok(entry.caller.clone());
        }
        Ok(Arc::new(Caller {
            tier,
            ..Caller::clone(&entry.caller)
        }))
    }

    /// The slow path: parses the key, reads it and its tenant, checks the hash in constant time,
    /// and caches the outcome (a revoked key too, so that its calls stay cheap to refuse).
    async fn verify(&self, secret: &str) -> Result<Arc<Verified>> {
        let parsed = parse_key(secret).ok_or_else(malformed)?;
        let invalid = || unauthenticated("INVALID_API_KEY", "the API key is not valid");
        let generation = self.auth_cache.generation();
        let key = self.store.key(&parsed.key_id).await?.ok_or_else(invalid)?;
        if !key_matches(secret, &key.secret_hash) || key.mode != parsed.mode {
            return Err(invalid());
        }
        let tenant = self
            .store
            .tenant(&key.tenant_id)
            .await?
            .ok_or_else(invalid)?;
        let tenant = Arc::new(tenant);
        let caller = Arc::new(Caller {
            tenant_id: key.tenant_id.clone(),
            key_id: key.id.clone(),
            sandbox: key.mode == KeyMode::Test,
            tier: tenant.tier_at(now_ms()),
            tenant: tenant.clone(),
        });
        let entry = Arc::new(Verified {
            fetched: Instant::now(),
            secret: secret.into(),
            caller,
            key_id: key.id,
            mode: key.mode,
            secret_hash: key.secret_hash,
            revoked: key.revoked_ms.is_some(),
            expires_ms: key.expires_ms,
            last_used_ms: AtomicI64::new(key.last_used_ms.unwrap_or(NEVER)),
            tenant,
        });
        self.auth_cache.put(generation, &entry);
        Ok(entry)
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

/// Keys verified against their stored hash, with their tenants, for at most `AUTH_CACHE_TTL`, so
/// the hot path neither hashes nor reads the database. Revocations and tenant changes made through
/// this process clear it at once (a fill that read the key before the clear is discarded); other
/// replicas (or the offline admin CLI) take effect within the TTL.
#[derive(Default)]
pub struct AuthCache {
    /// By the key's public id (the 12 characters after `aiprod_<mode>_`).
    entries: RwLock<HashMap<Box<str>, Arc<Verified>>>,
    /// Bumped by every `clear`.
    generation: AtomicU64,
}

/// One verified key.
pub struct Verified {
    fetched: Instant,
    /// The presented secret that matched the stored hash (only ever compared in constant time).
    secret: Box<str>,
    /// The stored hash, for another secret presented with this key's id.
    secret_hash: String,
    /// The authenticated caller, shared by every call with this key (no copy per call).
    caller: Arc<Caller>,
    key_id: String,
    mode: KeyMode,
    revoked: bool,
    expires_ms: Option<i64>,
    /// When the key's use was last recorded (`NEVER` if not yet).
    last_used_ms: AtomicI64,
    tenant: Arc<Tenant>,
}

enum Lookup {
    Hit(Arc<Verified>),
    Other(Arc<Verified>),
    Miss,
}

const NEVER: i64 = i64::MIN / 2;

/// How long a verified key is trusted without re-reading it: the bound on how late a revocation
/// made on another replica takes effect here.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// The public id part of a well-shaped secret, `aiprod_<mode>_<id:12><secret:32><checksum:6>`.
fn public_id(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix("aiprod_")?;
    let (_, rest) = rest.split_once('_')?;
    rest.get(..12)
}

impl AuthCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Arc<Verified>>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<str>, Arc<Verified>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The fresh entry of this secret's key id, and whether it was verified for this very secret.
    fn lookup(&self, secret: &str) -> Lookup {
        let Some(id) = public_id(secret) else {
            return Lookup::Miss;
        };
        let Some(entry) = self.read().get(id).cloned() else {
            return Lookup::Miss;
        };
        if entry.fetched.elapsed() >= AUTH_CACHE_TTL {
            return Lookup::Miss;
        }
        let same = entry.secret.len() == secret.len()
            && bool::from(entry.secret.as_bytes().ct_eq(secret.as_bytes()));
        if same {
            Lookup::Hit(entry)
        } else {
            Lookup::Other(entry)
        }
    }

    fn put(&self, generation: u64, entry: &Arc<Verified>) {
        let Some(id) = public_id(&entry.secret) else {
            return;
        };
        let mut entries = self.write();
        // A clear since this entry's read started: the key may have been revoked meanwhile.
        if self.generation() != generation {
            return;
        }
        if entries.len() >= 10_000 {
            entries.retain(|_, e| e.fetched.elapsed() < AUTH_CACHE_TTL);
        }
        entries.insert(id.into(), entry.clone());
    }

    /// Forgets everything (after a revocation or a tenant change).
    pub fn clear(&self) {
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}
