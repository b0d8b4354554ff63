//! AdminService (operator credential).

use super::Api;
use super::auth::Operator;
use super::convert::{key_mode_from, key_pb, ms, require_id, tenant_pb, tier_from, trial_from};
use crate::app::admin::now_ms;
use crate::app::admin::{NewTenant, TenantPatch};
use crate::domain::Money;
use crate::domain::validate::{Violations, echo};
use crate::error::Error;
use crate::pb::admin_service_server::AdminService;
use crate::pb::*;
use tonic::{Request, Response, Status};

fn operator<T>(req: &Request<T>) -> Result<(), Status> {
    req.extensions()
        .get::<Operator>()
        .map(|_| ())
        .ok_or_else(|| {
            // Through the one Error → Status mapping, like every other error.
            Status::from(Error::Unauthenticated {
                reason: "MISSING_ADMIN_TOKEN",
                message: "missing `authorization: Bearer <admin token>` metadata".into(),
            })
        })
}

fn page_token(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("t1:{id}"))
}

fn parse_page_token(token: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("t1:")
        .map(str::to_owned)
}

#[tonic::async_trait]
impl AdminService for Api {
    async fn create_tenant(
        &self,
        req: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let now = now_ms();
        let mut v = Violations::new();
        v.text("name", r.name.trim(), 1, 200);
        let tier = tier_from(r.tier);
        v.check(tier.is_some(), "tier", "must be BRONZE, GOLD or PLATINUM");
        v.check(
            r.monthly_budget_micros.is_none_or(|b| b > 0),
            "monthly_budget_micros",
            "must be positive",
        );
        v.check(
            r.job_quota.is_none_or(|q| q > 0),
            "job_quota",
            "must be positive",
        );
        let trial = trial_from(r.trial.as_ref(), "trial", now, &mut v);
        v.finish().map_err(Error::InvalidArgument)?;
        let tenant = self
            .app
            .create_tenant(NewTenant {
                name: r.name.trim().to_string(),
                tier: tier.ok_or_else(|| Error::invalid("tier", "is required"))?,
                monthly_budget: r.monthly_budget_micros.map(Money::from_micros),
                trial,
                job_quota: r.job_quota,
            })
            .await?;
        Ok(Response::new(CreateTenantResponse {
            tenant: Some(tenant_pb(&tenant, now)),
        }))
    }

    async fn get_tenant(
        &self,
        req: Request<GetTenantRequest>,
    ) -> Result<Response<GetTenantResponse>, Status> {
        operator(&req)?;
        require_id("tenant_id", &req.get_ref().tenant_id)?;
        let tenant = self.app.tenant(&req.get_ref().tenant_id).await?;
        Ok(Response::new(GetTenantResponse {
            tenant: Some(tenant_pb(&tenant, now_ms())),
        }))
    }

    async fn list_tenants(
        &self,
        req: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check(r.page_size <= 100, "page_size", "must be at most 100");
        let after = if r.page_token.is_empty() {
            Some(String::new())
        } else {
            parse_page_token(&r.page_token)
        };
        v.check(
            after.is_some(),
            "page_token",
            "is not a token returned by ListTenants",
        );
        v.finish().map_err(Error::InvalidArgument)?;
        let size = if r.page_size == 0 { 50 } else { r.page_size };
        let (tenants, next_page_token) = self
            .app
            .list_tenants(&after.unwrap_or_default(), size)
            .await?;
        let next_page_token = next_page_token
            .map(|id| page_token(&id))
            .unwrap_or_default();
        let now = now_ms();
        Ok(Response::new(ListTenantsResponse {
            tenants: tenants.iter().map(|t| tenant_pb(t, now)).collect(),
            next_page_token,
        }))
    }

