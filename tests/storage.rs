//! Storage API client against local test doubles: the retry policy over real HTTP (every status from 100
//! to 599, Retry-After, job-creating POSTs), and the export and upload flows through an S3-compatible
//! double. The doubles are deliberately small: they stand for the parts of Keboola a test needs.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::{fake_stack, gunzip, put_sliced_export, serve};
use kbc_storage::{
    Client, ClientConfig, DownloadMode, Endpoints, Error, ExportOptions, ImportOptions,
    RetryPolicy, STREAM_GZIP_ABOVE, UploadOptions,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 1,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        multiplier: 2.0,
        wait_deadline: Duration::from_secs(5),
        deadline: Duration::from_secs(30),
    }
}

fn client(url: &str, policy: RetryPolicy, s3: Option<String>) -> Client {
    let mut config = ClientConfig::new(url, "test-token-0123456789");
    config.retry = policy;
    config.read_timeout = Duration::from_secs(5);
    config.job_timeout = Duration::from_secs(20);
    config.endpoints = Endpoints { s3, gcs: None };
    Client::new(config).unwrap()
}

/// One attempt, then at most one retry: a status is "retried" when the server saw two requests. Pins the
/// whole retried set, so any change to the policy shows here.
#[tokio::test]
async fn retried_status_codes_are_pinned() {
    let hits: Arc<Mutex<HashMap<u16, usize>>> = Arc::default();
    let seen = hits.clone();
    let router = Router::new().fallback(move |uri: Uri| {
        let seen = seen.clone();
        async move {
            // Path: /s/{status}/v2/storage/tokens/verify
            let status: u16 = uri.path().split('/').nth(2).unwrap().parse().unwrap();
            *seen.lock().unwrap().entry(status).or_default() += 1;
            (StatusCode::from_u16(status).unwrap(), "{}").into_response()
        }
    });
    let base = serve(router).await;
    let mut retried = Vec::new();
    for status in 100u16..=599 {
        let c = client(&format!("{base}/s/{status}"), quick_policy(), None);
        let result = tokio::time::timeout(Duration::from_secs(10), c.verify_token()).await;
        assert!(result.is_ok(), "status {status}: the client hung");
        let count = hits.lock().unwrap().get(&status).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&count),
            "status {status}: {count} requests"
        );
        if count == 2 {
            retried.push(status);
        }
    }
    // 1xx cannot be a final answer in HTTP: the server drops the connection, which the client sees as an
    // interrupted request and retries (this is a GET). 101 comes back as an upgrade answer and is final.
    let mut expected: Vec<u16> = std::iter::once(100).chain(102..=199).collect();
    expected.extend([408, 429, 500, 502, 503, 504]);
    assert_eq!(retried, expected);
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_wait_deadline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().fallback(move |uri: Uri| {
        let counter = counter.clone();
        async move {
            let after = if uri.path().starts_with("/long") {
                "3600"
            } else {
                "1"
            };
            if counter.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                let mut h = HeaderMap::new();
                h.insert("Retry-After", after.parse().unwrap());
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    h,
                    r#"{"status":"maintenance","reason":"upgrade"}"#,
                )
                    .into_response()
            } else {
                (
                    StatusCode::OK,
                    r#"{"id":"1","owner":{"id":"2","name":"p"}}"#,
                )
                    .into_response()
            }
        }
    });
    let base = serve(router).await;
    let started = Instant::now();
    let token = client(&base, quick_policy(), None)
        .verify_token()
        .await
        .unwrap();
    assert_eq!(token.owner.name, "p");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}",
        started.elapsed()
    );
    // A Retry-After that ends past the run's wait deadline (the job timeout) is not waited for: the run
    // fails at once with the maintenance answer.
    let started = Instant::now();
    let err = client(&format!("{base}/long"), quick_policy(), None)
        .verify_token()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "waited in vain");
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_job_creating_post_is_not_repeated_after_a_500() {
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = posts.clone();
    let router = Router::new().fallback(move |method: Method, uri: Uri| {
        let counter = counter.clone();
        async move {
            if method == Method::POST && uri.path().ends_with("/import-async") {
                counter.fetch_add(1, Ordering::SeqCst);
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"error":"Internal Server Error","code":"internal","exceptionId":"exception-abc"}"#,
                )
                    .into_response();
            }
            StatusCode::NOT_FOUND.into_response()
        }
    });
    let base = serve(router).await;
    let mut policy = quick_policy();
    policy.max_retries = 5;
    let err = client(&base, policy, None)
        .import_table(
            &"in.c-main.t".parse().unwrap(),
            12,
            &ImportOptions {
                incremental: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(posts.load(Ordering::SeqCst), 1, "the POST was repeated");
    assert!(matches!(err, Error::MaybeApplied { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("may have been applied"), "{text}");
    assert!(
        text.contains("in.c-main.t") && text.contains("duplicates rows"),
        "{text}"
    );
    assert!(!err.is_user());
}

#[tokio::test]
async fn a_job_creating_post_is_repeated_after_a_maintenance_503_and_waits_for_the_job() {
    let posts = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let (p, q) = (posts.clone(), polls.clone());
    let router = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
        let (p, q) = (p.clone(), q.clone());
        async move {
            let path = uri.path().to_owned();
            if method == Method::POST && path == "/v2/storage/branch/77/tables/in.c-main.t/import-async" {
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["dataFileId"], 12);
                assert_eq!(body["incremental"], false);
                if p.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Keboola's maintenance answer: the API refused the request, so it is repeated.
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"status":"maintenance","reason":"Maintenance","estimatedEndTime":null}"#,
                    )
                        .into_response();
                }
                return (StatusCode::ACCEPTED, r#"{"id":99,"status":"waiting","operationName":"tableImport"}"#).into_response();
            }
            if method == Method::GET && path == "/v2/storage/dev-branches/77" {
                return (StatusCode::OK, r#"{"id":77,"name":"dev","isDefault":false}"#).into_response();
            }
            // Jobs are never branch-prefixed.
            if method == Method::GET && path == "/v2/storage/jobs/99" {
                let status = if q.fetch_add(1, Ordering::SeqCst) < 2 { "processing" } else { "success" };
                return (
                    StatusCode::OK,
                    serde_json::json!({"id":99,"status":status,"operationName":"tableImport","tableId":"in.c-main.t",
                        "results": {"importedColumns":["id"],"warnings":[],"totalRowsCount":3,"totalDataSizeBytes":10}})
                    .to_string(),
                )
                    .into_response();
            }
            (StatusCode::NOT_FOUND, format!("no route {method} {path}")).into_response()
        }
    });
    let base = serve(router).await;
    let mut config = ClientConfig::new(&base, "test-token-0123456789");
    config.retry = quick_policy();
    config.branch = Some("77".into());
    // A development branch of a project with branch storage: `branch/77/` paths.
    config.branch_storage = Some(true);
    let outcome = Client::new(config)
        .unwrap()
        .import_table(
            &"in.c-main.t".parse().unwrap(),
            12,
            &ImportOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(posts.load(Ordering::SeqCst), 2);
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert_eq!(outcome.total_rows_count, 3);
    assert_eq!(outcome.job_id, 99);
}

