//! Tiers, quotas, budgets, rate limits and the key lifecycle.

use crate::harness::*;
use aiprod_sdk::{Client, pb};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

async fn tenant_with(
    server: &TestServer,
    req: pb::CreateTenantRequest,
) -> (String, String, Client) {
    let admin = server.admin().await;
    let tenant = admin
        .admin()
        .create_tenant(req)
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let key = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id.clone(),
            mode: pb::ApiKeyMode::Test as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let client = Client::connect(server.endpoint.clone(), &key.secret)
        .await
        .unwrap();
    (tenant.tenant_id, key.secret, client)
}

fn future(secs: i64) -> prost_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    prost_types::Timestamp {
        seconds: now.as_secs() as i64 + secs,
        nanos: 0,
    }
}

#[tokio::test]
async fn tiers_gate_presets_and_changes_apply_at_once() {
    let server = TestServer::start().await;
    let (bronze_id, _, bronze) = server.tenant("bronze", pb::Tier::Bronze).await;
    let err = expect_err(
        bronze
            .render()
            .create_job(create_request("b-1", "brand_campaign"))
            .await,
    );
    assert_eq!(
        (err.code(), err.reason().as_deref()),
        (Code::PermissionDenied, Some("PRESET_NOT_IN_TIER"))
    );
    assert!(
        err.message().contains("quick_social"),
        "names what the tier allows: {}",
        err.message()
    );
    // Estimates stay open (a partner may price an upgrade).
    bronze
        .costs()
        .estimate_cost(pb::EstimateCostRequest {
            preset_id: "premium_spot".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, _, gold) = server.tenant("gold", pb::Tier::Gold).await;
    assert_eq!(
        expect_err(
            gold.render()
                .create_job(create_request("g-1", "premium_spot"))
                .await
        )
        .code(),
        Code::PermissionDenied
    );
    create(&gold, create_request("g-2", "brand_campaign")).await;

    server
        .admin()
        .await
        .admin()
        .update_tenant(pb::UpdateTenantRequest {
            tenant: Some(pb::Tenant {
                tenant_id: bronze_id,
                tier: pb::Tier::Platinum as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["tier".into()],
            }),
        })
        .await
        .unwrap();
    let job = create(&bronze, create_request("b-2", "premium_spot")).await;
    assert_eq!(
        job.state,
        pb::JobState::Queued as i32,
        "the upgrade applies to the very next call"
    );

    // A trial grants its tier until it ends.
    let (_, _, trial) = tenant_with(
        &server,
        pb::CreateTenantRequest {
            name: "trial".into(),
            tier: pb::Tier::Bronze as i32,
            trial: Some(pb::Trial {
                tier: pb::Tier::Platinum as i32,
                end_time: Some(future(3600)),
            }),
            ..Default::default()
        },
    )
    .await;
    create(&trial, create_request("t-1", "premium_spot")).await;
    let usage = trial
        .costs()
        .get_usage(pb::GetUsageRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            usage.tier,
            usage.concurrent_job_limit,
            usage.requests_per_minute
        ),
        (pb::Tier::Platinum as i32, 50, 500)
    );
}

