//! Runway's developer API (`https://api.dev.runwayml.com`, header `X-Runway-Version: 2024-11-06`):
//! `POST /v1/text_to_video` with `{model, promptText, ratio, duration}` answers `{id}`;
//! `GET /v1/tasks/{id}` answers `{status: PENDING|THROTTLED|RUNNING|SUCCEEDED|FAILED|CANCELLED,
//! output: [url], failure, failureCode}`; `DELETE /v1/tasks/{id}` cancels a pending, throttled or
//! running task. Authentication: `Authorization: Bearer <key>`.

use super::{TaskApi, TaskStatus, join, landscape, secret_header};
use crate::backends::RenderRequest;
use crate::config::{RunwayConfig, Secret};
use crate::domain::Backend;
use reqwest::RequestBuilder;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

/// `promptText` is at most 1000 UTF-16 code units.
const MAX_PROMPT_UTF16: usize = 1000;

pub struct Runway {
    base_url: String,
    model: String,
    version: HeaderValue,
    authorization: HeaderValue,
}

impl Runway {
    pub fn new(config: &RunwayConfig, key: &Secret) -> anyhow::Result<Runway> {
        Ok(Runway {
            base_url: config.base_url.clone(),
            model: config.model.clone(),
            version: HeaderValue::try_from(config.api_version.as_str()).map_err(|_| {
                anyhow::anyhow!("providers.runway.api_version is not a valid header")
            })?,
            authorization: secret_header(format!("Bearer {}", key.expose()))
                .map_err(|e| anyhow::anyhow!("providers.runway.api_key: {e}"))?,
        })
    }

    fn with_headers(&self, request: RequestBuilder) -> RequestBuilder {
        request
            .header(AUTHORIZATION, self.authorization.clone())
            .header("X-Runway-Version", self.version.clone())
    }

    /// The create body for a shot.
    fn body(&self, request: &RenderRequest) -> Value {
        json!({
            "model": self.model,
            "promptText": truncate_utf16(&request.prompt, MAX_PROMPT_UTF16),
            "ratio": if landscape(request.aspect_ratio) { "1280:720" } else { "720:1280" },
            // gen4.5 renders 2 to 10 whole seconds.
            "duration": request.duration_s.clamp(2, 10),
        })
    }

    fn task_url(&self, task: &str) -> String {
        join(&self.base_url, &format!("v1/tasks/{}", path_segment(task)))
    }
}

impl TaskApi for Runway {
    fn backend(&self) -> Backend {
        Backend::Runway
    }

    fn create(&self, http: &reqwest::Client, request: &RenderRequest) -> RequestBuilder {
        self.with_headers(http.post(join(&self.base_url, "v1/text_to_video")))
            .json(&self.body(request))
    }

    fn task_id(&self, created: &Value) -> Option<String> {
        created["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    }

    fn status(&self, http: &reqwest::Client, task: &str) -> RequestBuilder {
        self.with_headers(http.get(self.task_url(task)))
    }

    fn parse_status(&self, body: &Value) -> Result<TaskStatus, String> {
        let status = body["status"].as_str().ok_or("no status")?;
        Ok(match status {
            "PENDING" | "THROTTLED" | "RUNNING" => TaskStatus::Running,
            "SUCCEEDED" => match body["output"].as_array().and_then(|o| o.first()) {
                Some(Value::String(uri)) if !uri.is_empty() => TaskStatus::Succeeded(uri.clone()),
                Some(_) => return Err("output is not a list of URLs".into()),
                None => TaskStatus::Rejected("task succeeded without an output".into()),
            },
            "FAILED" => {
                let failure = body["failure"].as_str().unwrap_or("no reason given");
                match body["failureCode"].as_str() {
                    Some(code) => TaskStatus::Failed(format!("task failed ({code}): {failure}")),
                    None => TaskStatus::Failed(format!("task failed: {failure}")),
                }
            }
            "CANCELLED" => TaskStatus::Failed("task cancelled".into()),
            other => return Err(format!("unknown status {other:?}")),
        })
    }

    fn cancel(&self, http: &reqwest::Client, task: &str) -> Option<RequestBuilder> {
        Some(self.with_headers(http.delete(self.task_url(task))))
    }
}

/// The longest prefix of `s` within `max` UTF-16 code units, cut at a character boundary.
fn truncate_utf16(s: &str, max: usize) -> &str {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return &s[..i];
        }
    }
    s
}