#[tokio::test]
async fn errors_translate_401_and_404_and_hide_the_token() {
    let router = Router::new().fallback(|uri: Uri| async move {
        if uri.path().ends_with("tokens/verify") {
            (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"Invalid access token","code":"storage.tokenInvalid"}"#,
            )
                .into_response()
        } else {
            (
                StatusCode::NOT_FOUND,
                r#"{"error":"The table was not found","code":"storage.tables.notFound"}"#,
            )
                .into_response()
        }
    });
    let base = serve(router).await;
    let c = client(&base, quick_policy(), None);
    let err = c.verify_token().await.unwrap_err();
    assert!(err.is_user());
    assert!(
        err.to_string().contains("token is invalid or expired"),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("test-token-0123456789"));
    assert!(
        c.get_table(&"in.c-x.y".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let err = c
        .export_table(
            &"in.c-x.y".parse().unwrap(),
            &ExportOptions::default(),
            std::path::Path::new("/tmp/never"),
            DownloadMode::Merged,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("table in.c-x.y does not exist"),
        "{err}"
    );
    assert!(err.is_user());
}

const SLICES: [&str; 3] = [
    "\"1\",\"plain\"\n\"2\",\"with \"\"quotes\"\"\"\n",
    "\"3\",\"multi\nline\"\n\"4\",\"unicode žluťoučký kůň 🐎\"\n",
    "\"5\",\"comma, inside\"\n",
];

#[tokio::test]
async fn sliced_gzipped_export_merges_with_one_header_or_keeps_slices() {
    let (fake, base) = fake_stack().await;
    let slices: Vec<&[u8]> = SLICES.iter().map(|s| s.as_bytes()).collect();
    put_sliced_export(&fake, &slices);
    let s3 = fake.s3.lock().unwrap().clone();
    let c = client(&base, quick_policy(), Some(s3));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("t.csv");
    let outcome = c
        .export_table(
            &"in.c-main.t".parse().unwrap(),
            &ExportOptions::default(),
            &dest,
            DownloadMode::Merged,
        )
        .await
        .unwrap();
    let text = std::fs::read_to_string(&dest).unwrap();
    assert_eq!(text, format!("\"id\",\"text\"\n{}", SLICES.concat()));
    assert_eq!(outcome.rows, 5);
    assert_eq!(outcome.columns, vec!["id", "text"]);
    assert!(outcome.sliced);
    assert_eq!((outcome.file_id, outcome.job_id), (700, 5));
    // The records parse back, quotes, newlines and unicode intact.
    let mut reader = csv::Reader::from_path(&dest).unwrap();
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[2][1], "multi\nline");
    assert_eq!(rows[3][1], "unicode žluťoučký kůň 🐎");
    assert_eq!(rows[1][1], "with \"quotes\"");

    let folder = dir.path().join("slices");
    let outcome = c
        .export_table(
            &"in.c-main.t".parse().unwrap(),
            &ExportOptions::default(),
            &folder,
            DownloadMode::Sliced,
        )
        .await
        .unwrap();
    assert_eq!(outcome.rows, 5);
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let contents: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert_eq!(contents, SLICES.to_vec());
}

