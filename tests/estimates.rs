//! PresetService and CostEstimatorService.

use crate::harness::*;
use aiprod_sdk::pb;
use tonic::Code;

#[tokio::test]
async fn presets_list_and_get() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let presets = client
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .presets;
    let ids: Vec<_> = presets.iter().map(|p| p.preset_id.as_str()).collect();
    assert_eq!(ids, ["quick_social", "brand_campaign", "premium_spot"]);
    let quick = &presets[0];
    assert_eq!(
        (
            quick.default_duration_s,
            quick.max_duration_s,
            quick.pipeline
        ),
        (30, 30, pb::Pipeline::FastTrack as i32)
    );
    assert_eq!(quick.cost_cap_per_minute_micros, 500_000);

    let got = client
        .presets()
        .get_preset(pb::GetPresetRequest {
            preset_id: "premium_spot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let premium = got.preset.unwrap();
    assert!(premium.final_review && premium.manifest_review);
    assert_eq!(premium.quality_threshold, 0.9);

    let err = expect_err(
        client
            .presets()
            .get_preset(pb::GetPresetRequest {
                preset_id: "nope".into(),
            })
            .await,
    );
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("brand_campaign"),
        "lists the known presets: {}",
        err.message()
    );
    let err = expect_err(
        client
            .presets()
            .get_preset(pb::GetPresetRequest {
                preset_id: String::new(),
            })
            .await,
    );
    assert_eq!(
        (err.code(), field_names(&err)),
        (Code::InvalidArgument, vec!["preset_id".to_string()])
    );
}

async fn estimate(
    client: &aiprod_sdk::Client,
    preset: &str,
    duration: Option<u32>,
) -> pb::EstimateCostResponse {
    client
        .costs()
        .estimate_cost(pb::EstimateCostRequest {
            preset_id: preset.into(),
            duration_s: duration,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn reference_quotes_and_options() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    for (preset, duration, shots, backend, total) in [
        ("quick_social", 30, 3, pb::Backend::Replicate, 220_000),
        ("brand_campaign", 60, 6, pb::Backend::Runway, 910_000),
        ("premium_spot", 120, 12, pb::Backend::Runway, 1_810_000),
    ] {
        let e = estimate(&client, preset, None).await;
        assert_eq!(e.duration_s, duration);
        let q = e.recommended.unwrap();
        assert_eq!((q.shots.len(), q.total_micros), (shots, total), "{preset}");
        assert!(
            q.shots.iter().all(|s| s.backend == backend as i32),
            "{preset}"
        );
        assert_eq!(q.planner_micros, 10_000);
        // Platinum tolerance is 10 %.
        assert_eq!(
            (q.tolerance_percent, q.guaranteed_max_micros),
            (10, total * 110 / 100)
        );
        assert_eq!(e.options.len(), 3);
        let veo = e
            .options
            .iter()
            .find(|o| o.backend == pb::Backend::Veo as i32)
            .unwrap();
        assert!(
            veo.cost_micros > total && veo.can_render,
            "veo is the premium option"
        );
        assert_eq!(e.competitors.len(), 4);
        let runway_direct = e.competitors.iter().find(|c| c.name == "Runway").unwrap();
        assert_eq!(
            runway_direct.cost_micros,
            2_500_000 * i64::from(duration) / 60
        );
        assert_eq!(
            runway_direct.savings_micros,
            runway_direct.cost_micros - total
        );
    }
}

#[tokio::test]
async fn estimates_validate_every_field() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let err = expect_err(
        client
            .costs()
            .estimate_cost(pb::EstimateCostRequest {
                preset_id: "brand_campaign".into(),
                duration_s: Some(1000),
                budget_micros: Some(-5),
                brand_id: "bad brand!".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(fields, ["brand_id", "budget_micros", "duration_s"]);

    let err = expect_err(
        client
            .costs()
            .estimate_cost(pb::EstimateCostRequest {
                preset_id: "tiktok".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(field_names(&err), ["preset_id"]);
    assert!(
        err.field_violations()[0]
            .description
            .contains("quick_social")
    );

    let err = expect_err(
        client
            .costs()
            .estimate_cost(pb::EstimateCostRequest {
                preset_id: "quick_social".into(),
                duration_s: Some(31),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        field_names(&err),
        ["duration_s"],
        "over the preset's maximum"
    );

    // A budget that no plan meeting the floor fits is an answer: every option with why, and the
    // cheapest compliant quote named (issue 9, departure 6).
    let e = client
        .costs()
        .estimate_cost(pb::EstimateCostRequest {
            preset_id: "brand_campaign".into(),
            budget_micros: Some(50_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!e.within_budget);
    assert!(e.reason.contains("$0.910000"), "{}", e.reason);
    assert_eq!(e.recommended.unwrap().total_micros, 910_000);
    assert_eq!(e.options.len(), 3);
    assert!(
        e.options
            .iter()
            .all(|o| !o.within_budget && !o.reason.is_empty())
    );

    // A shot list is quoted as given.
    let shots = (0..6)
        .map(|i| pb::Shot {
            shot_id: format!("s{i}"),
            description: "x".into(),
            duration_s: 10,
            camera: pb::CameraMovement::Pan as i32,
            backend: 0,
        })
        .collect();
    let e = client
        .costs()
        .estimate_cost(pb::EstimateCostRequest {
            preset_id: "brand_campaign".into(),
            shots,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (e.duration_s, e.recommended.unwrap().total_micros),
        (60, 910_000)
    );
}
