//! One conformance suite, run against every implementation: a local directory (by path and by
//! `file://` URL) and a real S3-compatible server (s3s-fs) on loopback.

use std::time::{Duration, Instant, SystemTime};

use aiprod_artifacts::testing::S3TestServer;
use aiprod_artifacts::{ArtifactError, ArtifactStore, StoredObject};
use bytes::Bytes;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Bytes no other test writes: a pattern seeded by a per-call counter and the clock.
fn unique_bytes(len: usize) -> Bytes {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut state = nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 48) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The whole suite; every case uses bytes of its own, so it can run against a shared store.
async fn conformance(store: &ArtifactStore) {
    let started = Instant::now();
    put_is_idempotent(store).await;
    reads_whole_and_ranges(store).await;
    missing_and_invalid_keys(store).await;
    large_object_round_trips(store).await;
    concurrent_puts_of_the_same_bytes(store).await;
    presigned_get(store).await;
    eprintln!(
        "conformance suite on {} took {:?}",
        store.describe(),
        started.elapsed()
    );
}

async fn put_is_idempotent(store: &ArtifactStore) {
    let bytes = unique_bytes(4096);
    let sha = sha256_hex(&bytes);
    let first = store.put(bytes.clone(), "video/mp4", "mp4").await.unwrap();
    assert_eq!(
        first,
        StoredObject {
            key: format!("blobs/sha256/{sha}.mp4"),
            sha256: sha.clone(),
            size: 4096
        }
    );
    let second = store.put(bytes.clone(), "video/mp4", ".MP4").await.unwrap();
    assert_eq!(first, second);
    let keys = store.keys().await.unwrap();
    assert_eq!(
        keys.iter().filter(|k| k.contains(&sha)).count(),
        1,
        "{keys:?}"
    );
    assert_eq!(store.size(&first.key).await.unwrap(), Some(4096));
    assert_eq!(store.read(&first.key).await.unwrap(), bytes);

    // Same bytes, another extension: another object; no extension: no dot.
    let png = store.put(bytes.clone(), "image/png", "png").await.unwrap();
    assert_eq!(png.key, format!("blobs/sha256/{sha}.png"));
    let bare = store
        .put(bytes.clone(), "application/octet-stream", "")
        .await
        .unwrap();
    assert_eq!(bare.key, format!("blobs/sha256/{sha}"));

    // An empty object.
    let empty = store.put(Bytes::new(), "image/png", "png").await.unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(empty.sha256, sha256_hex(b""));
    assert_eq!(store.read(&empty.key).await.unwrap(), Bytes::new());
    assert_eq!(
        store.read_range(&empty.key, 0..0).await.unwrap(),
        Bytes::new()
    );

    // Callers never choose where bytes go.
    for ext in ["../x", "a/b", "mp4?x", "mp4 ", "m\u{e9}"] {
        assert!(
            matches!(
                store.put(bytes.clone(), "video/mp4", ext).await,
                Err(ArtifactError::Other(_))
            ),
            "extension {ext:?}"
        );
    }
    assert!(matches!(
        store.put(bytes.clone(), "video/mp4\r\nx: y", "mp4").await,
        Err(ArtifactError::Other(_))
    ));
}

async fn reads_whole_and_ranges(store: &ArtifactStore) {
    let bytes = unique_bytes(1000);
    let obj = store.put(bytes.clone(), "video/mp4", "mp4").await.unwrap();
    assert_eq!(store.read(&obj.key).await.unwrap(), bytes);
    for range in [
        0..10u64,
        0..1000,
        500..600,
        990..1000,
        999..1000,
        1000..1000,
        0..0,
        500..500,
    ] {
        let got = store.read_range(&obj.key, range.clone()).await.unwrap();
        assert_eq!(
            got,
            bytes.slice(range.start as usize..range.end as usize),
            "{range:?}"
        );
    }
    #[allow(clippy::reversed_empty_ranges)] // start > end is refused too
    let out_of_range = [995..1001u64, 1000..1001, 1001..1001, 2000..3000, 10..5];
    for range in out_of_range {
        match store.read_range(&obj.key, range.clone()).await {
            Err(ArtifactError::OutOfRange { start, end, size }) => {
                assert_eq!((start, end, size), (range.start, range.end, 1000));
            }
            other => panic!("{range:?}: {other:?}"),
        }
    }
}