#[tokio::test]
async fn uploads_gzip_on_the_fly_and_sliced_uploads_write_a_manifest() {
    let (fake, base) = fake_stack().await;
    let s3 = fake.s3.lock().unwrap().clone();
    let c = client(&base, quick_policy(), Some(s3));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.csv");
    let data = format!("\"id\",\"text\"\n{}", SLICES.concat());
    std::fs::write(&file, &data).unwrap();
    let id = c
        .upload_file(&file, &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(id, 800);
    let stored = fake
        .objects
        .lock()
        .unwrap()
        .get("upl/800.csv.gz")
        .cloned()
        .unwrap();
    assert_eq!(&stored[..2], &[0x1f, 0x8b]);
    assert_eq!(gunzip(&stored), data.as_bytes());

    let folder = dir.path().join("sliced.csv");
    std::fs::create_dir(&folder).unwrap();
    for (i, s) in SLICES.iter().enumerate() {
        std::fs::write(folder.join(format!("part{i}.csv")), s).unwrap();
    }
    c.upload_file(&folder, &UploadOptions::default())
        .await
        .unwrap();
    let objects = fake.objects.lock().unwrap().clone();
    let manifest: serde_json::Value =
        serde_json::from_slice(&objects["upl/800.csv.gzmanifest"]).unwrap();
    let urls: Vec<&str> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        vec![
            "s3://kbc-files/upl/800.csv.gzpart0.csv.gz",
            "s3://kbc-files/upl/800.csv.gzpart1.csv.gz",
            "s3://kbc-files/upl/800.csv.gzpart2.csv.gz"
        ]
    );
    for (i, s) in SLICES.iter().enumerate() {
        assert_eq!(
            gunzip(&objects[&format!("upl/800.csv.gzpart{i}.csv.gz")]),
            s.as_bytes()
        );
    }
}

