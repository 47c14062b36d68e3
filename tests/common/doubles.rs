//! Test doubles: a local HTTP server, and a small Storage API with a path-style S3 double behind its files
//! (what `object_store` sends for whole objects: PUT and GET). For the client's own edge cases, where the
//! emulator would be too well-behaved.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

/// A path-style S3 double: PUT and GET of whole objects (what object_store sends for small files).
#[derive(Default, Clone)]
pub struct Fake {
    pub objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub s3: Arc<Mutex<String>>,
    /// Per request: `METHOD PATH`, its `User-Agent` and its `X-KBC-RunId`.
    pub headers: Arc<Mutex<Vec<SeenHeaders>>>,
    /// The bodies of `files/prepare`.
    pub prepared: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// `METHOD PATH`, `User-Agent`, `X-KBC-RunId` of one request.
pub type SeenHeaders = (String, String, Option<String>);

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    fake.requests
        .lock()
        .unwrap()
        .push(format!("{method} {path}"));
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    fake.headers.lock().unwrap().push((
        format!("{method} {path}"),
        header("user-agent").unwrap_or_default(),
        header("x-kbc-runid"),
    ));
    if let Some(key) = path.strip_prefix("/s3/kbc-files/") {
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .unwrap()
            .into_owned();
        return match method {
            Method::PUT => {
                fake.objects.lock().unwrap().insert(key, body.to_vec());
                let mut h = HeaderMap::new();
                h.insert("ETag", "\"etag\"".parse().unwrap());
                (StatusCode::OK, h).into_response()
            }
            Method::GET | Method::HEAD => match fake.objects.lock().unwrap().get(&key) {
                Some(data) => {
                    let mut h = HeaderMap::new();
                    h.insert("ETag", "\"etag\"".parse().unwrap());
                    h.insert(
                        "Last-Modified",
                        "Wed, 25 Nov 2026 10:00:00 GMT".parse().unwrap(),
                    );
                    h.insert("Content-Length", data.len().to_string().parse().unwrap());
                    (StatusCode::OK, h, data.clone()).into_response()
                }
                None => (
                    StatusCode::NOT_FOUND,
                    "<Error><Code>NoSuchKey</Code></Error>",
                )
                    .into_response(),
            },
            _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        };
    }
    let aws = |id: u64, key: &str, sliced: bool| {
        serde_json::json!({
            "id": id, "name": "x.csv", "isSliced": sliced, "provider": "aws", "region": "us-east-1", "sizeBytes": 100,
            "s3Path": {"bucket": "kbc-files", "key": key},
            "credentials": {"AccessKeyId": "AKIDFAKE", "SecretAccessKey": "SECRETFAKE", "SessionToken": "SESSIONFAKE"},
            "uploadParams": {"bucket": "kbc-files", "key": key, "acl": "private",
                "credentials": {"AccessKeyId": "AKIDFAKE", "SecretAccessKey": "SECRETFAKE", "SessionToken": "SESSIONFAKE"}}
        })
    };
    let json = |status: StatusCode, v: serde_json::Value| (status, v.to_string()).into_response();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/v2/storage/tables/in.c-main.t") => json(
            StatusCode::OK,
            serde_json::json!({"id":"in.c-main.t","name":"t","columns":["id","text"],"primaryKey":["id"],
                "bucket":{"id":"in.c-main"}}),
        ),
        (Method::POST, "/v2/storage/tables/in.c-main.t/export-async") => {
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["gzip"], true);
            json(
                StatusCode::ACCEPTED,
                serde_json::json!({"id": 5, "status": "waiting", "operationName": "tableExport"}),
            )
        }
        (Method::GET, "/v2/storage/jobs/5") => json(
            StatusCode::OK,
            serde_json::json!({"id":5,"status":"success","operationName":"tableExport","tableId":"in.c-main.t",
                "results":{"file":{"id":700},"cacheHit":false}}),
        ),
        (Method::GET, "/v2/storage/files/700") => {
            assert_eq!(uri.query(), Some("federationToken=1"));
            json(StatusCode::OK, aws(700, "exp/700.csv", true))
        }
        (Method::POST, "/v2/storage/files/prepare") => {
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            fake.prepared.lock().unwrap().push(body.clone());
            let sliced = body["isSliced"] == true;
            assert_eq!(body["federationToken"], true);
            json(StatusCode::CREATED, aws(800, "upl/800.csv.gz", sliced))
        }
        _ => (StatusCode::NOT_FOUND, format!("no route {method} {path}")).into_response(),
    }
}

pub async fn fake_stack() -> (Fake, String) {
    let fake = Fake::default();
    let router = Router::new().fallback(handle).with_state(fake.clone());
    let base = serve(router).await;
    *fake.s3.lock().unwrap() = format!("{base}/s3");
    (fake, base)
}

/// Stores gzipped slices and their manifest as the export file 700 of table `in.c-main.t`.
pub fn put_sliced_export(fake: &Fake, slices: &[&[u8]]) {
    let mut objects = fake.objects.lock().unwrap();
    let mut entries = Vec::new();
    for (i, s) in slices.iter().enumerate() {
        let key = format!("exp/700.csv{i:04}_part_00.gz");
        objects.insert(key.clone(), gzip(s));
        entries.push(serde_json::json!({"url": format!("s3://kbc-files/{key}")}));
    }
    objects.insert(
        "exp/700.csvmanifest".into(),
        serde_json::json!({ "entries": entries })
            .to_string()
            .into_bytes(),
    );
}