async fn missing_and_invalid_keys(store: &ArtifactStore) {
    let missing = format!("blobs/sha256/{}.mp4", sha256_hex(&unique_bytes(64)));
    assert!(matches!(
        store.read(&missing).await,
        Err(ArtifactError::NotFound)
    ));
    assert!(matches!(
        store.read_range(&missing, 0..1).await,
        Err(ArtifactError::NotFound)
    ));
    assert_eq!(store.size(&missing).await.unwrap(), None);
    for key in [
        "../etc/passwd",
        "blobs/sha256/../../x",
        "",
        "blobs/sha256/abc.mp4",
        "/blobs",
    ] {
        assert!(
            matches!(store.read(key).await, Err(ArtifactError::Other(_))),
            "{key:?}"
        );
        assert!(
            matches!(store.size(key).await, Err(ArtifactError::Other(_))),
            "{key:?}"
        );
        assert!(matches!(
            store.read_range(key, 0..1).await,
            Err(ArtifactError::Other(_))
        ));
        assert!(matches!(
            store.presigned_get(key, Duration::from_secs(60)).await,
            Err(ArtifactError::Other(_))
        ));
    }
}

async fn large_object_round_trips(store: &ArtifactStore) {
    let bytes = unique_bytes(20 * MIB + 123);
    let t = Instant::now();
    let obj = store.put(bytes.clone(), "video/mp4", "mp4").await.unwrap();
    eprintln!("  20 MiB put on {}: {:?}", store.describe(), t.elapsed());
    assert_eq!(obj.size, bytes.len() as u64);
    assert_eq!(obj.sha256, sha256_hex(&bytes));
    assert_eq!(
        store.size(&obj.key).await.unwrap(),
        Some(bytes.len() as u64)
    );
    let t = Instant::now();
    let back = store.read(&obj.key).await.unwrap();
    eprintln!("  20 MiB read on {}: {:?}", store.describe(), t.elapsed());
    assert!(back == bytes, "20 MiB object differs after a round trip");
    let part = 8 * MIB as u64;
    let range = part - 10..part + 10;
    let got = store.read_range(&obj.key, range.clone()).await.unwrap();
    assert_eq!(got, bytes.slice(range.start as usize..range.end as usize));
    let tail = obj.size - 5..obj.size;
    assert_eq!(
        store.read_range(&obj.key, tail.clone()).await.unwrap(),
        bytes.slice(tail.start as usize..)
    );
    // A retried upload of the same bytes is a no-op.
    assert_eq!(store.put(bytes, "video/mp4", "mp4").await.unwrap(), obj);
}

async fn concurrent_puts_of_the_same_bytes(store: &ArtifactStore) {
    for (len, writers) in [(256 * 1024, 8), (9 * MIB, 3)] {
        let bytes = unique_bytes(len);
        let sha = sha256_hex(&bytes);
        let puts = (0..writers).map(|_| {
            let store = store.clone();
            let bytes = bytes.clone();
            async move { store.put(bytes, "video/mp4", "mp4").await }
        });
        let results = futures::future::join_all(puts).await;
        let first = results[0].as_ref().unwrap().clone();
        for r in &results {
            assert_eq!(r.as_ref().unwrap(), &first);
        }
        assert_eq!(store.read(&first.key).await.unwrap(), bytes);
        let keys = store.keys().await.unwrap();
        assert_eq!(
            keys.iter().filter(|k| k.contains(&sha)).count(),
            1,
            "{keys:?}"
        );
    }
}

