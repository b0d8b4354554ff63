//! IccService: manifest review, edits with etags and field masks, approval, brand markers.

use crate::harness::*;
use aiprod_sdk::pb;
use pb::JobState::*;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn edit_requote_and_approve_with_etags() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let job = create(&client, create_request("icc-1", "brand_campaign")).await;
    // No manifest before planning is done... or right after it: either NOT_FOUND or a manifest.
    wait_for_state(&client, &job.job_id, AwaitingApproval).await;
    let got = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let m1 = got.manifest.unwrap();
    assert_eq!(m1.editable_fields, ["shots", "aspect_ratio", "audio_style"]);
    assert!(m1.consistency_markers.is_some());

    // Seven shots that still add up to 60 s, one on Veo (8 s max), and a new audio style.
    let mut shots: Vec<pb::Shot> = m1.shots.clone();
    shots[0].description = "Sunrise over the ridge, runner silhouette".into();
    shots[1].duration_s = 8;
    shots[1].backend = pb::Backend::Veo as i32;
    shots.push(pb::Shot {
        shot_id: String::new(),
        description: "Logo lock-up".into(),
        duration_s: 2,
        camera: pb::CameraMovement::Static as i32,
        backend: 0,
    });
    let updated = client
        .icc()
        .update_manifest(pb::UpdateManifestRequest {
            job_id: job.job_id.clone(),
            manifest: Some(pb::Manifest {
                shots,
                audio_style: "upbeat acoustic".into(),
                ..Default::default()
            }),
            update_mask: mask(&["shots", "audio_style"]),
            etag: m1.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let m2 = updated.manifest.unwrap();
    assert_eq!(
        (m2.revision, m2.shots.len(), m2.audio_style.as_str()),
        (2, 7, "upbeat acoustic")
    );
    assert_ne!(m2.etag, m1.etag);
    assert_eq!(m2.shots[6].shot_id, "shot-07", "new shots get fresh ids");
    assert_eq!(m2.history.len(), 2);
    assert_eq!(m2.history[1].changed_fields, ["shots", "audio_style"]);
    let q2 = updated.quote.unwrap();
    assert!(
        q2.total_micros > 910_000,
        "Veo costs more: {}",
        q2.total_micros
    );
    assert_eq!(
        q2.shots[1].backend,
        pb::Backend::Veo as i32,
        "the preference is honoured"
    );

    // A stale etag is ABORTED, for edits and approval alike.
    let stale = pb::UpdateManifestRequest {
        job_id: job.job_id.clone(),
        manifest: Some(pb::Manifest {
            audio_style: "x".into(),
            ..Default::default()
        }),
        update_mask: mask(&["audio_style"]),
        etag: m1.etag.clone(),
    };
    assert_eq!(
        expect_err(client.icc().update_manifest(stale.clone()).await).code(),
        Code::Aborted
    );
    let err = expect_err(
        client
            .icc()
            .approve_manifest(pb::ApproveManifestRequest {
                job_id: job.job_id.clone(),
                etag: m1.etag.clone(),
            })
            .await,
    );
    assert_eq!(err.code(), Code::Aborted);

    // Invalid edits name every problem.
    let bad = pb::UpdateManifestRequest {
        job_id: job.job_id.clone(),
        manifest: Some(pb::Manifest {
            shots: vec![pb::Shot {
                shot_id: "a".into(),
                description: String::new(),
                duration_s: 12,
                camera: 0,
                backend: 0,
            }],
            ..Default::default()
        }),
        update_mask: mask(&["shots", "consistency_markers", "colour"]),
        etag: m2.etag.clone(),
    };
    let err = expect_err(client.icc().update_manifest(bad).await);
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "manifest.shots",
            "manifest.shots[0].camera",
            "manifest.shots[0].description",
            "manifest.shots[0].duration_s",
            "update_mask.paths[1]",
            "update_mask.paths[2]"
        ]
    );
    let err = expect_err(
        client
            .icc()
            .update_manifest(pb::UpdateManifestRequest {
                job_id: job.job_id.clone(),
                ..Default::default()
            })
            .await,
    );
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(fields, ["etag", "update_mask"]);

    let approved = client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: job.job_id.clone(),
            etag: m2.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(approved.state, Rendering as i32);
    // Frozen after approval.
    let err = expect_err(
        client
            .icc()
            .update_manifest(pb::UpdateManifestRequest {
                etag: m2.etag.clone(),
                ..stale
            })
            .await,
    );
    assert_eq!(err.code(), Code::FailedPrecondition);
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&events);
    let rendered: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::ShotRendered(s)) => Some((s.shot_id.clone(), s.backend)),
            _ => None,
        })
        .collect();
    assert_eq!(
        rendered.len(),
        7,
        "the approved revision is the one rendered"
    );
    // Shots render in parallel: find shot-02 by id, not by position.
    assert!(
        rendered.contains(&("shot-02".to_string(), pb::Backend::Veo as i32)),
        "{rendered:?}"
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_eq!(report.quote_micros, q2.total_micros);
    let final_manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    assert!(final_manifest.approved && final_manifest.editable_fields.is_empty());
}

