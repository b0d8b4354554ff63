//! Operator use cases: tenants and API keys.

use super::App;
use crate::domain::tenant::{ApiKey, KeyMode, Tenant, Trial, generate_key, hash_key};
use crate::domain::{Money, Tier};
use crate::error::{Error, Result};

/// A validated CreateTenant.
pub struct NewTenant {
    pub name: String,
    pub tier: Tier,
    pub monthly_budget: Option<Money>,
    pub trial: Option<Trial>,
    pub job_quota: Option<u32>,
}

/// Changes of an UpdateTenant (the masked fields).
#[derive(Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub tier: Option<Tier>,
    pub monthly_budget: Option<Option<Money>>,
    pub trial: Option<Option<Trial>>,
    pub job_quota: Option<Option<u32>>,
}

/// The server clock in Unix milliseconds (the transport validates times against it).
pub use crate::store::now_ms;

impl App {
    pub async fn create_tenant(&self, new: NewTenant) -> Result<Tenant> {
        let tenant = Tenant {
            id: format!("ten_{}", uuid::Uuid::now_v7().simple()),
            name: new.name,
            base_tier: new.tier,
            monthly_budget: new.monthly_budget,
            trial: new.trial,
            job_quota: new.job_quota,
            created_ms: now_ms(),
        };
        self.store.insert_tenant(&tenant).await?;
        tracing::info!(tenant_id = %tenant.id, tier = tenant.base_tier.as_str(), "tenant created");
        Ok(tenant)
    }

    pub async fn tenant(&self, id: &str) -> Result<Tenant> {
        self.store
            .tenant(id)
            .await?
            .ok_or_else(|| Error::not_found("tenant"))
    }

    /// A page of tenants after `after` (by id), and the id to continue after when there are more.
    pub async fn list_tenants(
        &self,
        after: &str,
        page_size: u32,
    ) -> Result<(Vec<Tenant>, Option<String>)> {
        let mut tenants = self.store.tenants(after, page_size + 1).await?;
        let next = if tenants.len() > page_size as usize {
            tenants.truncate(page_size as usize);
            tenants.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok((tenants, next))
    }

    pub async fn update_tenant(&self, id: &str, patch: TenantPatch) -> Result<Tenant> {
        let mut t = self.tenant(id).await?;
        if let Some(v) = patch.name {
            t.name = v;
        }
        if let Some(v) = patch.tier {
            t.base_tier = v;
        }
        if let Some(v) = patch.monthly_budget {
            t.monthly_budget = v;
        }
        if let Some(v) = patch.trial {
            t.trial = v;
        }
        if let Some(v) = patch.job_quota {
            t.job_quota = v;
        }
        self.store.update_tenant(&t).await?;
        self.auth_cache.clear();
        self.forget_budget(&t.id);
        Ok(t)
    }

    /// Creates a key; returns its metadata and the secret (shown once, stored only as a hash).
    pub async fn create_key(
        &self,
        tenant_id: &str,
        mode: KeyMode,
        name: &str,
        expires_ms: Option<i64>,
    ) -> Result<(ApiKey, String)> {
        self.tenant(tenant_id).await?;
        let generated = generate_key(mode);
        let key = ApiKey {
            id: generated.id,
            tenant_id: tenant_id.to_string(),
            name: name.to_string(),
            mode,
            prefix: generated.prefix,
            secret_hash: hash_key(&generated.secret),
            created_ms: now_ms(),
            expires_ms,
            revoked_ms: None,
            last_used_ms: None,
        };
        self.store.insert_key(&key).await?;
        tracing::info!(key_id = %key.id, tenant_id, mode = mode.as_str(), "api key created");
        Ok((key, generated.secret))
    }

    pub async fn keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        self.tenant(tenant_id).await?;
        self.store.keys_of(tenant_id).await
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<ApiKey> {
        let key = self
            .store
            .revoke_key(key_id, now_ms())
            .await?
            .ok_or_else(|| Error::not_found("api key"))?;
        self.auth_cache.clear();
        tracing::info!(key_id, "api key revoked");
        Ok(key)
    }

    /// Replaces a key: a new one with the same tenant, mode and name, and the old one revoked at once.
    pub async fn rotate_key(
        &self,
        key_id: &str,
        expires_ms: Option<i64>,
    ) -> Result<(ApiKey, String, ApiKey)> {
        let old = self
            .store
            .key(key_id)
            .await?
            .ok_or_else(|| Error::not_found("api key"))?;
        if old.revoked_ms.is_some() {
            return Err(Error::precondition(
                "STATE",
                format!("api_keys/{key_id}"),
                "the key is already revoked; create a new key instead",
            ));
        }
        let (new, secret) = self
            .create_key(&old.tenant_id, old.mode, &old.name, expires_ms)
            .await?;
        let revoked = self.revoke_key(key_id).await?;
        Ok((new, secret, revoked))
    }

    /// A beta partner: Platinum free for 90 days (on a Gold base), a 500-job quota and a $3,000
    /// monthly budget, with a live key.
    pub async fn onboard_beta(&self, name: &str) -> Result<(Tenant, ApiKey, String)> {
        let tenant = self
            .create_tenant(NewTenant {
                name: name.to_string(),
                tier: Tier::Gold,
                monthly_budget: Some(Money::from_micros(3_000 * 1_000_000)),
                trial: Some(Trial {
                    tier: Tier::Platinum,
                    end_ms: now_ms() + 90 * 86_400_000,
                }),
                job_quota: Some(500),
            })
            .await?;
        let (key, secret) = self
            .create_key(&tenant.id, KeyMode::Live, "beta", None)
            .await?;
        Ok((tenant, key, secret))
    }

    /// On the first start with an empty database: a `demo` tenant and a test key, printed once.
    pub async fn ensure_demo_tenant(&self) -> Result<Option<(Tenant, String)>> {
        if !self.store.tenants("", 1).await?.is_empty()
            || !self.store.claim_setting("demo_tenant_created", "1").await?
        {
            return Ok(None);
        }
        let tenant = self
            .create_tenant(NewTenant {
                name: "demo".into(),
                tier: Tier::Platinum,
                monthly_budget: None,
                trial: None,
                job_quota: None,
            })
            .await?;
        let (_, secret) = self
            .create_key(&tenant.id, KeyMode::Test, "demo", None)
            .await?;
        Ok(Some((tenant, secret)))
    }
}