async fn presigned_get(store: &ArtifactStore) {
    let bytes = unique_bytes(3000);
    let obj = store.put(bytes.clone(), "video/mp4", "mp4").await.unwrap();
    let poster = store
        .put(unique_bytes(500), "image/png", "png")
        .await
        .unwrap();
    let presigned = store
        .presigned_get(&obj.key, Duration::from_secs(300))
        .await
        .unwrap();
    if !store.is_remote() {
        assert!(presigned.is_none());
        return;
    }
    let (url, expires) = presigned.expect("a remote store presigns");
    let expected = SystemTime::now() + Duration::from_secs(300);
    let skew = expected
        .duration_since(expires)
        .unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(5), "expiry off by {skew:?}");
    assert!(
        url.query().unwrap_or("").contains("X-Amz-Signature="),
        "{url}"
    );

    let http = reqwest::Client::new();
    let resp = http.get(url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    assert_eq!(resp.bytes().await.unwrap(), bytes);

    let (poster_url, _) = store
        .presigned_get(&poster.key, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let resp = http.get(poster_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");

    // Change one character of the signature: refused.
    let mut tampered = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "X-Amz-Signature" {
                let mut chars: Vec<char> = v.chars().collect();
                chars[0] = if chars[0] == 'a' { 'b' } else { 'a' };
                chars.into_iter().collect()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    assert_ne!(tampered, url);
    let resp = http.get(tampered).send().await.unwrap();
    assert_eq!(resp.status(), 403);

    // A presigned URL is for its own object only.
    let mut other = url.clone();
    other.set_path(
        &url.path()
            .replace(&obj.sha256, &poster.sha256)
            .replace(".mp4", ".png"),
    );
    let resp = http.get(other).send().await.unwrap();
    assert_eq!(resp.status(), 403);

    // Presigned URLs for absent objects can be made; fetching one is a 404.
    let missing = format!("blobs/sha256/{}.mp4", sha256_hex(&unique_bytes(8)));
    let (url, _) = store
        .presigned_get(&missing, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(http.get(url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not/yet/there");
    let store = ArtifactStore::local(&path).unwrap();
    assert!(!store.is_remote());
    assert_eq!(
        store.describe(),
        format!("local:{}", std::fs::canonicalize(&path).unwrap().display())
    );
    conformance(&store).await;
    // Objects are plain files under the directory; no staging files are left behind.
    let mut files = Vec::new();
    let mut stack = vec![path.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert_eq!(files.len(), store.keys().await.unwrap().len(), "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with(path.join("blobs/sha256"))),
        "{files:?}"
    );
}

#[tokio::test]
async fn local_directory_by_file_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let store = ArtifactStore::from_url(url.as_str(), &[]).unwrap();
    assert!(!store.is_remote());
    assert!(
        store.describe().starts_with("local:/"),
        "{}",
        store.describe()
    );
    conformance(&store).await;
}

#[tokio::test]
async fn s3_compatible_server() {
    let server = S3TestServer::start().await.unwrap();
    let store = ArtifactStore::from_url(&server.url(), &server.options()).unwrap();
    assert!(store.is_remote());
    assert_eq!(store.describe(), "s3://aiprod-test/artifacts");
    let debug = format!("{store:?}");
    assert!(
        !debug.contains(&server.secret_key) && !debug.contains(&server.access_key),
        "{debug}"
    );
    conformance(&store).await;
    // The objects live under the prefix in the bucket.
    let key = store.keys().await.unwrap().pop().unwrap();
    assert!(server.object_file(&format!("artifacts/{key}")).is_file());
}

#[tokio::test]
async fn s3_bucket_root_without_prefix() {
    let server = S3TestServer::start().await.unwrap();
    let store = ArtifactStore::from_url(&server.url_with_prefix(""), &server.options()).unwrap();
    assert_eq!(store.describe(), "s3://aiprod-test");
    let obj = store
        .put(unique_bytes(100), "video/mp4", "mp4")
        .await
        .unwrap();
    assert!(server.object_file(&obj.key).is_file());
    assert_eq!(store.keys().await.unwrap(), vec![obj.key]);
}

#[tokio::test]
async fn wrong_credentials_are_refused_without_leaking_them() {
    let server = S3TestServer::start().await.unwrap();
    let wrong_secret = "wrong-secret-key-0123456789";
    let mut options = server.options();
    for (k, v) in &mut options {
        if k == "aws_secret_access_key" {
            *v = wrong_secret.to_owned();
        }
    }
    let store = ArtifactStore::from_url(&server.url(), &options).unwrap();
    let err = store
        .put(unique_bytes(10), "video/mp4", "mp4")
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Other(_)), "{err:?}");
    let msg = err.to_string();
    eprintln!("wrong secret: {msg}");
    assert!(
        !msg.contains(wrong_secret) && !msg.contains(&server.access_key),
        "{msg}"
    );
    assert!(!format!("{store:?}").contains(wrong_secret));
}

#[tokio::test]
async fn unavailable_server_fails_promptly() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "closed-port-secret-0123456789";
    let options: Vec<(String, String)> = [
        ("aws_endpoint", format!("http://127.0.0.1:{port}")),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "closed-port-access".into()),
        ("aws_secret_access_key", secret.into()),
        ("aws_region", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let store = ArtifactStore::from_url("s3://bucket/prefix", &options).unwrap();
    let key = format!("blobs/sha256/{}.mp4", sha256_hex(b"x"));

    let t = Instant::now();
    let err = store
        .put(unique_bytes(100), "video/mp4", "mp4")
        .await
        .unwrap_err();
    let took = t.elapsed();
    eprintln!("put to a closed port failed in {took:?}: {err}");
    assert!(matches!(err, ArtifactError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let t = Instant::now();
    assert!(matches!(
        store.read(&key).await,
        Err(ArtifactError::Unavailable(_))
    ));
    assert!(matches!(
        store.size(&key).await,
        Err(ArtifactError::Unavailable(_))
    ));
    assert!(matches!(
        store.read_range(&key, 0..1).await,
        Err(ArtifactError::Unavailable(_))
    ));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    // Presigning needs no network.
    assert!(
        store
            .presigned_get(&key, Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );
}

/// The server runs on its own thread and runtime: it outlives the runtime that started it and
/// serves clients from any runtime (the service's integration tests rely on this).
#[test]
fn test_server_outlives_the_runtime_that_started_it() {
    let rt1 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt1.block_on(S3TestServer::start()).unwrap();
    drop(rt1);
    let store = ArtifactStore::from_url(&server.url(), &server.options()).unwrap();
    for _ in 0..2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let obj = store
                .put(unique_bytes(1000), "video/mp4", "mp4")
                .await
                .unwrap();
            assert_eq!(store.read(&obj.key).await.unwrap().len(), 1000);
        });
    }
    let root = server.root.clone();
    assert!(root.is_dir());
    server.stop();
    assert!(
        !root.exists(),
        "the server's directory is removed when it stops"
    );
}

#[test]
fn test_server_starts_from_synchronous_code() {
    let server = S3TestServer::start_blocking().unwrap();
    assert!(server.endpoint.starts_with("http://127.0.0.1:"));
    let env = server.env();
    assert!(env.contains(&("AWS_ENDPOINT".to_owned(), server.endpoint.clone())));
    assert!(env.contains(&(
        "AWS_SECRET_ACCESS_KEY".to_owned(),
        server.secret_key.clone()
    )));
    let store = ArtifactStore::from_url(&server.url(), &server.options()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let obj = rt
        .block_on(store.put(unique_bytes(10), "image/png", "png"))
        .unwrap();
    assert!(
        server
            .object_file(&format!("artifacts/{}", obj.key))
            .is_file()
    );
}

#[test]
fn unknown_options_and_schemes_are_refused() {
    let err =
        ArtifactStore::from_url("s3://b/p", &[("aws_endpoitn".into(), "x".into())]).unwrap_err();
    assert!(err.to_string().contains("aws_endpoitn"), "{err}");
    assert!(ArtifactStore::from_url("ftp://h/p", &[]).is_err());
    assert!(ArtifactStore::from_url("not a url", &[]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    assert!(ArtifactStore::from_url(url.as_str(), &[("timeout".into(), "5s".into())]).is_err());
}
