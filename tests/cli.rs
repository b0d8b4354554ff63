//! The `aiprod` command-line client, driven as a user or a script would: the built binary against a
//! real server over a real socket; its JSON output parsed, its exit codes checked, its progress
//! bars drawn under a pseudo-terminal (`script`), a download verified.

use crate::harness::*;
use aiprod_sdk::pb;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::process::Output;

/// Runs `aiprod ARGS` with the server's endpoint and `key` in the environment.
async fn aiprod(endpoint: &str, key: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .args(args)
        .env("AIPROD_ENDPOINT", endpoint)
        .env("AIPROD_API_KEY", key)
        .env_remove("AIPROD_LOG")
        .output()
        .await
        .expect("run aiprod")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "aiprod failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn platinum_key(server: &TestServer) -> String {
    server.tenant("cli", pb::Tier::Platinum).await.1
}

#[tokio::test]
async fn json_output_from_create_to_a_verified_download() {
    let server = TestServer::start().await;
    let key = platinum_key(&server).await;
    let ep = server.endpoint.as_str();

    let presets = json(&aiprod(ep, &key, &["presets", "--output", "json"]).await);
    let ids: Vec<&str> = presets["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["preset_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["quick_social", "brand_campaign", "premium_spot"]);

    let estimate = json(
        &aiprod(
            ep,
            &key,
            &["estimate", "--preset", "quick_social", "--output", "json"],
        )
        .await,
    );
    let quote = estimate["recommended"]["total_micros"].as_i64().unwrap();
    assert!(quote > 0, "{estimate}");

    let created = json(
        &aiprod(
            ep,
            &key,
            &[
                "jobs",
                "create",
                "--preset",
                "quick_social",
                "--brief",
                BRIEF,
                "--auto-approve",
                "--label",
                "channel=cli",
                "--output",
                "json",
            ],
        )
        .await,
    );
    let job_id = created["job"]["job_id"].as_str().unwrap().to_string();
    assert_eq!(created["job"]["labels"]["channel"], "cli");
    assert!(
        created["job"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("sdk-"),
        "the SDK filled the idempotency key: {created}"
    );

    // One JSON line per event, gap-free, ending DELIVERED; exit 0.
    let watched = aiprod(ep, &key, &["jobs", "watch", &job_id, "--output", "json"]).await;
    assert!(watched.status.success(), "{watched:?}");
    let events: Vec<Value> = String::from_utf8(watched.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"].as_u64(), Some(i as u64 + 1), "{e}");
    }
    assert_eq!(events.last().unwrap()["state"], "JOB_STATE_DELIVERED");
    assert!(events.iter().any(|e| e["shot_rendered"].is_object()));

    let job = json(&aiprod(ep, &key, &["jobs", "get", &job_id, "--output", "json"]).await);
    let video = &job["job"]["video"];
    let path = server.dir.path().join("cli-video.mp4");
    let downloaded = json(
        &aiprod(
            ep,
            &key,
            &[
                "jobs",
                "download",
                &job_id,
                path.to_str().unwrap(),
                "--output",
                "json",
            ],
        )
        .await,
    );
    let bytes = std::fs::read(&path).expect("the video is written");
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(bytes.len() as u64, video["size_bytes"].as_u64().unwrap());
    assert_eq!(sha, video["sha256"].as_str().unwrap());
    assert_eq!(downloaded["sha256"], video["sha256"]);
    assert_eq!(downloaded["path"], path.to_str().unwrap());
    assert!(bytes.len() > 1000 && &bytes[4..8] == b"ftyp", "an MP4 file");

    // The older `aiprod download` still works (text output, -o PATH).
    let old = server.dir.path().join("old.mp4");
    let out = aiprod(
        ep,
        &key,
        &["download", &job_id, "-o", old.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&old).unwrap(), bytes);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&sha));

    let costs = json(&aiprod(ep, &key, &["costs", &job_id, "--output", "json"]).await);
    assert_eq!(costs["report"]["certified"], true, "{costs}");
    assert!(
        costs["report"]["billed_micros"].as_i64().unwrap()
            <= costs["report"]["guaranteed_max_micros"].as_i64().unwrap()
    );
    let usage = json(&aiprod(ep, &key, &["usage", "--output", "json"]).await);
    assert_eq!(usage["jobs"], 1, "{usage}");
    let list = json(
        &aiprod(
            ep,
            &key,
            &["jobs", "list", "--state", "delivered", "--output", "json"],
        )
        .await,
    );
    assert_eq!(list["jobs"][0]["job_id"], job_id.as_str());
}