#[tokio::test]
async fn concurrent_jobs_and_job_quota_are_enforced() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(test_config(&dir, 5_000), dir).await;
    let (_, _, bronze) = server.tenant("bronze", pb::Tier::Bronze).await;
    let first = create(&bronze, create_request("c-1", "quick_social")).await;
    create(&bronze, create_request("c-2", "quick_social")).await;
    let err = expect_err(
        bronze
            .render()
            .create_job(create_request("c-3", "quick_social"))
            .await,
    );
    assert_eq!(err.code(), Code::ResourceExhausted);
    let details = err.details();
    let quota = details.quota_failure().expect("QuotaFailure");
    assert!(quota.violations[0].subject.ends_with("/concurrent_jobs"));
    // A replay of an accepted request still answers with its job.
    assert_eq!(
        create(&bronze, create_request("c-1", "quick_social"))
            .await
            .job_id,
        first.job_id
    );
    bronze
        .render()
        .cancel_job(pb::CancelJobRequest {
            job_id: first.job_id,
            reason: String::new(),
        })
        .await
        .unwrap();
    create(&bronze, create_request("c-3", "quick_social")).await;

    let (_, _, quota) = tenant_with(
        &server,
        pb::CreateTenantRequest {
            name: "q".into(),
            tier: pb::Tier::Platinum as i32,
            job_quota: Some(1),
            ..Default::default()
        },
    )
    .await;
    create(&quota, create_request("q-1", "quick_social")).await;
    let err = expect_err(
        quota
            .render()
            .create_job(create_request("q-2", "quick_social"))
            .await,
    );
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.details().quota_failure().unwrap().violations[0]
            .subject
            .ends_with("/job_quota")
    );
    let usage = quota
        .costs()
        .get_usage(pb::GetUsageRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (usage.job_quota, usage.jobs_total, usage.jobs),
        (Some(1), 1, 1)
    );
}

#[tokio::test]
async fn rate_limits_are_per_tenant_with_a_retry_delay() {
    let server = TestServer::start().await;
    let (_, _, bronze) = server.tenant("flood", pb::Tier::Bronze).await;
    let (_, _, quiet) = server.tenant("quiet", pb::Tier::Bronze).await;
    for _ in 0..10 {
        bronze
            .presets()
            .list_presets(pb::ListPresetsRequest {})
            .await
            .expect("within 10 requests per minute");
    }
    let err = expect_err(
        bronze
            .presets()
            .list_presets(pb::ListPresetsRequest {})
            .await,
    );
    assert_eq!(err.code(), Code::ResourceExhausted);
    let retry = err.retry_after().expect("RetryInfo");
    assert!(
        retry > Duration::from_secs(4) && retry <= Duration::from_secs(6),
        "{retry:?}"
    );
    assert!(
        err.details().quota_failure().unwrap().violations[0]
            .subject
            .ends_with("/requests_per_minute")
    );
    // The flooding tenant does not degrade the quiet one.
    quiet
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .expect("another tenant is unaffected");
}

#[tokio::test]
async fn monthly_budget_alerts_steers_and_refuses() {
    let server = TestServer::start().await;
    let (_, _, gold) = tenant_with(
        &server,
        pb::CreateTenantRequest {
            name: "budget".into(),
            tier: pb::Tier::Gold as i32,
            monthly_budget_micros: Some(1_000_000),
            ..Default::default()
        },
    )
    .await;
    let alerts = |events: &[pb::JobEvent]| -> Vec<u32> {
        events
            .iter()
            .filter_map(|e| match &e.payload {
                Some(pb::job_event::Payload::BudgetAlert(a)) => Some(a.threshold_percent),
                _ => None,
            })
            .collect()
    };
    let backends = |events: &[pb::JobEvent]| -> Vec<i32> {
        events
            .iter()
            .filter_map(|e| match &e.payload {
                Some(pb::job_event::Payload::ShotRendered(s)) => Some(s.backend),
                _ => None,
            })
            .collect()
    };
    // $0.91 of a $1.00 budget: alerts at 70 % and 90 %, on Runway.
    let first = create(
        &gold,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("m-1", "brand_campaign")
        },
    )
    .await;
    let events = watch_to_end(&gold, &first.job_id, 0).await;
    assert_eq!(alerts(&events), [70, 90]);
    assert!(
        backends(&events)
            .iter()
            .all(|b| *b == pb::Backend::Runway as i32)
    );
    // Past 90 %: the next job is steered to the cheapest backend that still meets the preset's
    // floor (Runway for brand_campaign's 0.8: a budget never buys quality below the floor,
    // issue 9), and crosses 100 %.
    let second = create(
        &gold,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("m-2", "brand_campaign")
        },
    )
    .await;
    let events = watch_to_end(&gold, &second.job_id, 0).await;
    assert!(
        backends(&events)
            .iter()
            .all(|b| *b == pb::Backend::Runway as i32),
        "{:?}",
        backends(&events)
    );
    assert_eq!(alerts(&events), [100]);
    // At 100 %: new jobs are refused.
    let err = expect_err(
        gold.render()
            .create_job(create_request("m-3", "brand_campaign"))
            .await,
    );
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.details().quota_failure().unwrap().violations[0]
            .subject
            .ends_with("/monthly_budget")
    );
    let usage = gold
        .costs()
        .get_usage(pb::GetUsageRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.jobs, 2);
    assert!(usage.budget_used_percent >= 100.0, "{usage:?}");
    assert!(usage.billed_micros > 0 && usage.metered_micros >= usage.billed_micros);
    assert_eq!(
        (
            usage.video_minutes,
            usage.included_minutes,
            usage.monthly_fee_micros
        ),
        (2.0, 200, 299_000_000)
    );
}

