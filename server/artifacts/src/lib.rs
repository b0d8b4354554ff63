//! AIPROD's artifact store: video clips, final cuts and posters, stored content-addressed.
//!
//! Every object is written under a key derived from the SHA-256 of its bytes
//! (`blobs/sha256/<hex>.<ext>` under the store's prefix), so a retried upload after a crash
//! writes the same object: [`ArtifactStore::put`] is idempotent. Keys are never derived from
//! caller-provided strings other than a validated file extension, so no path traversal is possible.
//!
//! Backends (all through [`object_store`] 0.13):
//! - a local directory ([`ArtifactStore::local`], or `file:///abs/path` in [`ArtifactStore::from_url`]);
//! - S3 or an S3-compatible server (`s3://bucket/prefix`), Google Cloud Storage (`gs://bucket/prefix`),
//!   Azure Blob Storage (`az://container/prefix`), configured with object_store's option keys
//!   and, for credentials, the environment variables object_store reads (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
//!
//! # Remote client tuning
//! Remote stores get bounded timeouts and retries so an unreachable store is reported as
//! [`ArtifactError::Unavailable`] within seconds rather than minutes:
//! - connect timeout [`CONNECT_TIMEOUT`] (2 s), per-request timeout [`REQUEST_TIMEOUT`] (60 s;
//!   large objects are sent in [`MULTIPART_PART_SIZE`] parts, each its own request);
//! - [`MAX_RETRIES`] (3) retries with exponential backoff from [`RETRY_INITIAL_BACKOFF`] (100 ms)
//!   to at most [`RETRY_MAX_BACKOFF`] (1 s), and no retry started after [`RETRY_TIMEOUT`] (10 s).
//!
//! The timeouts may be overridden per store with object_store's client option keys
//! (`("timeout", "120s")`, `("connect_timeout", "5s")`) in [`ArtifactStore::from_url`]'s options.

mod error;
#[cfg(feature = "test-server")]
pub mod testing;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, ObjectStore,
    ObjectStoreExt, ObjectStoreScheme, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    RetryConfig,
};
use sha2::{Digest, Sha256};

pub use error::ArtifactError;
use error::Redactor;

/// Objects larger than this are uploaded with a multipart upload.
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
/// Size of each part of a multipart upload (the last one may be smaller).
pub const MULTIPART_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload sent at once.
pub const MULTIPART_CONCURRENCY: usize = 4;
/// TCP connect timeout of remote stores.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of one request (one part of a multipart upload) to a remote store.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of one failed request to a remote store (network errors, timeouts, 5xx, 429).
pub const MAX_RETRIES: usize = 3;
/// First backoff between retries; doubles each retry (with jitter).
pub const RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest backoff between two retries.
pub const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// No retry is started once this long has passed since the first attempt.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest lifetime of a presigned URL (the S3 limit, 7 days); longer requests are shortened.
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

const KEY_DIR: &str = "blobs/sha256";
const MAX_EXTENSION_LEN: usize = 16;

/// A stored object: its key (relative to the store's prefix), the lowercase hex SHA-256 of its
/// bytes and its size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// The artifact store. Cheap to clone (an `Arc` inside); `Debug` shows no secret.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// `Some` for S3/GCS/Azure.
    signer: Option<Arc<dyn Signer>>,
    /// Prefix inside the bucket/container (empty for a local directory).
    prefix: ObjectPath,
    description: String,
    /// Whether the backend stores attributes such as Content-Type.
    attributes: bool,
    redactor: Redactor,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("store", &self.inner.description)
            .field("remote", &self.is_remote())
            .finish()
    }
}