/// A task id as one URL path segment.
pub(super) fn path_segment(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '~' => c.to_string(),
            c => {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, Fake, Outcome, Reply, Script};
    use super::super::{HttpBackend, PollSettings};
    use super::*;
    use crate::backends::RenderError;
    use crate::domain::manifest::AspectRatio;
    use std::time::Duration;

    const KEY: &str = "rw-test-key-123";
    const URI: &str = "https://dnznrvs05pmza.cloudfront.net/out.mp4";

    /// A fake Runway API that follows the documented task lifecycle.
    async fn fake_runway(script: Script) -> Fake {
        Fake::start(move |req, state| {
            let authorized = req.header("authorization") == Some(format!("Bearer {KEY}").as_str())
                && req.header("x-runway-version") == Some("2024-11-06");
            if !authorized {
                return Reply::json(401, json!({"error": "Unauthorized"}));
            }
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/v1/text_to_video") => {
                    if state.next_create() <= script.create_rate_limited {
                        return Reply::json(429, json!({"error": "Too many requests"}))
                            .header("retry-after", "0");
                    }
                    if script.outcome == Outcome::MalformedCreate {
                        return Reply::text(200, "<html>oops</html>");
                    }
                    Reply::json(200, json!({"id": "17f20503-6c24-4c16-946b-35dbbce2af2f"}))
                }
                ("GET", "/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f") => {
                    let poll = state.next_poll();
                    if poll <= script.running_polls || script.outcome == Outcome::Never {
                        let status = ["PENDING", "THROTTLED", "RUNNING"][poll % 3];
                        return Reply::json(200, json!({"id": "17f2", "status": status, "createdAt": "2024-11-30T07:06:07.912Z"}));
                    }
                    Reply::json(
                        200,
                        match script.outcome {
                            Outcome::Succeed => json!({"id": "17f2", "status": "SUCCEEDED", "output": [URI]}),
                            Outcome::SucceedWithoutOutput => json!({"id": "17f2", "status": "SUCCEEDED"}),
                            Outcome::Fail => json!({"id": "17f2", "status": "FAILED", "failure": "Content moderation", "failureCode": "SAFETY.INPUT.TEXT"}),
                            Outcome::MalformedStatus => json!({"id": "17f2", "state": "done"}),
                            Outcome::Never | Outcome::MalformedCreate => unreachable!(),
                        },
                    )
                }
                ("DELETE", "/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f") => Reply::empty(204),
                _ => Reply::json(404, json!({"error": "Not found"})),
            }
        })
        .await
    }

    fn backend(fake: &Fake, settings: PollSettings) -> HttpBackend<Runway> {
        let config = RunwayConfig {
            base_url: fake.base_url.clone(),
            ..RunwayConfig::default()
        };
        let api = Runway::new(&config, &Secret::new(KEY)).unwrap();
        HttpBackend::new(api, settings, Duration::from_secs(5), 0.95).unwrap()
    }

    #[tokio::test]
    async fn a_task_succeeds_after_a_few_polls() {
        let fake = fake_runway(Script::new(Outcome::Succeed).running(3)).await;
        let out = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Portrait9x16, 12))
            .await
            .unwrap();
        assert_eq!(out.uri, URI);
        assert_eq!(out.quality, 0.95, "the catalog profile's quality");
        let create = &fake.requests_to("POST", "/v1/text_to_video")[0];
        assert_eq!(
            create.body,
            json!({"model": "gen4.5", "promptText": fake::PROMPT, "ratio": "720:1280", "duration": 10})
        );
        assert_eq!(
            fake.requests_to("GET", "/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f")
                .len(),
            4
        );
        assert!(
            fake.requests_to("DELETE", "").is_empty(),
            "a finished task is not cancelled"
        );
    }

    #[tokio::test]
    async fn a_failed_task_is_a_provider_error() {
        let fake = fake_runway(Script::new(Outcome::Fail).running(1)).await;
        let err = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        match err {
            RenderError::Provider(m) => {
                assert!(
                    m.contains("SAFETY.INPUT.TEXT") && m.contains("Content moderation"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_success_without_output_is_rejected() {
        let fake = fake_runway(Script::new(Outcome::SucceedWithoutOutput)).await;
        let err = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, RenderError::Rejected(_)), "{err:?}");
    }

    #[tokio::test]
    async fn http_429_is_retried_after_retry_after() {
        let fake = fake_runway(Script::new(Outcome::Succeed).rate_limited(2)).await;
        let out = backend(&fake, fake::settings())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap();
        assert_eq!(out.uri, URI);
        assert_eq!(fake.requests_to("POST", "/v1/text_to_video").len(), 3);
    }

    #[tokio::test]
    async fn http_429_beyond_the_retry_bound_is_rate_limited() {
        let fake = fake_runway(Script::new(Outcome::Succeed).rate_limited(100)).await;
        let settings = PollSettings {
            rate_limit_retries: 2,
            ..fake::settings()
        };
        let err = backend(&fake, settings)
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, RenderError::RateLimited), "{err:?}");
        assert_eq!(
            fake.requests_to("POST", "/v1/text_to_video").len(),
            3,
            "one call and two retries"
        );
    }

    #[tokio::test]
    async fn a_task_that_never_finishes_times_out_and_is_cancelled() {
        let fake = fake_runway(Script::new(Outcome::Never)).await;
        let err = backend(&fake, fake::short_timeout())
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, RenderError::Timeout(_)), "{err:?}");
        let cancels = fake.requests_to("DELETE", "/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f");
        assert_eq!(cancels.len(), 1, "the task is cancelled on timeout");
        assert_eq!(
            cancels[0].header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }

    #[tokio::test]
    async fn malformed_responses_are_provider_errors() {
        for outcome in [Outcome::MalformedCreate, Outcome::MalformedStatus] {
            let fake = fake_runway(Script::new(outcome)).await;
            let err = backend(&fake, fake::settings())
                .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
                .await
                .unwrap_err();
            match err {
                RenderError::Provider(m) => assert!(m.contains("malformed"), "{m}"),
                other => panic!("{outcome:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_wrong_key_is_a_provider_error_and_the_key_is_never_in_it() {
        let fake = fake_runway(Script::new(Outcome::Succeed)).await;
        let config = RunwayConfig {
            base_url: fake.base_url.clone(),
            ..RunwayConfig::default()
        };
        let api = Runway::new(&config, &Secret::new("wrong-key-456")).unwrap();
        let b = HttpBackend::new(api, fake::settings(), Duration::from_secs(5), 0.95).unwrap();
        let err = b
            .render_uri(&fake::request(AspectRatio::Landscape16x9, 5))
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("401"), "{text}");
        assert!(!text.contains("wrong-key-456"), "{text}");
    }

    #[test]
    fn prompts_are_cut_to_1000_utf16_units() {
        let long = "é".repeat(999) + "😀😀";
        let cut = truncate_utf16(&long, 1000);
        assert_eq!(
            cut.encode_utf16().count(),
            999,
            "the emoji does not fit whole"
        );
        assert_eq!(truncate_utf16("short", 1000), "short");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
