//! Replicate's HTTP API (`https://api.replicate.com`, `Authorization: Bearer <token>`):
//! `POST /v1/models/{owner}/{name}/predictions` (an official model, by name) or
//! `POST /v1/predictions` with a `version`, body `{input: {...}}`, answers a prediction `{id,
//! status}`; `GET /v1/predictions/{id}` answers it with `status: starting|processing|succeeded|
//! failed|canceled`, `output` (a video model's output is a file URL, or a list of them) and
//! `error`; `POST /v1/predictions/{id}/cancel` cancels it.

use super::runway::path_segment;
use super::{TaskApi, TaskStatus, join, landscape, secret_header};
use crate::backends::RenderRequest;
use crate::config::{ReplicateConfig, Secret};
use crate::domain::Backend;
use reqwest::RequestBuilder;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Map, Value, json};

pub struct Replicate {
    base_url: String,
    /// Where predictions are created.
    create_path: String,
    version: Option<String>,
    aspect_ratio_input: Option<String>,
    duration_input: Option<String>,
    authorization: HeaderValue,
}

impl Replicate {
    pub fn new(config: &ReplicateConfig, key: &Secret) -> anyhow::Result<Replicate> {
        let create_path = match &config.version {
            Some(_) => "v1/predictions".to_string(),
            None => {
                let (owner, name) = config.model.split_once('/').ok_or_else(|| {
                    anyhow::anyhow!("providers.replicate.model must be owner/name")
                })?;
                format!(
                    "v1/models/{}/{}/predictions",
                    path_segment(owner),
                    path_segment(name)
                )
            }
        };
        Ok(Replicate {
            base_url: config.base_url.clone(),
            create_path,
            version: config.version.clone(),
            aspect_ratio_input: config.aspect_ratio_input.clone(),
            duration_input: config.duration_input.clone(),
            authorization: secret_header(format!("Bearer {}", key.expose()))
                .map_err(|e| anyhow::anyhow!("providers.replicate.api_key: {e}"))?,
        })
    }

    fn body(&self, request: &RenderRequest) -> Value {
        let mut input = Map::new();
        input.insert("prompt".into(), json!(request.prompt));
        if let Some(name) = &self.aspect_ratio_input {
            let ratio = if landscape(request.aspect_ratio) {
                "16:9"
            } else {
                "9:16"
            };
            input.insert(name.clone(), json!(ratio));
        }
        if let Some(name) = &self.duration_input {
            input.insert(name.clone(), json!(request.duration_s));
        }
        match &self.version {
            Some(version) => json!({ "version": version, "input": input }),
            None => json!({ "input": input }),
        }
    }

    fn prediction_url(&self, id: &str) -> String {
        join(
            &self.base_url,
            &format!("v1/predictions/{}", path_segment(id)),
        )
    }
}

impl TaskApi for Replicate {
    fn backend(&self) -> Backend {
        Backend::Replicate
    }

    fn create(&self, http: &reqwest::Client, request: &RenderRequest) -> RequestBuilder {
        http.post(join(&self.base_url, &self.create_path))
            .header(AUTHORIZATION, self.authorization.clone())
            .json(&self.body(request))
    }

