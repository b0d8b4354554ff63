//! Live keys render on the providers' HTTP APIs: the real server, with `[providers.*]` pointed at
//! fake Runway, Gemini (Veo) and Replicate servers on loopback that follow each provider's
//! documented task lifecycle (create → a few "running" polls → done).

use crate::harness::*;
use aiprod::config::{Config, Secret};
use aiprod_sdk::{Client, pb};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pb::JobState::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const RUNWAY_KEY: &str = "rw-e2e-key";
const VEO_KEY: &str = "AIza-e2e-key";
const REPLICATE_TOKEN: &str = "r8_e2e_token";
/// Status checks answered "running" before a task finishes.
const RUNNING_POLLS: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Runway,
    Veo,
    Replicate,
}

/// A request a fake provider received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Provider {
    kind: Kind,
    /// Every task fails instead of succeeding.
    fail: bool,
    /// Where the fake serves its outputs (`{base_url}/outputs/{task}.mp4`).
    base_url: std::sync::OnceLock<String>,
    /// Status checks answered "running" before a task finishes.
    running_polls: AtomicUsize,
    /// Output clips by duration in seconds: real MP4s in a provider-like format (not ours).
    clips: Mutex<HashMap<u32, Vec<u8>>>,
    /// Seconds the provider renders for each task, by task id.
    durations: Mutex<HashMap<String, u32>>,
    next_id: AtomicUsize,
    polls: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<Seen>>,
}

/// A fake provider on 127.0.0.1:0.
struct FakeProvider {
    base_url: String,
    state: Arc<Provider>,
}