#[tokio::test]
async fn brand_markers_are_cached_per_tenant_and_brand() {
    let server = TestServer::start().await;
    let client = server.platinum("acme").await;
    let other = server.platinum("globex").await;
    let get = |c: &aiprod_sdk::Client, brand: &str| {
        let c = c.clone();
        let brand = brand.to_string();
        async move {
            c.icc()
                .get_brand_markers(pb::GetBrandMarkersRequest { brand_id: brand })
                .await
        }
    };
    assert_eq!(
        expect_err(get(&client, "acme-shoes").await).code(),
        Code::NotFound
    );

    let first = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("brand-1", "brand_campaign")
        },
    )
    .await;
    let events = watch_to_end(&client, &first.job_id, 0).await;
    let ready = |events: &[pb::JobEvent]| {
        events.iter().find_map(|e| match &e.payload {
            Some(pb::job_event::Payload::ManifestReady(r)) => Some(*r),
            _ => None,
        })
    };
    assert!(!ready(&events).unwrap().brand_cache_hit);
    let cached = get(&client, "acme-shoes").await.unwrap().into_inner();
    let markers = cached.markers.unwrap();
    assert!(cached.expire_time.is_some());
    // Never shared across tenants.
    assert_eq!(
        expect_err(get(&other, "acme-shoes").await).code(),
        Code::NotFound
    );

    let second = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            brief: "A different brief for the same brand, autumn range.".into(),
            ..create_request("brand-2", "brand_campaign")
        },
    )
    .await;
    let events = watch_to_end(&client, &second.job_id, 0).await;
    let r = ready(&events).unwrap();
    assert!(r.brand_cache_hit);
    let m = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: second.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    assert_eq!(
        m.consistency_markers.unwrap(),
        markers,
        "the brand keeps its look"
    );
    let report = costs(&client, &second.job_id).await;
    assert!(
        report
            .ledger
            .iter()
            .all(|l| l.kind != pb::LedgerKind::Planner as i32),
        "a cache hit costs no planner call"
    );
    let estimate = client
        .costs()
        .estimate_cost(pb::EstimateCostRequest {
            preset_id: "brand_campaign".into(),
            brand_id: "acme-shoes".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(estimate.brand_cache_hit);
    assert_eq!(estimate.recommended.unwrap().planner_micros, 0);

    // Replace, validate, invalidate.
    let new = pb::ConsistencyMarkers {
        style: pb::VisualStyle::Minimal as i32,
        color_palette: vec!["#112233".into()],
        mood: pb::Mood::Calm as i32,
        lighting: pb::Lighting::Natural as i32,
        character_style: pb::CharacterStyle::Abstract as i32,
    };
    let stored = client
        .icc()
        .update_brand_markers(pb::UpdateBrandMarkersRequest {
            brand_id: "acme-shoes".into(),
            markers: Some(new.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.markers.unwrap(), new);
    let err = expect_err(
        client
            .icc()
            .update_brand_markers(pb::UpdateBrandMarkersRequest {
                brand_id: "acme-shoes".into(),
                markers: Some(pb::ConsistencyMarkers {
                    color_palette: vec!["red".into()],
                    ..Default::default()
                }),
            })
            .await,
    );
    let mut fields = field_names(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "markers.character_style",
            "markers.color_palette[0]",
            "markers.lighting",
            "markers.mood",
            "markers.style"
        ]
    );
    let gone = client
        .icc()
        .invalidate_brand_markers(pb::InvalidateBrandMarkersRequest {
            brand_id: "acme-shoes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.existed);
    assert_eq!(
        expect_err(get(&client, "acme-shoes").await).code(),
        Code::NotFound
    );
    let again = client
        .icc()
        .invalidate_brand_markers(pb::InvalidateBrandMarkersRequest {
            brand_id: "acme-shoes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.existed);
    let err = expect_err(get(&client, "").await);
    assert_eq!(field_names(&err), ["brand_id"]);
}