    fn task_id(&self, created: &Value) -> Option<String> {
        created["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    }

    fn status(&self, http: &reqwest::Client, task: &str) -> RequestBuilder {
        http.get(self.prediction_url(task))
            .header(AUTHORIZATION, self.authorization.clone())
    }

    fn parse_status(&self, body: &Value) -> Result<TaskStatus, String> {
        let status = body["status"].as_str().ok_or("no status")?;
        Ok(match status {
            "starting" | "processing" => TaskStatus::Running,
            "succeeded" => match &body["output"] {
                Value::String(uri) if !uri.is_empty() => TaskStatus::Succeeded(uri.clone()),
                Value::Array(items) => match items.first() {
                    Some(Value::String(uri)) if !uri.is_empty() => {
                        TaskStatus::Succeeded(uri.clone())
                    }
                    None => {
                        TaskStatus::Rejected("prediction succeeded with an empty output".into())
                    }
                    Some(_) => return Err("output is not a list of URLs".into()),
                },
                Value::Null => {
                    TaskStatus::Rejected("prediction succeeded without an output".into())
                }
                _ => return Err("output is not a URL".into()),
            },
            "failed" => TaskStatus::Failed(match &body["error"] {
                Value::String(e) => format!("prediction failed: {e}"),
                Value::Null => "prediction failed: no reason given".into(),
                other => format!("prediction failed: {other}"),
            }),
            "canceled" | "aborted" => TaskStatus::Failed(format!("prediction {status}")),
            other => return Err(format!("unknown status {other:?}")),
        })
    }

    fn cancel(&self, http: &reqwest::Client, task: &str) -> Option<RequestBuilder> {
        Some(
            http.post(format!("{}/cancel", self.prediction_url(task)))
                .header(AUTHORIZATION, self.authorization.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, Fake, Outcome, Reply, Script};
    use super::super::{HttpBackend, PollSettings};
    use super::*;
    use crate::backends::RenderError;
    use crate::domain::manifest::AspectRatio;
    use std::time::Duration;

    const TOKEN: &str = "r8_test_token";
    const ID: &str = "gm3qorzdhgbfurvjtvhg6dckhu";
    const URI: &str = "https://replicate.delivery/xezq/output.mp4";

    fn prediction(status: &str, extra: Value) -> Value {
        let mut p = json!({
            "id": ID,
            "model": "wan-video/wan-2.2-t2v-fast",
            "status": status,
            "urls": {
                "get": format!("https://api.replicate.com/v1/predictions/{ID}"),
                "cancel": format!("https://api.replicate.com/v1/predictions/{ID}/cancel")
            }
        });
        if let (Value::Object(p), Value::Object(extra)) = (&mut p, extra) {
            p.extend(extra);
        }
        p
    }

    /// A fake Replicate API that follows the documented prediction lifecycle.
    async fn fake_replicate(script: Script) -> Fake {
        Fake::start(move |req, state| {
            if req.header("authorization") != Some(format!("Bearer {TOKEN}").as_str()) {
                return Reply::json(401, json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}));
            }
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/v1/models/wan-video/wan-2.2-t2v-fast/predictions") | ("POST", "/v1/predictions") => {
                    if state.next_create() <= script.create_rate_limited {
                        return Reply::json(429, json!({"detail": "Request was throttled. Your rate limit resets in ~30s."}))
                            .header("retry-after", "0");
                    }
                    if script.outcome == Outcome::MalformedCreate {
                        return Reply::text(502, "<html>Bad gateway</html>");
                    }
                    Reply::json(201, prediction("starting", json!({"input": req.body["input"].clone()})))
                }
                ("GET", path) if path == format!("/v1/predictions/{ID}") => {
                    let poll = state.next_poll();
                    if poll <= script.running_polls || script.outcome == Outcome::Never {
                        let status = if poll == 1 { "starting" } else { "processing" };
                        return Reply::json(200, prediction(status, json!({"logs": ""})));
                    }
                    Reply::json(
                        200,
                        match script.outcome {
                            Outcome::Succeed => prediction("succeeded", json!({"output": URI})),
                            Outcome::SucceedWithoutOutput => prediction("succeeded", json!({"output": null})),
                            Outcome::Fail => prediction("failed", json!({"error": "CUDA out of memory"})),
                            Outcome::MalformedStatus => json!({"id": ID, "status": "succeeded", "output": {"video": 1}}),
                            Outcome::Never | Outcome::MalformedCreate => unreachable!(),
                        },
                    )
                }
                ("POST", path) if path == format!("/v1/predictions/{ID}/cancel") => {
                    Reply::json(200, prediction("canceled", json!({})))
                }
                _ => Reply::json(404, json!({"detail": "Not found", "status": 404})),
            }
        })
        .await
    }

    fn backend(
        fake: &Fake,
        settings: PollSettings,
        config: ReplicateConfig,
    ) -> HttpBackend<Replicate> {
        let config = ReplicateConfig {
            base_url: fake.base_url.clone(),
            ..config
        };
        let api = Replicate::new(&config, &Secret::new(TOKEN)).unwrap();
        HttpBackend::new(api, settings, Duration::from_secs(5), 0.75).unwrap()
    }

