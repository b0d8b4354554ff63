//! Veo through the Gemini API (`https://generativelanguage.googleapis.com`, header
//! `x-goog-api-key`): `POST /v1beta/models/{model}:predictLongRunning` with
//! `{instances: [{prompt}], parameters: {aspectRatio, durationSeconds}}` answers a long-running
//! operation `{name}`; `GET /v1beta/{name}` answers it again until `done` is true, then with either
//! `error: {code, message}` or `response.generateVideoResponse.generatedSamples[0].video.uri`
//! (samples withheld by the safety filters are counted in `raiMediaFilteredCount` with
//! `raiMediaFilteredReasons`). The Gemini API documents no cancel for video operations, so a timed
//! out operation is left to finish on its own.

use super::{TaskApi, TaskStatus, join, landscape, secret_header};
use crate::backends::RenderRequest;
use crate::config::{Secret, VeoConfig};
use crate::domain::Backend;
use reqwest::RequestBuilder;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

/// Clip lengths Veo 3.1 renders, in seconds.
const DURATIONS: [u32; 3] = [4, 6, 8];

pub struct Veo {
    base_url: String,
    model: String,
    api_key: HeaderValue,
}

impl Veo {
    pub fn new(config: &VeoConfig, key: &Secret) -> anyhow::Result<Veo> {
        Ok(Veo {
            base_url: config.base_url.clone(),
            model: config.model.trim_start_matches("models/").to_string(),
            api_key: secret_header(key.expose().to_string())
                .map_err(|e| anyhow::anyhow!("providers.veo.api_key: {e}"))?,
        })
    }

    fn body(&self, request: &RenderRequest) -> Value {
        // The shortest clip that holds the shot; longer shots get Veo's longest clip.
        let seconds = DURATIONS
            .into_iter()
            .find(|d| *d >= request.duration_s)
            .unwrap_or(DURATIONS[DURATIONS.len() - 1]);
        json!({
            "instances": [{ "prompt": request.prompt }],
            "parameters": {
                "aspectRatio": if landscape(request.aspect_ratio) { "16:9" } else { "9:16" },
                "durationSeconds": seconds,
            },
        })
    }
}