/// A client of the fake stack (Storage API and S3 doubles), with quick retries and an optional run id.
async fn client_on_fake_stack(run_id: Option<&str>) -> (common::Fake, Client) {
    let (fake, base) = fake_stack().await;
    let s3 = fake.s3.lock().unwrap().clone();
    let mut config = ClientConfig::new(&base, "test-token-0123456789");
    config.retry = quick_policy();
    config.endpoints = Endpoints {
        s3: Some(s3),
        gcs: None,
    };
    config.run_id = run_id.map(str::to_owned);
    (fake, Client::new(config).unwrap())
}

/// A single file above the streaming threshold is gzipped while it uploads: one object with a `.gz` name
/// holding exactly the file's bytes, and prepare declares the uncompressed size (the compressed one is not
/// known before the upload starts).
#[tokio::test]
async fn a_big_file_is_gzipped_while_it_uploads() {
    let (fake, c) = client_on_fake_stack(None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.csv");
    // Compressible rows just over the threshold, so the gzipped object still fits one PUT of the double.
    let mut data = b"\"id\",\"text\"\n".to_vec();
    let mut i = 0u64;
    while data.len() as u64 <= STREAM_GZIP_ABOVE {
        data.extend_from_slice(format!("\"{}\",\"{}\"\n", i % 10, "x".repeat(200)).as_bytes());
        i += 1;
    }
    std::fs::write(&file, &data).unwrap();
    c.upload_file(&file, &UploadOptions::default())
        .await
        .unwrap();
    let prepared = fake.prepared.lock().unwrap().clone();
    assert_eq!(prepared[0]["name"], "big.csv.gz");
    assert_eq!(
        prepared[0]["sizeBytes"],
        data.len() as u64,
        "the uncompressed size"
    );
    let objects = fake.objects.lock().unwrap().clone();
    let stored = &objects["upl/800.csv.gz"];
    assert!(
        stored.len() < data.len() / 4,
        "stored gzipped: {} bytes",
        stored.len()
    );
    assert!(gunzip(stored) == data, "the object gunzips to the file");
}

/// Every Storage request names the run (`X-KBC-RunId`, so the API's events link to the job) and the
/// program (`User-Agent`); `files/prepare` declares the size of what is uploaded: the gzipped bytes, for a
/// single file and for the sum of sliced ones, and gzipped files get a `.gz` name.
#[tokio::test]
async fn requests_carry_the_run_id_and_prepare_declares_the_uploaded_size() {
    let (fake, c) = client_on_fake_stack(Some("1234.5678")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.csv");
    let data = format!("\"id\",\"text\"\n{}", SLICES.concat().repeat(50));
    std::fs::write(&file, &data).unwrap();
    c.upload_file(&file, &UploadOptions::default())
        .await
        .unwrap();
    let folder = dir.path().join("sliced");
    std::fs::create_dir(&folder).unwrap();
    for (i, s) in SLICES.iter().enumerate() {
        std::fs::write(folder.join(format!("part{i}.csv")), s.repeat(20)).unwrap();
    }
    c.upload_file(&folder, &UploadOptions::default())
        .await
        .unwrap();

    let objects = fake.objects.lock().unwrap().clone();
    let prepared = fake.prepared.lock().unwrap().clone();
    assert_eq!(prepared[0]["name"], "data.csv.gz");
    assert_eq!(
        prepared[0]["sizeBytes"],
        objects["upl/800.csv.gz"].len() as u64,
        "the single file's gzipped size"
    );
    let sliced: u64 = (0..SLICES.len())
        .map(|i| objects[&format!("upl/800.csv.gzpart{i}.csv.gz")].len() as u64)
        .sum();
    assert_eq!(prepared[1]["name"], "sliced.gz");
    assert_eq!(prepared[1]["sizeBytes"], sliced, "the gzipped slices' sum");

    let headers = fake.headers.lock().unwrap().clone();
    let ua = concat!("kbc-runner/", env!("CARGO_PKG_VERSION"));
    for (request, user_agent, run_id) in &headers {
        if request.contains("/v2/storage/") {
            assert_eq!(run_id.as_deref(), Some("1234.5678"), "{request}");
            assert_eq!(user_agent, ua, "{request}");
        } else {
            // Cloud requests are signed for the object store and carry no Storage headers.
            assert_eq!(run_id, &None, "{request}");
        }
    }
    assert!(headers.iter().any(|(r, ..)| r.contains("files/prepare")));
}
