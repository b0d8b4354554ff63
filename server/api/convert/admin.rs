//! Tenants and API keys (AdminService).

use super::{ms, tier_from, tier_pb, ts};
use crate::domain::Money;
use crate::domain::tenant::{ApiKey, KeyMode, Tenant, Trial};
use crate::domain::validate::Violations;
use crate::pb;

pub fn tenant_pb(t: &Tenant, now_ms: i64) -> pb::Tenant {
    pb::Tenant {
        tenant_id: t.id.clone(),
        name: t.name.clone(),
        tier: tier_pb(t.tier_at(now_ms)) as i32,
        monthly_budget_micros: t.monthly_budget.map(Money::micros),
        create_time: Some(ts(t.created_ms)),
        trial: t.trial.as_ref().map(|tr| pb::Trial {
            tier: tier_pb(tr.tier) as i32,
            end_time: Some(ts(tr.end_ms)),
        }),
        base_tier: tier_pb(t.base_tier) as i32,
        job_quota: t.job_quota,
    }
}

pub fn key_pb(k: &ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        key_id: k.id.clone(),
        tenant_id: k.tenant_id.clone(),
        name: k.name.clone(),
        mode: match k.mode {
            KeyMode::Live => pb::ApiKeyMode::Live,
            KeyMode::Test => pb::ApiKeyMode::Test,
        } as i32,
        prefix: k.prefix.clone(),
        create_time: Some(ts(k.created_ms)),
        expire_time: k.expires_ms.map(ts),
        revoke_time: k.revoked_ms.map(ts),
        last_used_time: k.last_used_ms.map(ts),
    }
}

pub fn trial_from(
    t: Option<&pb::Trial>,
    field: &str,
    now_ms: i64,
    v: &mut Violations,
) -> Option<Trial> {
    let t = t?;
    let tier = tier_from(t.tier);
    v.check(
        tier.is_some(),
        format!("{field}.tier"),
        "must be BRONZE, GOLD or PLATINUM",
    );
    let end = t.end_time.as_ref().map(ms);
    v.check(
        end.is_some_and(|e| e > now_ms),
        format!("{field}.end_time"),
        "must be in the future",
    );
    Some(Trial {
        tier: tier?,
        end_ms: end?,
    })
}