impl FakeProvider {
    async fn start(kind: Kind, fail: bool) -> FakeProvider {
        let state = Arc::new(Provider {
            kind,
            fail,
            base_url: std::sync::OnceLock::new(),
            running_polls: AtomicUsize::new(RUNNING_POLLS),
            clips: Mutex::new(HashMap::new()),
            durations: Mutex::new(HashMap::new()),
            next_id: AtomicUsize::new(1),
            polls: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        state.base_url.set(base_url.clone()).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeProvider { base_url, state }
    }

    /// Tasks stay "running" for this many status checks.
    fn set_running_polls(&self, n: usize) {
        self.state.running_polls.store(n, Ordering::SeqCst);
    }

    fn seen(&self, method: &str, path_prefix: &str) -> Vec<Seen> {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    fn total(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// Counts a status check of `task`; true once the task is done.
fn poll_done(p: &Provider, task: &str) -> Option<bool> {
    let mut polls = p.polls.lock().unwrap();
    let n = polls.get_mut(task)?;
    *n += 1;
    Some(*n > p.running_polls.load(Ordering::SeqCst))
}

/// A provider-like clip: 192x108 at 16 fps (assembly re-encodes it into the job's format).
fn provider_clip(p: &Provider, seconds: u32) -> Vec<u8> {
    use aiprod_media::{Animatic, CameraMove, Format, Media, PureMedia};
    p.clips
        .lock()
        .unwrap()
        .entry(seconds)
        .or_insert_with(|| {
            PureMedia::default()
                .render_animatic(
                    &Animatic {
                        shot_number: 1,
                        shot_count: 1,
                        description: "provider output",
                        duration_ms: u64::from(seconds) * 1000,
                        camera: CameraMove::Pan,
                        palette: &[[30, 90, 160], [240, 200, 60]],
                        format: Format {
                            width: 192,
                            height: 108,
                            fps: 16,
                        },
                        seed: 1,
                    },
                    None,
                )
                .expect("render a provider clip")
        })
        .clone()
}

fn output_url(p: &Provider, task: &str) -> String {
    format!(
        "{}/outputs/{}.mp4",
        p.base_url.get().expect("base url"),
        task.replace('/', "_")
    )
}

async fn answer(
    State(p): State<Arc<Provider>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    p.log.lock().unwrap().push(seen.clone());
    let path = seen.path.as_str();
    let new_task = |prefix: &str| {
        let id = format!("{prefix}{}", p.next_id.fetch_add(1, Ordering::SeqCst));
        p.polls.lock().unwrap().insert(id.clone(), 0);
        id
    };
    if let Some(file) = path.strip_prefix("/outputs/") {
        if p.kind == Kind::Veo && seen.header("x-goog-api-key") != Some(VEO_KEY) {
            return reply(
                403,
                json!({"error": {"code": 403, "message": "API key not valid."}}),
            );
        }
        let task = file.trim_end_matches(".mp4");
        let seconds = p
            .durations
            .lock()
            .unwrap()
            .iter()
            .find(|(t, _)| t.replace('/', "_") == task)
            .map(|(_, s)| *s);
        return match seconds {
            Some(s) => (
                StatusCode::OK,
                [("content-type", "video/mp4")],
                provider_clip(&p, s),
            )
                .into_response(),
            None => reply(404, json!({"error": "no such output"})),
        };
    }
    let remember = |task: &str, seconds: u32| {
        p.durations
            .lock()
            .unwrap()
            .insert(task.to_string(), seconds);
    };
    match p.kind {
        Kind::Runway => {
            if seen.header("authorization") != Some(&format!("Bearer {RUNWAY_KEY}"))
                || seen.header("x-runway-version") != Some("2024-11-06")
            {
                return reply(401, json!({"error": "Unauthorized"}));
            }
            match (seen.method.as_str(), path) {
                ("POST", "/v1/text_to_video") => {
                    let id = new_task("task-");
                    remember(&id, seen.body["duration"].as_u64().unwrap_or(10) as u32);
                    reply(200, json!({"id": id}))
                }
                ("GET", _) if path.starts_with("/v1/tasks/") => {
                    let id = &path["/v1/tasks/".len()..];
                    match poll_done(&p, id) {
                        None => reply(404, json!({"error": "Task not found"})),
                        Some(false) => {
                            reply(200, json!({"id": id, "status": "RUNNING", "progress": 0.5}))
                        }
                        Some(true) if p.fail => reply(
                            200,
                            json!({"id": id, "status": "FAILED", "failure": "Internal error", "failureCode": "INTERNAL"}),
                        ),
                        Some(true) => reply(
                            200,
                            json!({"id": id, "status": "SUCCEEDED", "output": [output_url(&p, id)]}),
                        ),
                    }
                }
                _ => reply(404, json!({"error": "Not found"})),
            }
        }
        Kind::Veo => {
            if seen.header("x-goog-api-key") != Some(VEO_KEY) {
                return reply(
                    403,
                    json!({"error": {"code": 403, "message": "API key not valid."}}),
                );
            }
            const MODEL: &str = "/v1beta/models/veo-3.1-generate-preview";
            match seen.method.as_str() {
                "POST" if path == format!("{MODEL}:predictLongRunning") => {
                    let op = new_task("models/veo-3.1-generate-preview/operations/op-");
                    remember(
                        &op,
                        seen.body["parameters"]["durationSeconds"]
                            .as_u64()
                            .unwrap_or(8) as u32,
                    );
                    reply(200, json!({"name": op}))
                }
                "GET" if path.starts_with(&format!("{MODEL}/operations/")) => {
                    let name = &path["/v1beta/".len()..];
                    match poll_done(&p, name) {
                        None => reply(404, json!({"error": {"code": 404, "message": "not found"}})),
                        Some(false) => reply(200, json!({"name": name})),
                        Some(true) if p.fail => reply(
                            200,
                            json!({"name": name, "done": true, "error": {"code": 13, "message": "failed"}}),
                        ),
                        Some(true) => reply(
                            200,
                            json!({"name": name, "done": true, "response": {"generateVideoResponse": {"generatedSamples": [{"video": {"uri": output_url(&p, name)}}]}}}),
                        ),
                    }
                }
                _ => reply(404, json!({"error": {"code": 404, "message": "not found"}})),
            }
        }
        Kind::Replicate => {
            if seen.header("authorization") != Some(&format!("Bearer {REPLICATE_TOKEN}")) {
                return reply(401, json!({"detail": "Unauthenticated", "status": 401}));
            }
            match (seen.method.as_str(), path) {
                ("POST", "/v1/models/wan-video/wan-2.2-t2v-fast/predictions") => {
                    let id = new_task("pred");
                    // The model renders a fixed 12 s, whatever the shot asks: the cut trims it.
                    remember(&id, 12);
                    reply(
                        201,
                        json!({"id": id, "status": "starting", "input": seen.body["input"].clone()}),
                    )
                }
                ("GET", _) if path.starts_with("/v1/predictions/") => {
                    let id = &path["/v1/predictions/".len()..];
                    match poll_done(&p, id) {
                        None => reply(404, json!({"detail": "Not found"})),
                        Some(false) => reply(200, json!({"id": id, "status": "processing"})),
                        Some(true) if p.fail => reply(
                            200,
                            json!({"id": id, "status": "failed", "error": "GPU lost"}),
                        ),
                        Some(true) => reply(
                            200,
                            json!({"id": id, "status": "succeeded", "output": output_url(&p, id)}),
                        ),
                    }
                }
                _ => reply(404, json!({"detail": "Not found"})),
            }
        }
    }
}

/// A test config whose providers are the fakes (keys only for the fakes given).
fn live_config(
    dir: &tempfile::TempDir,
    runway: Option<&FakeProvider>,
    veo: Option<&FakeProvider>,
    replicate: Option<&FakeProvider>,
) -> Config {
    let mut c = test_config(dir, 2);
    c.media.live_short_side = TEST_SHORT_SIDE;
    let p = &mut c.providers;
    p.poll_interval_ms = 5;
    p.task_timeout_s = 30;
    if let Some(f) = runway {
        p.runway.base_url = f.base_url.clone();
        p.runway.api_key = Some(Secret::new(RUNWAY_KEY));
    }
    if let Some(f) = veo {
        p.veo.base_url = f.base_url.clone();
        p.veo.api_key = Some(Secret::new(VEO_KEY));
    }
    if let Some(f) = replicate {
        p.replicate.base_url = f.base_url.clone();
        p.replicate.api_key = Some(Secret::new(REPLICATE_TOKEN));
    }
    c
}

/// A Platinum tenant with a LIVE key, and a client using it.
async fn live_client(server: &TestServer) -> Client {
    let key = live_key(server).await;
    Client::connect(server.endpoint.clone(), &key)
        .await
        .unwrap()
}

/// A new Platinum tenant's LIVE key.
async fn live_key(server: &TestServer) -> String {
    let admin = server.admin().await;
    let tenant = admin
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: "acme-live".into(),
            tier: pb::Tier::Platinum as i32,
            ..Default::default()
        })
        .await
        .expect("create tenant")
        .into_inner()
        .tenant
        .unwrap();
    let key = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id,
            mode: pb::ApiKeyMode::Live as i32,
            name: "live".into(),
            ..Default::default()
        })
        .await
        .expect("create live key")
        .into_inner();
    assert!(key.secret.starts_with("aiprod_live_"));
    key.secret
}

/// Runs a quick_social job to its end; returns the job, its events and its shot descriptions.
async fn run_quick_social(
    client: &Client,
    request_id: &str,
) -> (pb::Job, Vec<pb::JobEvent>, Vec<String>) {
    let job = create(client, create_request(request_id, "quick_social")).await;
    assert!(!job.sandbox, "a live key's job runs on the providers");
    let events = watch_to_end(client, &job.job_id, 0).await;
    assert_gap_free(&events);
    let job = client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let manifest = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    let descriptions = manifest.shots.into_iter().map(|s| s.description).collect();
    (job, events, descriptions)
}

fn rendered_on(events: &[pb::JobEvent]) -> Vec<i32> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::ShotRendered(r)) => Some(r.backend),
            _ => None,
        })
        .collect()
}

