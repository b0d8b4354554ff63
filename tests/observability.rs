//! Prometheus metrics from the real binary.

use crate::harness::*;
use aiprod_sdk::{Client, pb};
use std::time::Duration;

#[tokio::test]
async fn metrics_count_calls_by_method_and_code_and_jobs_by_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aiprod.db").display());
    let tenant = std::process::Command::new(binary())
        .args([
            "admin",
            "--database-url",
            &db,
            "create-tenant",
            "--name",
            "m",
            "--tier",
            "platinum",
        ])
        .output()
        .unwrap();
    let tenant = String::from_utf8(tenant.stdout).unwrap().trim().to_string();
    let key = std::process::Command::new(binary())
        .args([
            "admin",
            "--database-url",
            &db,
            "create-key",
            "--tenant-id",
            &tenant,
        ])
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ready = dir.path().join("ready");
    let mut child = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--no-demo-tenant",
            "--sandbox-latency-ms",
            "1",
            "--sandbox-short-side",
            "90",
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--ready-file")
        .arg(&ready)
        .env("AIPROD_LOG", "warn")
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
    let client = Client::connect(endpoint, &key).await.unwrap();
    client
        .presets()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .unwrap();
    let _ = client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: "job_missing".into(),
        })
        .await;
    let job = create(&client, create_request("metrics-1", "quick_social")).await;
    watch_to_end(&client, &job.job_id, 0).await;
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for needle in [
        r#"grpc_server_requests_total{method="/aiprod.v1.PresetService/ListPresets",code="OK"} 1"#,
        r#"grpc_server_requests_total{method="/aiprod.v1.RenderService/GetJob",code="NOT_FOUND"} 1"#,
        r#"grpc_server_requests_total{method="/aiprod.v1.RenderService/WatchJob",code="OK"} 1"#,
        r#"jobs_total{state="DELIVERED"} 1"#,
        r#"backend_selection_total{backend="replicate"} 3"#,
        "pipeline_duration_seconds",
        "cost_per_minute_usd",
        "quality_score",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(!text.contains(&job.job_id), "no job ids in labels");
}

#[tokio::test]
async fn first_start_creates_the_demo_tenant_and_prints_its_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aiprod.db").display());
    let mut printed = Vec::new();
    for run in 0..2 {
        let ready = dir.path().join(format!("ready-{run}"));
        let out_path = dir.path().join(format!("stdout-{run}"));
        let mut child = std::process::Command::new(binary())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &db,
                "--sandbox-latency-ms",
                "1",
                "--sandbox-short-side",
                "90",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .env("AIPROD_LOG", "warn")
            .stdout(std::fs::File::create(&out_path).unwrap())
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
        let stdout = std::fs::read_to_string(&out_path).unwrap();
        let key = stdout
            .split_whitespace()
            .find(|w| w.starts_with("aiprod_test_"))
            .map(str::to_owned);
        if let Some(key) = &key {
            let client = Client::connect(endpoint, key).await.unwrap();
            let job = create(&client, create_request("demo-1", "premium_spot")).await;
            assert_eq!(
                job.state,
                pb::JobState::Queued as i32,
                "the demo tenant is Platinum"
            );
        }
        printed.push(key);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(printed[0].is_some(), "the first start prints a test key");
    assert!(printed[1].is_none(), "later starts print nothing");
}
