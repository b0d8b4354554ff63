//! The crate's error type and the one place object_store errors are mapped to it.

/// What went wrong with an artifact store operation. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact not found")]
    NotFound,
    #[error("range {start}..{end} is outside an object of {size} bytes")]
    OutOfRange { start: u64, end: u64, size: u64 },
    /// Network errors, 5xx, timeouts: worth a retry.
    #[error("artifact store unavailable: {0}")]
    Unavailable(String),
    #[error("artifact store: {0}")]
    Other(String),
}

impl ArtifactError {
    /// Whether retrying the operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ArtifactError::Unavailable(_))
    }
}

/// Secrets shorter than this are not redacted (they would mangle ordinary words, and a
/// credential is never that short).
const MIN_SECRET_LEN: usize = 8;
/// Longest message kept from a backend error.
const MAX_MESSAGE_LEN: usize = 600;

/// Whether an option key names a credential (its value is redacted from error messages).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "key",
        "sas",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Maps object_store errors to [`ArtifactError`], scrubbing credentials from the messages.
#[derive(Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Redacts `secret` from every message from now on.
    pub(crate) fn add(&mut self, secret: &str) {
        if secret.len() >= MIN_SECRET_LEN && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
            // Longest first, so a secret containing another is redacted whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// The one mapping of object_store errors: not found → `NotFound`; generic errors (network,
    /// timeouts, 5xx and the rest object_store does not classify) → `Unavailable`; the rest
    /// (permissions, bad configuration, unsupported operations…) → `Other`.
    pub(crate) fn map(&self, err: object_store::Error) -> ArtifactError {
        match err {
            object_store::Error::NotFound { .. } => ArtifactError::NotFound,
            object_store::Error::Generic { .. } => {
                ArtifactError::Unavailable(self.scrub(&err.to_string()))
            }
            other => ArtifactError::Other(self.scrub(&other.to_string())),
        }
    }

    /// Errors while building a store from its configuration are never worth a retry.
    pub(crate) fn map_config(&self, err: object_store::Error) -> ArtifactError {
        ArtifactError::Other(self.scrub(&err.to_string()))
    }

    /// Drops response bodies (keeping an S3/GCS/Azure error `Code` and `Message`), URL query
    /// strings (presigned signatures, SAS tokens) and every known secret; bounds the length.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = match message.find('<') {
            Some(body) => {
                let mut head = message[..body].trim_end().to_owned();
                let code = xml_tag(&message[body..], "Code");
                let msg = xml_tag(&message[body..], "Message");
                if code.is_some() || msg.is_some() {
                    head.push_str(&format!(
                        " [Code: {}; Message: {}]",
                        code.unwrap_or("-"),
                        msg.unwrap_or("-")
                    ));
                }
                head
            }
            None => message.to_owned(),
        };
        out = strip_url_queries(&out);
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "[REDACTED]");
        }
        if out.len() > MAX_MESSAGE_LEN {
            let mut end = MAX_MESSAGE_LEN;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push('…');
        }
        out
    }
}

fn xml_tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    // Bounded: a message is for logs, not a place for a whole response.
    let value = &xml[start..start + len];
    Some(if value.len() > 200 {
        &value[..value.floor_char_boundary(200)]
    } else {
        value
    })
}

/// Removes the query string of every `http://` or `https://` URL in `message`.
fn strip_url_queries(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = [rest.find("http://"), rest.find("https://")]
            .into_iter()
            .flatten()
            .min();
        let Some(start) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let url_and_more = &rest[start..];
        let end = url_and_more
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(url_and_more.len());
        let url = &url_and_more[..end];
        match url.find('?') {
            Some(q) => out.push_str(&url[..q]),
            None => out.push_str(url),
        }
        rest = &url_and_more[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_secrets_queries_and_bodies() {
        let mut r = Redactor::default();
        r.add("SECRETKEY12345");
        r.add("true");
        let msg = "Generic S3 error: Error performing GET http://127.0.0.1:9/b/k?X-Amz-Signature=abc in 1s - \
                   Server returned non-2xx status code: 400 Bad Request: <?xml version=\"1.0\"?><Error>\
                   <Code>SignatureDoesNotMatch</Code><Message>nope</Message><AWSAccessKeyId>AKIA</AWSAccessKeyId>\
                   <StringToSign>x</StringToSign></Error> SECRETKEY12345";
        let out = r.scrub(msg);
        assert!(!out.contains("X-Amz-Signature"), "{out}");
        assert!(!out.contains("AKIA"), "{out}");
        assert!(!out.contains("StringToSign"), "{out}");
        assert!(out.contains("http://127.0.0.1:9/b/k in 1s"), "{out}");
        assert!(
            out.contains("[Code: SignatureDoesNotMatch; Message: nope]"),
            "{out}"
        );
        let out = r.scrub("key SECRETKEY12345 and true");
        assert_eq!(out, "key [REDACTED] and true");
    }

    #[test]
    fn secret_keys() {
        assert!(is_secret_key("aws_secret_access_key"));
        assert!(is_secret_key("AWS_ACCESS_KEY_ID"));
        assert!(is_secret_key("aws_session_token"));
        assert!(is_secret_key("azure_storage_sas_key"));
        assert!(is_secret_key("google_service_account_key"));
        assert!(!is_secret_key("aws_endpoint"));
        assert!(!is_secret_key("aws_region"));
    }
}