fn fallbacks(events: &[pb::JobEvent]) -> Vec<pb::BackendFallback> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::BackendFallback(f)) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_live_job_renders_through_the_provider_api() {
    let runway = FakeProvider::start(Kind::Runway, false).await;
    let veo = FakeProvider::start(Kind::Veo, false).await;
    let replicate = FakeProvider::start(Kind::Replicate, false).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = live_config(&dir, Some(&runway), Some(&veo), Some(&replicate));
    let server = TestServer::start_with(config, dir).await;
    let client = live_client(&server).await;

    let (job, events, descriptions) = run_quick_social(&client, "live-1").await;
    assert_eq!(
        states(&events).last(),
        Some(&Delivered),
        "{:?}",
        job.status_message
    );
    assert_eq!((job.shots_total, job.shots_rendered), (3, 3));
    assert_eq!(
        rendered_on(&events),
        vec![pb::Backend::Replicate as i32; 3],
        "quick_social renders on the economy provider"
    );
    assert!(fallbacks(&events).is_empty());

    let creates = replicate.seen("POST", "/v1/models/wan-video/wan-2.2-t2v-fast/predictions");
    assert_eq!(creates.len(), 3, "one prediction per shot");
    // The shots render in parallel: the predictions arrive in any order.
    let mut prompts: Vec<&str> = creates
        .iter()
        .map(|c| c.body["input"]["prompt"].as_str().unwrap())
        .collect();
    prompts.sort();
    let mut expected: Vec<&str> = descriptions.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(prompts, expected, "each shot's description is a prompt");
    for create in &creates {
        assert_eq!(
            create.header("authorization"),
            Some(format!("Bearer {REPLICATE_TOKEN}").as_str())
        );
        assert_eq!(create.body["input"]["aspect_ratio"], "16:9");
    }
    assert_eq!(
        replicate.seen("GET", "/v1/predictions/").len(),
        3 * (RUNNING_POLLS + 1),
        "each prediction is polled until it succeeds"
    );
    assert_eq!(
        runway.total() + veo.total(),
        0,
        "the other providers are not called"
    );

    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_no_double_billing(&report);
}