    #[tokio::test]
    async fn a_prediction_succeeds_after_a_few_polls() {
        let fake = fake_replicate(Script::new(Outcome::Succeed).running(3)).await;
        let out = backend(&fake, fake::settings(), ReplicateConfig::default())
            .render_uri(&fake::request(AspectRatio::Portrait4x5, 10))
            .await
            .unwrap();
        assert_eq!(out.uri, URI);
        assert_eq!(out.quality, 0.75);
        let create = &fake.requests_to("POST", "/v1/models/")[0];
        assert_eq!(
            create.body,
            json!({"input": {"prompt": fake::PROMPT, "aspect_ratio": "9:16"}})
        );
        assert_eq!(fake.requests_to("GET", "/v1/predictions/").len(), 4);
        assert!(
            fake.requests_to("POST", &format!("/v1/predictions/{ID}/cancel"))
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_pinned_version_and_a_duration_input_are_sent() {
        let fake = fake_replicate(Script::new(Outcome::Succeed)).await;
        let config = ReplicateConfig {
            version: Some(
                "5aa835260ff7f40f4069c41185f72036accf99e29957bb4a3b3a911f3b6c1912".into(),
            ),
            duration_input: Some("duration".into()),
            ..ReplicateConfig::default()
        };
        backend(&fake, fake::settings(), config)
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 7))
            .await
            .unwrap();
        let create = &fake.requests_to("POST", "/v1/predictions")[0];
        assert_eq!(create.path, "/v1/predictions");
        assert_eq!(
            create.body,
            json!({
                "version": "5aa835260ff7f40f4069c41185f72036accf99e29957bb4a3b3a911f3b6c1912",
                "input": {"prompt": fake::PROMPT, "aspect_ratio": "16:9", "duration": 7}
            })
        );
    }

    #[tokio::test]
    async fn a_failed_prediction_is_a_provider_error() {
        let fake = fake_replicate(Script::new(Outcome::Fail).running(2)).await;
        let err = backend(&fake, fake::settings(), ReplicateConfig::default())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        match err {
            RenderError::Provider(m) => assert!(m.contains("CUDA out of memory"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_success_without_output_is_rejected() {
        let fake = fake_replicate(Script::new(Outcome::SucceedWithoutOutput)).await;
        let err = backend(&fake, fake::settings(), ReplicateConfig::default())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, RenderError::Rejected(_)), "{err:?}");
    }

    #[tokio::test]
    async fn http_429_is_retried_after_retry_after() {
        let fake = fake_replicate(Script::new(Outcome::Succeed).rate_limited(3).running(1)).await;
        let out = backend(&fake, fake::settings(), ReplicateConfig::default())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap();
        assert_eq!(out.uri, URI);
        assert_eq!(
            fake.requests_to("POST", "/v1/models/").len(),
            4,
            "three retries, the bound"
        );
    }

    #[tokio::test]
    async fn a_prediction_that_never_finishes_times_out_and_is_cancelled() {
        let fake = fake_replicate(Script::new(Outcome::Never)).await;
        let err = backend(&fake, fake::short_timeout(), ReplicateConfig::default())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, RenderError::Timeout(_)), "{err:?}");
        let cancels = fake.requests_to("POST", &format!("/v1/predictions/{ID}/cancel"));
        assert_eq!(cancels.len(), 1);
        assert_eq!(
            cancels[0].header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }

    #[tokio::test]
    async fn malformed_responses_are_provider_errors() {
        let fake = fake_replicate(Script::new(Outcome::MalformedStatus)).await;
        let err = backend(&fake, fake::settings(), ReplicateConfig::default())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        match err {
            RenderError::Provider(m) => assert!(m.contains("malformed"), "{m}"),
            other => panic!("{other:?}"),
        }
        // An HTML error page from a proxy: a provider error that quotes it.
        let fake = fake_replicate(Script::new(Outcome::MalformedCreate)).await;
        let err = backend(&fake, fake::settings(), ReplicateConfig::default())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        match err {
            RenderError::Provider(m) => {
                assert!(m.contains("502") && m.contains("Bad gateway"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_abandoned_prediction_is_cancelled_in_the_background() {
        // The pipeline's own timeout (or a job cancel) drops the attempt: the prediction is cancelled.
        let fake = fake_replicate(Script::new(Outcome::Never)).await;
        let b = backend(&fake, fake::settings(), ReplicateConfig::default());
        let request = fake::request(AspectRatio::Landscape16x9, 5);
        tokio::select! {
            r = b.render_uri(&request) => panic!("never finishes: {r:?}"),
            // Dropped once the prediction exists and has been polled.
            _ = fake.wait_for("GET", "/v1/predictions/") => {}
        }
        let cancel = format!("/v1/predictions/{ID}/cancel");
        tokio::time::timeout(Duration::from_secs(10), fake.wait_for("POST", &cancel))
            .await
            .expect("the abandoned prediction is cancelled");
    }
}
