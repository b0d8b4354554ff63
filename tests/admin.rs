//! AdminService: tenants and keys.

use crate::harness::*;
use aiprod_sdk::pb;
use tonic::Code;

#[tokio::test]
async fn tenants_and_keys_lifecycle() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let a = admin.admin();

    let err = expect_err(
        a.create_tenant(pb::CreateTenantRequest {
            name: String::new(),
            tier: 0,
            monthly_budget_micros: Some(0),
            ..Default::default()
        })
        .await,
    );
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(fields, ["monthly_budget_micros", "name", "tier"]);

    let mut ids = Vec::new();
    for i in 0..3 {
        let t = a
            .create_tenant(pb::CreateTenantRequest {
                name: format!("t{i}"),
                tier: pb::Tier::Bronze as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap();
        ids.push(t.tenant_id);
    }
    let page1 = a
        .list_tenants(pb::ListTenantsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let page2 = a
        .list_tenants(pb::ListTenantsRequest {
            page_size: 2,
            page_token: page1.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<_> = page1
        .tenants
        .iter()
        .chain(&page2.tenants)
        .map(|t| t.tenant_id.clone())
        .collect();
    assert_eq!(listed, ids);
    assert!(page2.next_page_token.is_empty());

    let updated = a
        .update_tenant(pb::UpdateTenantRequest {
            tenant: Some(pb::Tenant {
                tenant_id: ids[0].clone(),
                tier: pb::Tier::Gold as i32,
                name: "renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["tier".into(), "name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(
        (updated.tier, updated.name.as_str()),
        (pb::Tier::Gold as i32, "renamed")
    );
    let got = a
        .get_tenant(pb::GetTenantRequest {
            tenant_id: ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(got.tier, pb::Tier::Gold as i32);
    assert_eq!(
        expect_err(
            a.get_tenant(pb::GetTenantRequest {
                tenant_id: "ten_missing".into()
            })
            .await
        )
        .code(),
        Code::NotFound
    );

    let created = a
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: ids[0].clone(),
            mode: pb::ApiKeyMode::Live as i32,
            name: "ci".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("aiprod_live_"));
    let key = created.api_key.unwrap();
    assert!(created.secret.starts_with(&key.prefix));
    let keys = a
        .list_api_keys(pb::ListApiKeysRequest {
            tenant_id: ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(keys.len(), 1);
    assert!(
        !format!("{keys:?}").contains(&created.secret[key.prefix.len()..]),
        "the secret is never listed"
    );

    let err = expect_err(
        a.create_api_key(pb::CreateApiKeyRequest {
            tenant_id: ids[0].clone(),
            mode: 0,
            expire_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await,
    );
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(fields, ["expire_time", "mode"]);
    let err = expect_err(
        a.create_api_key(pb::CreateApiKeyRequest {
            tenant_id: "ten_missing".into(),
            mode: 2,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(err.code(), Code::NotFound);
    let revoked = a
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    let again = a
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert_eq!(
        revoked.revoke_time, again.revoke_time,
        "revoking twice keeps the first time"
    );
    assert_eq!(
        expect_err(
            a.revoke_api_key(pb::RevokeApiKeyRequest {
                key_id: "key_missing".into()
            })
            .await
        )
        .code(),
        Code::NotFound
    );
}