#[tokio::test]
async fn a_failing_provider_falls_back_to_another_provider() {
    let runway = FakeProvider::start(Kind::Runway, false).await;
    let replicate = FakeProvider::start(Kind::Replicate, true).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = live_config(&dir, Some(&runway), None, Some(&replicate));
    let server = TestServer::start_with(config, dir).await;
    let client = live_client(&server).await;

    let (job, events, descriptions) = run_quick_social(&client, "live-fallback-1").await;
    assert_eq!(
        states(&events).last(),
        Some(&Delivered),
        "{:?}",
        job.status_message
    );
    let f = fallbacks(&events);
    assert!(!f.is_empty(), "the failures are fallback events");
    for fallback in &f {
        assert_eq!(fallback.from_backend, pb::Backend::Replicate as i32);
        assert_eq!(fallback.to_backend, pb::Backend::Runway as i32);
        assert!(fallback.reason.contains("GPU lost"), "{}", fallback.reason);
    }
    assert_eq!(
        rendered_on(&events),
        vec![pb::Backend::Runway as i32; 3],
        "every shot ends up on runway"
    );
    assert_eq!(
        replicate.seen("POST", "/v1/models/").len(),
        f.len(),
        "one failed prediction per fallback"
    );

    let creates = runway.seen("POST", "/v1/text_to_video");
    assert_eq!(creates.len(), 3);
    let mut prompts: Vec<&str> = creates
        .iter()
        .map(|c| c.body["promptText"].as_str().unwrap())
        .collect();
    prompts.sort();
    let mut expected: Vec<&str> = descriptions.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(prompts, expected, "each shot's description reaches runway");
    for create in &creates {
        assert_eq!(
            create.header("authorization"),
            Some(format!("Bearer {RUNWAY_KEY}").as_str())
        );
        assert_eq!(create.header("x-runway-version"), Some("2024-11-06"));
        assert_eq!(create.body["model"], "gen4.5");
        assert_eq!(create.body["ratio"], "1280:720");
        assert_eq!(create.body["duration"], 10);
    }
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_no_double_billing(&report);
}