    async fn update_tenant(
        &self,
        req: Request<UpdateTenantRequest>,
    ) -> Result<Response<UpdateTenantResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let now = now_ms();
        let mut v = Violations::new();
        let t = r.tenant.unwrap_or_default();
        v.identifier("tenant.tenant_id", &t.tenant_id, 128, "_-", true);
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        v.check(
            !paths.is_empty(),
            "update_mask",
            "must name the fields to change",
        );
        let mut patch = TenantPatch::default();
        for (i, p) in paths.iter().enumerate() {
            match p.as_str() {
                "name" => {
                    v.text("tenant.name", t.name.trim(), 1, 200);
                    patch.name = Some(t.name.trim().to_string());
                }
                "tier" | "base_tier" => {
                    let tier = tier_from(if p == "tier" { t.tier } else { t.base_tier });
                    v.check(
                        tier.is_some(),
                        format!("tenant.{p}"),
                        "must be BRONZE, GOLD or PLATINUM",
                    );
                    patch.tier = tier;
                }
                "monthly_budget_micros" => {
                    v.check(
                        t.monthly_budget_micros.is_none_or(|b| b > 0),
                        "tenant.monthly_budget_micros",
                        "must be positive (unset to remove)",
                    );
                    patch.monthly_budget = Some(t.monthly_budget_micros.map(Money::from_micros));
                }
                "trial" => {
                    patch.trial = Some(trial_from(t.trial.as_ref(), "tenant.trial", now, &mut v))
                }
                "job_quota" => {
                    v.check(
                        t.job_quota.is_none_or(|q| q > 0),
                        "tenant.job_quota",
                        "must be positive (unset to remove)",
                    );
                    patch.job_quota = Some(t.job_quota);
                }
                other => v.add(
                    format!("update_mask.paths[{i}]"),
                    format!("unknown or read-only field {}", echo(other)),
                ),
            }
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let tenant = self.app.update_tenant(&t.tenant_id, patch).await?;
        Ok(Response::new(UpdateTenantResponse {
            tenant: Some(tenant_pb(&tenant, now)),
        }))
    }

    async fn create_api_key(
        &self,
        req: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.identifier("tenant_id", &r.tenant_id, 128, "_-", true);
        let mode = key_mode_from(r.mode);
        v.check(mode.is_some(), "mode", "must be LIVE or TEST");
        v.text("name", &r.name, 0, 100);
        let expires = r.expire_time.as_ref().map(ms);
        v.check(
            expires.is_none_or(|e| e > now_ms()),
            "expire_time",
            "must be in the future",
        );
        v.finish().map_err(Error::InvalidArgument)?;
        let mode = mode.ok_or_else(|| Error::invalid("mode", "is required"))?;
        let (key, secret) = self
            .app
            .create_key(&r.tenant_id, mode, &r.name, expires)
            .await?;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(key_pb(&key)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        req: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        operator(&req)?;
        require_id("tenant_id", &req.get_ref().tenant_id)?;
        let keys = self.app.keys(&req.get_ref().tenant_id).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys.iter().map(key_pb).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        operator(&req)?;
        require_id("key_id", &req.get_ref().key_id)?;
        let key = self.app.revoke_key(&req.get_ref().key_id).await?;
        Ok(Response::new(RevokeApiKeyResponse {
            api_key: Some(key_pb(&key)),
        }))
    }

    async fn rotate_api_key(
        &self,
        req: Request<RotateApiKeyRequest>,
    ) -> Result<Response<RotateApiKeyResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.identifier("key_id", &r.key_id, 128, "_-", true);
        let expires = r.expire_time.as_ref().map(ms);
        v.check(
            expires.is_none_or(|e| e > now_ms()),
            "expire_time",
            "must be in the future",
        );
        v.finish().map_err(Error::InvalidArgument)?;
        let (key, secret, old) = self.app.rotate_key(&r.key_id, expires).await?;
        Ok(Response::new(RotateApiKeyResponse {
            api_key: Some(key_pb(&key)),
            secret,
            revoked_api_key: Some(key_pb(&old)),
        }))
    }
}