#[tokio::test]
async fn manifest_edit_and_approve() {
    let server = TestServer::start().await;
    let (_, key, client) = server.tenant("cli-icc", pb::Tier::Platinum).await;
    let ep = server.endpoint.as_str();
    let job_id = create(&client, create_request("cli-icc-1", "brand_campaign"))
        .await
        .job_id;
    wait_for_state(&client, &job_id, pb::JobState::AwaitingApproval).await;

    let manifest = json(&aiprod(ep, &key, &["manifest", "get", &job_id, "--output", "json"]).await);
    assert_eq!(manifest["manifest"]["revision"], 1);
    let edited = json(
        &aiprod(
            ep,
            &key,
            &[
                "manifest",
                "edit",
                &job_id,
                "--shot",
                "1=Opening: the city wakes up, a runner laces up",
                "--audio-style",
                "upbeat acoustic",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(edited["manifest"]["revision"], 2, "{edited}");
    assert_eq!(
        edited["manifest"]["shots"][0]["description"],
        "Opening: the city wakes up, a runner laces up"
    );
    let approved = json(
        &aiprod(
            ep,
            &key,
            &["manifest", "approve", &job_id, "--output", "json"],
        )
        .await,
    );
    assert_eq!(
        approved["job"]["state"], "JOB_STATE_RENDERING",
        "{approved}"
    );
    let done = aiprod(ep, &key, &["jobs", "watch", &job_id]).await;
    assert!(done.status.success(), "{done:?}");
    assert!(String::from_utf8_lossy(&done.stdout).contains("DELIVERED"));
}

#[tokio::test]
async fn exit_codes_follow_the_grpc_code() {
    let server = TestServer::start().await;
    let key = platinum_key(&server).await;
    let ep = server.endpoint.as_str();

    // NOT_FOUND (5) → 15, the error as JSON on stderr.
    let out = aiprod(ep, &key, &["jobs", "get", "job_nope", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(15), "{out:?}");
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["code"], "NOT_FOUND");
    assert!(out.stdout.is_empty());

    // INVALID_ARGUMENT (3) → 13, with the field violations.
    let out = aiprod(
        ep,
        &key,
        &[
            "jobs",
            "create",
            "--preset",
            "quick_social",
            "--brief",
            "x",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(13), "{out:?}");
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(err["error"]["field_violations"][0]["field"], "brief");
    // Text mode names the field too.
    let out = aiprod(
        ep,
        &key,
        &["jobs", "create", "--preset", "quick_social", "--brief", "x"],
    )
    .await;
    assert_eq!(out.status.code(), Some(13));
    assert!(String::from_utf8_lossy(&out.stderr).contains("brief: "));

    // A revoked-looking key: UNAUTHENTICATED (16) → 26; no key at all: a local error, 1.
    let out = aiprod(ep, "aiprod_test_nope", &["usage"]).await;
    assert_eq!(out.status.code(), Some(26), "{out:?}");
    let out = tokio::process::Command::new(binary())
        .args(["usage"])
        .env("AIPROD_ENDPOINT", ep)
        .env_remove("AIPROD_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test]
async fn watch_draws_progress_bars_on_a_terminal() {
    let server = TestServer::start().await;
    let (_, key, client) = server.tenant("cli-tty", pb::Tier::Platinum).await;
    let job_id = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("cli-tty-1", "quick_social")
        },
    )
    .await
    .job_id;
    // `script` gives the command a pseudo-terminal and records what it drew; -e: its exit code.
    let command = format!("{} jobs watch {job_id}", binary().display());
    let out = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("AIPROD_ENDPOINT", &server.endpoint)
        .env("AIPROD_API_KEY", &key)
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .output()
        .await
        .expect("script(1) from util-linux");
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{raw}");
    // Drawn with terminal control sequences (colours, cursor moves), unlike the plain lines of a pipe.
    assert!(raw.contains("\u{1b}[1A"), "{raw}");
    let screen = strip_ansi(&raw);
    // The job's bar (all shots rendered, final state, the cost against the quote)…
    assert!(screen.contains(&job_id), "{screen}");
    assert!(screen.contains("3/3 shots"), "{screen}");
    assert!(
        screen.contains("cost so far $0.22 of quote $0.22"),
        "{screen}"
    );
    assert!(screen.contains("DELIVERED"), "{screen}");
    // …a full bar, and one bar per shot with its backend and quality.
    assert!(
        screen.contains("[==============================]"),
        "{screen}"
    );
    for shot in ["shot-01", "shot-02", "shot-03"] {
        assert!(screen.contains(shot), "{shot}: {screen}");
    }
    assert!(
        screen.contains("[============] REPLICATE  quality"),
        "{screen}"
    );
}

/// The text of a terminal recording without its escape sequences (`ESC [ … letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