#[tokio::test]
async fn a_restart_resumes_the_paid_provider_tasks_instead_of_submitting_new_ones() {
    let replicate = FakeProvider::start(Kind::Replicate, false).await;
    // The provider accepts every task and keeps it running until the server has restarted.
    replicate.set_running_polls(usize::MAX);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = live_config(&dir, None, None, Some(&replicate));
    let server = TestServer::start_with(config, dir).await;
    let key = live_key(&server).await;
    let client = Client::connect(server.endpoint.clone(), &key)
        .await
        .unwrap();
    let job = create(&client, create_request("live-restart-1", "quick_social")).await;
    let is_start =
        |e: &pb::JobEvent| matches!(e.payload, Some(pb::job_event::Payload::ShotStarted(_)));
    // ShotStarted is committed together with the provider's task id, before any wait on it.
    let seen = AtomicUsize::new(0);
    let events = watch_until(&client, &job.job_id, 0, |e| {
        is_start(e) && seen.fetch_add(1, Ordering::SeqCst) + 1 == 3
    })
    .await;
    assert_eq!(events.iter().filter(|e| is_start(e)).count(), 3);
    let creates = "/v1/models/wan-video/wan-2.2-t2v-fast/predictions";
    assert_eq!(replicate.seen("POST", creates).len(), 3);
    let polled_before = replicate.seen("GET", "/v1/predictions/").len();

    let (config, dir) = server.stop().await;
    assert!(
        replicate.seen("POST", "/cancel").is_empty(),
        "a shutdown leaves the paid tasks running"
    );
    replicate.set_running_polls(RUNNING_POLLS);
    let server = TestServer::start_with(config, dir).await;
    let client = Client::connect(server.endpoint.clone(), &key)
        .await
        .unwrap();
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_gap_free(&events);
    assert_eq!(states(&events).last(), Some(&Delivered));
    assert_eq!(
        replicate.seen("POST", creates).len(),
        3,
        "no task is submitted twice"
    );
    assert_eq!(
        events.iter().filter(|e| is_start(e)).count(),
        3,
        "no new attempt started"
    );
    assert!(
        replicate.seen("GET", "/v1/predictions/").len() > polled_before,
        "the same tasks are polled again"
    );
    assert_eq!(
        replicate.seen("GET", "/outputs/").len(),
        3,
        "each output is downloaded once"
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert_no_double_billing(&report);
    assert_eq!(
        report
            .ledger
            .iter()
            .filter(|l| l.kind == pb::LedgerKind::Render as i32)
            .count(),
        3,
        "billed once per shot"
    );
    // The provider's 12 s clips at 192x108 16 fps are cut to their 10 s shots and normalised.
    let job = crate::media::get_job(&client, &job.job_id).await;
    let video = job.video.clone().expect("the cut");
    let bytes = crate::media::read_all(&client, &video.resource_name)
        .await
        .unwrap();
    let seconds: Vec<u32> = job.shots.iter().map(|s| s.duration_s).collect();
    crate::media::assert_playable(&bytes, &video, &seconds);
    for shot in &job.shots {
        let clip = shot.clip.as_ref().expect("the provider's clip is kept");
        assert_eq!((clip.width, clip.height), (192, 108));
        assert!(
            !clip.resource_name.contains("outputs"),
            "provider links never reach partners"
        );
    }
}

#[tokio::test]
async fn cancelling_a_live_job_cancels_every_in_flight_provider_task() {
    let replicate = FakeProvider::start(Kind::Replicate, false).await;
    replicate.set_running_polls(usize::MAX);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = live_config(&dir, None, None, Some(&replicate));
    let server = TestServer::start_with(config, dir).await;
    let client = live_client(&server).await;
    let job = create(&client, create_request("live-cancel-1", "quick_social")).await;
    // The three shots are in flight at once.
    let seen = AtomicUsize::new(0);
    watch_until(&client, &job.job_id, 0, |e| {
        matches!(e.payload, Some(pb::job_event::Payload::ShotStarted(_)))
            && seen.fetch_add(1, Ordering::SeqCst) + 1 == 3
    })
    .await;
    client
        .render()
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
            reason: "campaign pulled".into(),
        })
        .await
        .expect("cancel");
    let events = watch_to_end(&client, &job.job_id, 0).await;
    assert_eq!(states(&events).last(), Some(&Cancelled));
    // Each prediction gets its cancel call (sent in the background once the wait is dropped).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while replicate.seen("POST", "/v1/predictions/").len() < 3
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // the cancel calls are fire-and-forget
    }
    let mut cancelled: Vec<String> = replicate
        .seen("POST", "/v1/predictions/")
        .into_iter()
        .map(|s| s.path)
        .collect();
    cancelled.sort();
    assert_eq!(
        cancelled,
        [
            "/v1/predictions/pred1/cancel",
            "/v1/predictions/pred2/cancel",
            "/v1/predictions/pred3/cancel"
        ],
        "every in-flight task is cancelled"
    );
    let report = costs(&client, &job.job_id).await;
    assert_certified(&report);
    assert!(
        report
            .ledger
            .iter()
            .all(|l| l.kind == pb::LedgerKind::Planner as i32),
        "no render finished, so only planning is billed: {:?}",
        report.ledger
    );
}
