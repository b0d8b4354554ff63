//! Authentication: keys, the admin credential, health and reflection without credentials.

use crate::harness::*;
use aiprod_sdk::{Client, pb};
use tonic::Code;

#[tokio::test]
async fn keys_are_required_checked_and_revocable() {
    let server = TestServer::start().await;
    let (_tenant, secret, client) = server.tenant("acme", pb::Tier::Gold).await;
    client
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .expect("a valid key works");

    // No key at all.
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut bare = pb::preset_service_client::PresetServiceClient::new(channel);
    let err = aiprod_sdk::Error::from(
        bare.list_presets(pb::ListPresetsRequest {})
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code(), err.reason().as_deref()),
        (Code::Unauthenticated, Some("MISSING_API_KEY"))
    );

    // One character changed: refused by the checksum.
    let mut mutated = secret.clone().into_bytes();
    let i = mutated.len() - 10;
    mutated[i] = if mutated[i] == b'x' { b'y' } else { b'x' };
    let typo = Client::connect(
        server.endpoint.clone(),
        std::str::from_utf8(&mutated).unwrap(),
    )
    .await
    .unwrap();
    let err = expect_err(typo.presets().list_presets(pb::ListPresetsRequest {}).await);
    assert_eq!(
        (err.code(), err.reason().as_deref()),
        (Code::Unauthenticated, Some("MALFORMED_API_KEY"))
    );

    // A tenant key cannot call AdminService; the admin token cannot call tenant RPCs.
    let as_admin = aiprod_sdk::AdminClient::connect(server.endpoint.clone(), &secret)
        .await
        .unwrap();
    let err = as_admin
        .admin()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let admin_as_tenant = Client::connect(server.endpoint.clone(), ADMIN_TOKEN)
        .await
        .unwrap();
    assert_eq!(
        expect_err(
            admin_as_tenant
                .presets()
                .list_presets(pb::ListPresetsRequest {})
                .await
        )
        .code(),
        Code::Unauthenticated
    );

    // Revocation is immediate.
    let admin = server.admin().await;
    let key_id = format!(
        "key_{}",
        &secret["aiprod_test_".len().."aiprod_test_".len() + 12]
    );
    let revoked = admin
        .admin()
        .revoke_api_key(pb::RevokeApiKeyRequest { key_id })
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert!(revoked.revoke_time.is_some());
    let err = expect_err(
        client
            .presets()
            .list_presets(pb::ListPresetsRequest {})
            .await,
    );
    assert_eq!(
        (err.code(), err.reason().as_deref()),
        (Code::Unauthenticated, Some("API_KEY_REVOKED"))
    );
}

#[tokio::test]
async fn health_and_reflection_need_no_key() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "aiprod.v1.RenderService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("list services")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "aiprod.v1.PresetService",
        "aiprod.v1.CostEstimatorService",
        "aiprod.v1.RenderService",
        "aiprod.v1.IccService",
        "aiprod.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }
}