/// An operation name is a resource path (`models/…/operations/…`); anything else is refused
/// rather than put into a URL.
fn valid_operation_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl TaskApi for Veo {
    fn backend(&self) -> Backend {
        Backend::Veo
    }

    fn create(&self, http: &reqwest::Client, request: &RenderRequest) -> RequestBuilder {
        http.post(join(
            &self.base_url,
            &format!("v1beta/models/{}:predictLongRunning", self.model),
        ))
        .header("x-goog-api-key", self.api_key.clone())
        .json(&self.body(request))
    }

    fn task_id(&self, created: &Value) -> Option<String> {
        created["name"]
            .as_str()
            .filter(|n| valid_operation_name(n))
            .map(str::to_string)
    }

    fn status(&self, http: &reqwest::Client, task: &str) -> RequestBuilder {
        http.get(join(&self.base_url, &format!("v1beta/{task}")))
            .header("x-goog-api-key", self.api_key.clone())
    }

    fn parse_status(&self, body: &Value) -> Result<TaskStatus, String> {
        if !body.is_object() {
            return Err("not an operation".into());
        }
        let done = match &body["done"] {
            Value::Null => false,
            Value::Bool(done) => *done,
            _ => return Err("`done` is not a boolean".into()),
        };
        if !done {
            return Ok(TaskStatus::Running);
        }
        if body["error"].is_object() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            return Ok(TaskStatus::Failed(match body["error"]["code"].as_i64() {
                Some(code) => format!("operation failed (code {code}): {message}"),
                None => format!("operation failed: {message}"),
            }));
        }
        let response = &body["response"]["generateVideoResponse"];
        if !response.is_object() {
            return Err("done without `response.generateVideoResponse` or `error`".into());
        }
        let uri = response["generatedSamples"]
            .as_array()
            .and_then(|s| s.first())
            .and_then(|s| s["video"]["uri"].as_str())
            .filter(|u| !u.is_empty());
        Ok(match uri {
            Some(uri) => TaskStatus::Succeeded(uri.to_string()),
            None => {
                let reasons: Vec<&str> = response["raiMediaFilteredReasons"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if reasons.is_empty() {
                    TaskStatus::Rejected("operation done without a generated video".into())
                } else {
                    TaskStatus::Rejected(format!("filtered: {}", reasons.join("; ")))
                }
            }
        })
    }

    /// Gemini API files are downloaded with the API key.
    fn download(&self, http: &reqwest::Client, uri: &str) -> RequestBuilder {
        http.get(uri).header("x-goog-api-key", self.api_key.clone())
    }

    fn cancel(&self, _http: &reqwest::Client, _task: &str) -> Option<RequestBuilder> {
        None
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

    const KEY: &str = "AIzaSy-test-key";
    const OPERATION: &str = "models/veo-3.1-generate-preview/operations/8c2xq1x0r1vd";
    const URI: &str =
        "https://generativelanguage.googleapis.com/v1beta/files/3xq:download?alt=media";

    /// A fake Gemini API that follows the documented long-running operation.
    async fn fake_gemini(script: Script) -> Fake {
        Fake::start(move |req, state| {
            if req.header("x-goog-api-key") != Some(KEY) {
                return Reply::json(
                    403,
                    json!({"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}),
                );
            }
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/v1beta/models/veo-3.1-generate-preview:predictLongRunning") => {
                    if state.next_create() <= script.create_rate_limited {
                        return Reply::json(
                            429,
                            json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}),
                        )
                        .header("retry-after", "0");
                    }
                    if script.outcome == Outcome::MalformedCreate {
                        return Reply::json(200, json!({"operation": 1}));
                    }
                    Reply::json(200, json!({"name": OPERATION}))
                }
                ("GET", path) if path == format!("/v1beta/{OPERATION}") => {
                    let poll = state.next_poll();
                    if poll <= script.running_polls || script.outcome == Outcome::Never {
                        return Reply::json(200, json!({"name": OPERATION}));
                    }
                    Reply::json(
                        200,
                        match script.outcome {
                            Outcome::Succeed => json!({
                                "name": OPERATION,
                                "done": true,
                                "response": {
                                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                                    "generateVideoResponse": {"generatedSamples": [{"video": {"uri": URI}}]}
                                }
                            }),
                            Outcome::SucceedWithoutOutput => json!({
                                "name": OPERATION,
                                "done": true,
                                "response": {"generateVideoResponse": {
                                    "raiMediaFilteredCount": 1,
                                    "raiMediaFilteredReasons": ["The prompt could not be submitted."]
                                }}
                            }),
                            Outcome::Fail => json!({
                                "name": OPERATION,
                                "done": true,
                                "error": {"code": 13, "message": "Video generation failed."}
                            }),
                            Outcome::MalformedStatus => json!({"name": OPERATION, "done": "yes"}),
                            Outcome::Never | Outcome::MalformedCreate => unreachable!(),
                        },
                    )
                }
                _ => Reply::json(404, json!({"error": {"code": 404, "message": "Not found"}})),
            }
        })
        .await
    }

    fn backend(fake: &Fake, settings: PollSettings) -> HttpBackend<Veo> {
        let config = VeoConfig {
            base_url: fake.base_url.clone(),
            ..VeoConfig::default()
        };
        let api = Veo::new(&config, &Secret::new(KEY)).unwrap();
        HttpBackend::new(api, settings, Duration::from_secs(5), 0.92).unwrap()
    }

    #[tokio::test]
    async fn an_operation_succeeds_after_a_few_polls() {
        let fake = fake_gemini(Script::new(Outcome::Succeed).running(2)).await;
        let out = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Square1x1, 5))
            .await
            .unwrap();
        assert_eq!(out.uri, URI);
        assert_eq!(out.quality, 0.92);
        let create = &fake.requests_to("POST", "/v1beta/models/")[0];
        assert_eq!(
            create.body,
            json!({
                "instances": [{"prompt": fake::PROMPT}],
                "parameters": {"aspectRatio": "16:9", "durationSeconds": 6}
            })
        );
        assert_eq!(fake.requests_to("GET", "/v1beta/models/").len(), 3);
    }

    #[tokio::test]
    async fn a_failed_operation_is_a_provider_error() {
        let fake = fake_gemini(Script::new(Outcome::Fail).running(1)).await;
        let err = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 8))
            .await
            .unwrap_err();
        match err {
            RenderError::Provider(m) => assert!(
                m.contains("code 13") && m.contains("Video generation failed"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_filtered_video_is_rejected_with_the_reason() {
        let fake = fake_gemini(Script::new(Outcome::SucceedWithoutOutput)).await;
        let err = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 8))
            .await
            .unwrap_err();
        match err {
            RenderError::Rejected(m) => assert!(m.contains("could not be submitted"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn http_429_is_retried_after_retry_after() {
        let fake = fake_gemini(Script::new(Outcome::Succeed).rate_limited(1).running(1)).await;
        let out = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Portrait9x16, 4))
            .await
            .unwrap();
        assert_eq!(out.uri, URI);
        let creates = fake.requests_to("POST", "/v1beta/models/");
        assert_eq!(creates.len(), 2);
        assert_eq!(creates[1].body["parameters"]["aspectRatio"], "9:16");
        assert_eq!(creates[1].body["parameters"]["durationSeconds"], 4);
    }

    #[tokio::test]
    async fn an_operation_that_never_finishes_times_out() {
        let fake = fake_gemini(Script::new(Outcome::Never)).await;
        let err = backend(&fake, fake::short_timeout())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 8))
            .await
            .unwrap_err();
        assert!(matches!(err, RenderError::Timeout(_)), "{err:?}");
        assert!(
            fake.requests_to("GET", "/v1beta/models/").len() >= 2,
            "it was polled"
        );
    }

    #[tokio::test]
    async fn malformed_responses_are_provider_errors() {
        for outcome in [Outcome::MalformedCreate, Outcome::MalformedStatus] {
            let fake = fake_gemini(Script::new(outcome)).await;
            let err = backend(&fake, fake::settings())
                .render_uri(&fake::request(AspectRatio::Landscape16x9, 8))
                .await
                .unwrap_err();
            match err {
                RenderError::Provider(m) => assert!(m.contains("malformed"), "{m}"),
                other => panic!("{outcome:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn operation_names_are_resource_paths() {
        assert!(valid_operation_name(OPERATION));
        assert!(valid_operation_name("operations/abc123"));
        for bad in [
            "",
            "/abs",
            "models/../secrets",
            "a//b",
            "ops/x?key=1",
            "ops/x#y",
        ] {
            assert!(!valid_operation_name(bad), "{bad}");
        }
    }
}