#[tokio::test]
async fn keys_expire_rotate_and_revoke() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let tenant = admin
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: "keys".into(),
            tier: pb::Tier::Gold as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let short = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id.clone(),
            mode: 2,
            name: "short".into(),
            expire_time: Some(future(2)),
        })
        .await
        .unwrap()
        .into_inner();
    let client = Client::connect(server.endpoint.clone(), &short.secret)
        .await
        .unwrap();
    client
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .expect("valid before expiry");
    let listed = admin
        .admin()
        .list_api_keys(pb::ListApiKeysRequest {
            tenant_id: tenant.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(listed[0].last_used_time.is_some(), "last use is recorded");
    // Wait out the expiry time itself (wall clock, not progress).
    let expiry = short.api_key.as_ref().unwrap().expire_time.unwrap();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        <= expiry.seconds
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = expect_err(
        client
            .presets()
            .list_presets(pb::ListPresetsRequest {})
            .await,
    );
    assert_eq!(
        (err.code(), err.reason().as_deref()),
        (Code::Unauthenticated, Some("API_KEY_EXPIRED"))
    );

    let live = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id.clone(),
            mode: 2,
            name: "main".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let old_client = Client::connect(server.endpoint.clone(), &live.secret)
        .await
        .unwrap();
    let rotated = admin
        .admin()
        .rotate_api_key(pb::RotateApiKeyRequest {
            key_id: live.api_key.unwrap().key_id,
            expire_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        rotated
            .revoked_api_key
            .as_ref()
            .unwrap()
            .revoke_time
            .is_some()
    );
    assert_eq!(rotated.api_key.as_ref().unwrap().name, "main");
    let new_client = Client::connect(server.endpoint.clone(), &rotated.secret)
        .await
        .unwrap();
    new_client
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .expect("the new key works");
    let err = expect_err(
        old_client
            .presets()
            .list_presets(pb::ListPresetsRequest {})
            .await,
    );
    assert_eq!(err.reason().as_deref(), Some("API_KEY_REVOKED"));
    // The old key cannot be rotated again.
    let old_id = rotated
        .revoked_api_key
        .as_ref()
        .map(|k| k.key_id.clone())
        .unwrap_or_default();
    let err = expect_err(
        admin
            .admin()
            .rotate_api_key(pb::RotateApiKeyRequest {
                key_id: old_id,
                expire_time: None,
            })
            .await,
    );
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn keys_never_appear_in_the_database_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("aiprod.db");
    let db = format!("sqlite://{}", db_path.display());
    let ready = dir.path().join("ready");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--admin-token",
            ADMIN_TOKEN,
            "--sandbox-latency-ms",
            "1",
            "--sandbox-short-side",
            "90",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .env("AIPROD_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut endpoint = String::new();
    for _ in 0..300 {
        if let Ok(a) = std::fs::read_to_string(&ready)
            && !a.is_empty()
        {
            endpoint = format!("http://{a}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = aiprod_sdk::AdminClient::connect(endpoint.clone(), ADMIN_TOKEN)
        .await
        .unwrap();
    let tenant = admin
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: "secrets".into(),
            tier: pb::Tier::Platinum as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let mut secrets = Vec::new();
    for mode in [1, 2, 2] {
        let k = admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant_id: tenant.tenant_id.clone(),
                mode,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        secrets.push(k.secret);
    }
    let rotated = admin
        .admin()
        .rotate_api_key(pb::RotateApiKeyRequest {
            key_id: format!("key_{}", &secrets[2][12..24]),
            expire_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(rotated.secret);
    for s in &secrets {
        let client = Client::connect(endpoint.clone(), s).await.unwrap();
        let _ = client
            .presets()
            .list_presets(pb::ListPresetsRequest {})
            .await;
        let job = client
            .render()
            .create_job(create_request(&format!("s-{}", &s[12..20]), "quick_social"))
            .await;
        if let Ok(job) = job {
            watch_to_end(&client, &job.into_inner().job.unwrap().job_id, 0).await;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut haystack = Vec::new();
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for f in std::fs::read_dir(d).unwrap() {
            let path = f.unwrap().path();
            if path.is_dir() {
                dirs.push(path); // artifacts/
            } else {
                haystack.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    assert!(
        haystack.iter().any(|(p, _)| p.ends_with("server.log")),
        "the log was captured"
    );
    assert!(
        haystack
            .iter()
            .any(|(p, bytes)| p.ends_with("server.log") && bytes.len() > 1000),
        "debug logs were written"
    );
    for secret in &secrets {
        for needle in [secret.as_str(), &secret[12..]] {
            for (path, bytes) in &haystack {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "a key appears in plaintext in {path}"
                );
            }
        }
    }
}

#[tokio::test]
async fn onboard_beta_creates_a_platinum_trial_with_quota_and_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aiprod.db").display());
    let out = std::process::Command::new(binary())
        .args([
            "admin",
            "--database-url",
            &db,
            "onboard-beta",
            "--name",
            "Beta Co",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("aiprod_live_"));
    let mut config = aiprod::config::Config {
        database_url: db,
        admin_token: Some(ADMIN_TOKEN.into()),
        demo_tenant: false,
        ..Default::default()
    };
    config.sandbox.latency_ms = 1;
    let server = TestServer::start_with(config, Arc::new(dir)).await;
    let client = Client::connect(server.endpoint.clone(), &secret)
        .await
        .unwrap();
    let usage = client
        .costs()
        .get_usage(pb::GetUsageRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.tier, pb::Tier::Platinum as i32);
    assert_eq!(
        (usage.job_quota, usage.monthly_budget_micros),
        (Some(500), Some(3_000_000_000))
    );
}

#[tokio::test]
async fn calls_past_the_concurrency_limit_are_shed_at_once() {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let mut config = test_config(&dir, 2);
    config.concurrency_limit = 1;
    let server = TestServer::start_with(config, dir).await;
    let (_, _, client) = server.tenant("burst", pb::Tier::Platinum).await;
    // 40 calls at once on one connection: the first holds the only slot while it reads the
    // database (its key is not cached yet); calls arriving meanwhile are shed, not queued.
    let calls = (0..40).map(|_| {
        let client = client.clone();
        async move {
            client
                .render()
                .list_jobs(pb::ListJobsRequest::default())
                .await
        }
    });
    let (mut ok, mut shed) = (0, 0);
    for answer in futures::future::join_all(calls).await {
        match answer {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.retry_after().is_some(), "RetryInfo: {e:?}");
                assert_eq!(
                    e.details().quota_failure().unwrap().violations[0].subject,
                    "server/concurrency_limit"
                );
                shed += 1;
            }
        }
    }
    assert!(ok >= 1 && shed >= 1, "{ok} answered, {shed} shed");
    // The slots come back: a call after the burst is answered.
    client
        .render()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("answered once the burst is over");
}