impl ArtifactStore {
    /// A local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<ArtifactStore, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ArtifactError::Other(format!("cannot create directory {}: {e}", dir.display()))
        })?;
        let canonical = std::fs::canonicalize(dir).map_err(|e| {
            ArtifactError::Other(format!("cannot resolve directory {}: {e}", dir.display()))
        })?;
        let redactor = Redactor::default();
        let fs = LocalFileSystem::new_with_prefix(&canonical).map_err(|e| redactor.map(e))?;
        Ok(ArtifactStore {
            inner: Arc::new(Inner {
                store: Arc::new(fs),
                signer: None,
                prefix: ObjectPath::default(),
                description: format!("local:{}", canonical.display()),
                attributes: false,
                redactor,
            }),
        })
    }

    /// By URL: `file:///abs/path`, `s3://bucket/optional/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (and the other URL forms object_store recognises for these
    /// stores), with options: object_store's config keys, e.g. `("aws_endpoint",
    /// "http://127.0.0.1:9000")`, `("aws_allow_http", "true")`, `("aws_access_key_id", …)`,
    /// `("aws_secret_access_key", …)`, `("aws_region", …)`, and the client keys `timeout` and
    /// `connect_timeout`. Credentials may also come from the environment (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`, as object_store reads them); options win over the environment. An option key
    /// the backend does not know is an error (a typo must not be ignored silently).
    ///
    /// Remote stores use the bounded timeouts and retries described in the crate docs.
    pub fn from_url(
        url: &str,
        options: &[(String, String)],
    ) -> Result<ArtifactStore, ArtifactError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ArtifactError::Other(format!("invalid artifact store URL: {e}")))?;
        let description = describe_url(&parsed);
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|_| {
            ArtifactError::Other(format!(
                "unsupported artifact store URL {description} (use file://, s3://, gs:// or az://)"
            ))
        })?;
        let mut redactor = Redactor::default();
        for (key, value) in options {
            if error::is_secret_key(key) {
                redactor.add(value);
            }
        }
        let client = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: RETRY_INITIAL_BACKOFF,
                max_backoff: RETRY_MAX_BACKOFF,
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
        };

        let (store, signer): (Arc<dyn ObjectStore>, Arc<dyn Signer>) = match scheme {
            ObjectStoreScheme::Local => {
                if let Some((key, _)) = options.first() {
                    return Err(ArtifactError::Other(format!(
                        "option {key:?} is not valid for a local directory"
                    )));
                }
                let path = parsed.to_file_path().map_err(|()| {
                    ArtifactError::Other(format!("invalid file URL {description}"))
                })?;
                return ArtifactStore::local(&path);
            }
            ObjectStoreScheme::AmazonS3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut builder = AmazonS3Builder::from_env()
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_url(url);
                for (key, value) in options {
                    let k: AmazonS3ConfigKey = parse_key(key, "s3")?;
                    builder = builder.with_config(k, value);
                }
                for k in [
                    AmazonS3ConfigKey::AccessKeyId,
                    AmazonS3ConfigKey::SecretAccessKey,
                    AmazonS3ConfigKey::Token,
                ] {
                    if let Some(v) = builder.get_config_value(&k) {
                        redactor.add(&v);
                    }
                }
                let s3 = Arc::new(builder.build().map_err(|e| redactor.map_config(e))?);
                (s3.clone(), s3)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut builder = GoogleCloudStorageBuilder::from_env()
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_url(url);
                for (key, value) in options {
                    let k: GoogleConfigKey = parse_key(key, "gcs")?;
                    builder = builder.with_config(k, value);
                }
                if let Some(v) = builder.get_config_value(&GoogleConfigKey::ServiceAccountKey) {
                    redactor.add(&v);
                }
                let gcs = Arc::new(builder.build().map_err(|e| redactor.map_config(e))?);
                (gcs.clone(), gcs)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_url(url);
                for (key, value) in options {
                    let k: AzureConfigKey = parse_key(key, "azure")?;
                    builder = builder.with_config(k, value);
                }
                for k in [
                    AzureConfigKey::AccessKey,
                    AzureConfigKey::ClientSecret,
                    AzureConfigKey::SasKey,
                    AzureConfigKey::Token,
                ] {
                    if let Some(v) = builder.get_config_value(&k) {
                        redactor.add(&v);
                    }
                }
                let az = Arc::new(builder.build().map_err(|e| redactor.map_config(e))?);
                (az.clone(), az)
            }
            _ => {
                return Err(ArtifactError::Other(format!(
                    "unsupported artifact store URL {description} (use file://, s3://, gs:// or az://)"
                )));
            }
        };
        Ok(ArtifactStore {
            inner: Arc::new(Inner {
                store,
                signer: Some(signer),
                prefix,
                description,
                attributes: true,
                redactor,
            }),
        })
    }

    /// Stores `bytes` under their content address, `blobs/sha256/<hex>.<extension>` under the
    /// store's prefix. A put of bytes already present is a no-op (checked by a HEAD first) and
    /// returns the same [`StoredObject`]. `content_type` (e.g. `video/mp4`) is set as the
    /// object's Content-Type where the backend supports it (not on a local directory).
    /// `extension` must be 1–16 ASCII letters or digits (a leading `.` is ignored, letters are
    /// lowercased) or empty. Objects over [`MULTIPART_THRESHOLD`] use a multipart upload.
    /// After writing, the object is read back and its SHA-256 checked against the key.
    pub async fn put(
        &self,
        bytes: Bytes,
        content_type: &str,
        extension: &str,
    ) -> Result<StoredObject, ArtifactError> {
        let extension = normalize_extension(extension)?;
        validate_content_type(content_type)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        let key = if extension.is_empty() {
            format!("{KEY_DIR}/{sha256}")
        } else {
            format!("{KEY_DIR}/{sha256}.{extension}")
        };
        let stored = StoredObject { key, sha256, size };
        let path = self.path(&stored.key);

        match self.inner.store.head(&path).await {
            Ok(meta) if meta.size == size => {
                tracing::debug!(key = %stored.key, "artifact already stored");
                return Ok(stored);
            }
            Ok(meta) => {
                tracing::warn!(
                    key = %stored.key, found = meta.size, expected = size,
                    "stored artifact has the wrong size; writing it again"
                );
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.inner.redactor.map(e)),
        }

        let mut attributes = Attributes::new();
        if self.inner.attributes && !content_type.is_empty() {
            attributes.insert(
                Attribute::ContentType,
                AttributeValue::from(content_type.to_owned()),
            );
        }
        if bytes.len() > MULTIPART_THRESHOLD {
            self.put_multipart(&path, bytes, attributes).await?;
        } else {
            let opts = PutOptions {
                mode: PutMode::Overwrite,
                attributes,
                ..PutOptions::default()
            };
            self.inner
                .store
                .put_opts(&path, PutPayload::from(bytes), opts)
                .await
                .map_err(|e| self.inner.redactor.map(e))?;
        }

        self.verify(&path, &stored).await?;
        tracing::debug!(key = %stored.key, size, "artifact stored");
        Ok(stored)
    }

    async fn put_multipart(
        &self,
        path: &ObjectPath,
        bytes: Bytes,
        attributes: Attributes,
    ) -> Result<(), ArtifactError> {
        let opts = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = self
            .inner
            .store
            .put_multipart_opts(path, opts)
            .await
            .map_err(|e| self.inner.redactor.map(e))?;
        // Parts are numbered in the order `put_part` is called; the futures then run concurrently.
        let parts: Vec<_> = (0..bytes.len())
            .step_by(MULTIPART_PART_SIZE)
            .map(|start| {
                let end = (start + MULTIPART_PART_SIZE).min(bytes.len());
                upload.put_part(PutPayload::from(bytes.slice(start..end)))
            })
            .collect();
        let sent = futures::stream::iter(parts)
            .buffer_unordered(MULTIPART_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await;
        let result = match sent {
            Ok(_) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %self.inner.redactor.map(abort), "aborting a multipart upload failed");
            }
            return Err(self.inner.redactor.map(e));
        }
        Ok(())
    }

    /// Reads the object back and checks its SHA-256 and size against what was written.
    async fn verify(&self, path: &ObjectPath, stored: &StoredObject) -> Result<(), ArtifactError> {
        let result = self
            .inner
            .store
            .get(path)
            .await
            .map_err(|e| self.inner.redactor.map(e))?;
        let mut stream = result.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.inner.redactor.map(e))?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let sha256 = hex::encode(hasher.finalize());
        if sha256 != stored.sha256 || size != stored.size {
            tracing::error!(
                key = %stored.key, read_sha256 = %sha256, read_size = size,
                "artifact read back does not match what was written; deleting it"
            );
            if let Err(e) = self.inner.store.delete(path).await {
                tracing::warn!(error = %self.inner.redactor.map(e), "deleting a corrupt artifact failed");
            }
            return Err(ArtifactError::Other(format!(
                "artifact {} read back as {size} bytes with SHA-256 {sha256}, not what was written",
                stored.key
            )));
        }
        Ok(())
    }

    /// Reads `range` (end exclusive) of the object; a range past the end (or with start > end)
    /// is [`ArtifactError::OutOfRange`]; an empty range at or before the end is empty bytes.
    pub async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ArtifactError> {
        let path = self.checked_path(key)?;
        let meta = self
            .inner
            .store
            .head(&path)
            .await
            .map_err(|e| self.inner.redactor.map(e))?;
        if range.start > range.end || range.end > meta.size {
            return Err(ArtifactError::OutOfRange {
                start: range.start,
                end: range.end,
                size: meta.size,
            });
        }
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        let bytes = self
            .inner
            .store
            .get_range(&path, range.clone())
            .await
            .map_err(|e| self.inner.redactor.map(e))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(ArtifactError::Other(format!(
                "store returned {} bytes for range {}..{} of {key}",
                bytes.len(),
                range.start,
                range.end
            )));
        }
        Ok(bytes)
    }

    /// Reads the whole object.
    pub async fn read(&self, key: &str) -> Result<Bytes, ArtifactError> {
        let path = self.checked_path(key)?;
        let result = self
            .inner
            .store
            .get(&path)
            .await
            .map_err(|e| self.inner.redactor.map(e))?;
        result.bytes().await.map_err(|e| self.inner.redactor.map(e))
    }

    /// Size of the object in bytes, `None` if absent.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, ArtifactError> {
        let path = self.checked_path(key)?;
        match self.inner.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.inner.redactor.map(e)),
        }
    }

    /// Every stored key, sorted (for audits, garbage collection and tests; lists the whole store).
    pub async fn keys(&self) -> Result<Vec<String>, ArtifactError> {
        let dir = self.path(KEY_DIR);
        let strip = if self.inner.prefix.as_ref().is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.prefix)
        };
        let mut keys: Vec<String> = self
            .inner
            .store
            .list(Some(&dir))
            .map_err(|e| self.inner.redactor.map(e))
            .try_filter_map(|meta| {
                let key = meta.location.as_ref().strip_prefix(strip.as_str());
                let key = key.filter(|k| is_valid_key(k)).map(str::to_owned);
                futures::future::ready(Ok(key))
            })
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// A presigned GET URL and its expiry when the store is S3/GCS/Azure (`None` for a local
    /// directory). `expires_in` is capped at [`MAX_PRESIGN_EXPIRY`]; the returned expiry is the
    /// real one. The URL is not checked against the object's existence (see [`Self::size`]).
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<(url::Url, SystemTime)>, ArtifactError> {
        let path = self.checked_path(key)?;
        let Some(signer) = &self.inner.signer else {
            return Ok(None);
        };
        let expires_in = expires_in.min(MAX_PRESIGN_EXPIRY);
        let expires_at = SystemTime::now() + expires_in;
        let url = signer
            .signed_url(http::Method::GET, &path, expires_in)
            .await
            .map_err(|e| self.inner.redactor.map(e))?;
        Ok(Some((url, expires_at)))
    }

    /// `local:/path` or `s3://bucket/prefix` — for logs; never a secret.
    pub fn describe(&self) -> String {
        self.inner.description.clone()
    }

    /// Whether the store is S3/GCS/Azure rather than a local directory.
    pub fn is_remote(&self) -> bool {
        self.inner.signer.is_some()
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.inner.prefix.as_ref().is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.inner.prefix))
        }
    }

    /// The path of a key this crate made; anything else is refused.
    fn checked_path(&self, key: &str) -> Result<ObjectPath, ArtifactError> {
        if is_valid_key(key) {
            Ok(self.path(key))
        } else {
            Err(ArtifactError::Other(format!(
                "invalid artifact key {:?}",
                key.chars().take(100).collect::<String>()
            )))
        }
    }
}

fn parse_key<K: std::str::FromStr>(key: &str, store: &str) -> Result<K, ArtifactError> {
    key.to_ascii_lowercase()
        .parse()
        .map_err(|_| ArtifactError::Other(format!("unknown {store} option {key:?}")))
}

/// The URL without credentials or query: `scheme://host/path`.
fn describe_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string().trim_end_matches('/').to_owned()
}

fn normalize_extension(extension: &str) -> Result<String, ArtifactError> {
    let ext = extension.strip_prefix('.').unwrap_or(extension);
    if ext.len() > MAX_EXTENSION_LEN || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ArtifactError::Other(format!(
            "invalid extension {:?}: up to {MAX_EXTENSION_LEN} ASCII letters or digits",
            extension.chars().take(40).collect::<String>()
        )));
    }
    Ok(ext.to_ascii_lowercase())
}

fn validate_content_type(content_type: &str) -> Result<(), ArtifactError> {
    if content_type.len() > 255 || !content_type.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ArtifactError::Other(
            "invalid content type: up to 255 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

/// `blobs/sha256/<64 lowercase hex>` with an optional `.<extension>` as [`normalize_extension`] makes.
fn is_valid_key(key: &str) -> bool {
    let Some(name) = key.strip_prefix(KEY_DIR).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let (hash, ext) = match name.split_once('.') {
        Some((hash, ext)) => (hash, Some(ext)),
        None => (name, None),
    };
    let hash_ok = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ext_ok = ext.is_none_or(|e| {
        !e.is_empty()
            && e.len() <= MAX_EXTENSION_LEN
            && e.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    hash_ok && ext_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_futures_are_send() {
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        fn send<T: Send>(_: &T) {}
        send_sync_clone::<ArtifactStore>();
        let dir = std::env::temp_dir();
        let store = ArtifactStore::local(&dir).unwrap();
        send(&store.put(Bytes::new(), "", ""));
        send(&store.read(""));
        send(&store.read_range("", 0..0));
        send(&store.size(""));
        send(&store.keys());
        send(&store.presigned_get("", Duration::ZERO));
    }

    #[test]
    fn keys_are_validated() {
        let h = "a".repeat(64);
        assert!(is_valid_key(&format!("blobs/sha256/{h}.mp4")));
        assert!(is_valid_key(&format!("blobs/sha256/{h}")));
        assert!(!is_valid_key(&format!("blobs/sha256/{h}.")));
        assert!(!is_valid_key(&format!("blobs/sha256/{h}.MP4")));
        assert!(!is_valid_key(&format!("blobs/sha256/{h}.mp4/../x")));
        assert!(!is_valid_key(&format!("blobs/sha256/../{h}")));
        assert!(!is_valid_key(&format!("/blobs/sha256/{h}")));
        assert!(!is_valid_key(&format!("blobs/sha256/{}", "A".repeat(64))));
        assert!(!is_valid_key("../../etc/passwd"));
        assert!(!is_valid_key(""));
    }

    #[test]
    fn extensions_are_normalized() {
        assert_eq!(normalize_extension(".MP4").unwrap(), "mp4");
        assert_eq!(normalize_extension("png").unwrap(), "png");
        assert_eq!(normalize_extension("").unwrap(), "");
        assert!(normalize_extension("../x").is_err());
        assert!(normalize_extension("a/b").is_err());
        assert!(normalize_extension("mp4.").is_err());
        assert!(normalize_extension(&"a".repeat(17)).is_err());
    }

    #[test]
    fn content_types_are_validated() {
        assert!(validate_content_type("video/mp4").is_ok());
        assert!(validate_content_type("").is_ok());
        assert!(validate_content_type("video/mp4\r\nX-Evil: 1").is_err());
    }

    #[test]
    fn urls_are_described_without_secrets() {
        let u = url::Url::parse("s3://user:pass@bucket/prefix/?sig=secret#f").unwrap();
        assert_eq!(describe_url(&u), "s3://bucket/prefix");
    }

    #[test]
    fn unknown_schemes_and_options_are_refused() {
        assert!(ArtifactStore::from_url("ftp://host/x", &[]).is_err());
        let err = ArtifactStore::from_url(
            "s3://bucket/prefix",
            &[("aws_no_such_option".into(), "x".into())],
        )
        .unwrap_err();
        assert!(err.to_string().contains("aws_no_such_option"), "{err}");
    }

    #[test]
    fn remote_urls_build_without_network() {
        let opts = [("aws_region".to_owned(), "eu-west-1".to_owned())];
        for (url, shown) in [
            ("s3://bucket/a/b/", "s3://bucket/a/b"),
            ("s3://bucket", "s3://bucket"),
            ("s3://AKIA:secret@bucket/p?x=1", "s3://bucket/p"),
        ] {
            let store = ArtifactStore::from_url(url, &opts).unwrap();
            assert_eq!(store.describe(), shown);
            assert!(store.is_remote());
        }
        let store = ArtifactStore::from_url("s3://bucket/a/b/", &opts).unwrap();
        assert_eq!(store.path("blobs/sha256/x").as_ref(), "a/b/blobs/sha256/x");
    }
}
