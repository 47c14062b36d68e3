//! The HTTP front: one handler for every request that logs it (method, path, status, ms; never a token),
//! applies fault rules, and routes: a virtual-hosted S3 request (`Host: <bucket>.s3.<region>.amazonaws.com`
//! or `<bucket>.<emulator host>`) to the file storage; otherwise by path prefix, `/v2/storage` to the
//! Storage API, `/api/v1` to the Query Service, `/_emulator` to the control API, everything else to the file
//! storage (path-style). Fault rules apply to all of them but the control API.

use super::app::App;
use super::faults::{FaultRule, RequestFault};
use super::store::JobRecord;
use super::{api, s3};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn router(app: Arc<App>) -> axum::Router {
    // Multipart bodies (deprecated sync uploads) may be large; S3 bodies are streamed and not limited here.
    axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(512 << 20))
        .with_state(app)
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let bucket = request_host(&req).and_then(|h| virtual_bucket(&app.hosts, &h));
    // Faults and the log see a virtual-hosted request as its path-style twin, `/{bucket}/{key}`.
    let path = match &bucket {
        Some(b) => format!("/{b}{}", req.uri().path()),
        None => req.uri().path().to_owned(),
    };
    let kind = if bucket.is_some() {
        Kind::S3
    } else {
        Kind::of(&path)
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let fault = if kind == Kind::Control {
        None
    } else {
        app.faults
            .take_request_fault(method.as_str(), &path, &query)
    };
    let response = serve(&app, req, kind, bucket, fault).await;
    let ms = started.elapsed().as_millis();
    if app.log_requests {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{} {} {} {}ms",
            method,
            path,
            response.status().as_u16(),
            ms
        );
        let _ = out.flush();
    } else {
        tracing::debug!(
            "emulator: {} {} {} {}ms",
            method,
            path,
            response.status().as_u16(),
            ms
        );
    }
    response
}

/// The emulator's own host names for `base_url`: its host, and `localhost` (which resolvers map, with any
/// subdomain, to loopback).
pub(crate) fn own_hosts(base_url: &str) -> Vec<String> {
    let mut hosts = vec!["localhost".to_owned()];
    if let Some(host) = url::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        && !hosts.contains(&host)
    {
        hosts.push(host);
    }
    hosts
}

/// The request's host without the port: the URI's authority (HTTP/2, absolute-form) or the `Host` header.
fn request_host(req: &Request) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => req
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<axum::http::uri::Authority>()
            .ok()?,
    };
    Some(authority.host().to_ascii_lowercase())
}

/// The bucket a virtual-hosted S3 request addresses: `<bucket>.s3.amazonaws.com`,
/// `<bucket>.s3.<region>.amazonaws.com`, `<bucket>.s3-<region>.amazonaws.com`, or `<bucket>.<own host>`.
/// None for path-style requests (`s3.<region>.amazonaws.com`, the emulator's own host, an IP address).
pub(crate) fn virtual_bucket(own_hosts: &[String], host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    if let Some(rest) = host.strip_suffix(".amazonaws.com") {
        // BucketRecord names may contain dots: the bucket is everything before the `s3` label.
        let labels: Vec<&str> = rest.split('.').collect();
        let at = labels
            .iter()
            .position(|l| *l == "s3" || l.starts_with("s3-"))?;
        return (at > 0).then(|| labels[..at].join("."));
    }
    own_hosts.iter().find_map(|own| {
        host.strip_suffix(own.as_str())
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Storage,
    Query,
    Control,
    S3,
}

impl Kind {
    fn of(path: &str) -> Kind {
        let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
        if under("/v2/storage") {
            Kind::Storage
        } else if under("/api/v1") {
            Kind::Query
        } else if under("/_emulator") {
            Kind::Control
        } else {
            Kind::S3
        }
    }
}

async fn serve(
    app: &Arc<App>,
    req: Request,
    kind: Kind,
    bucket: Option<String>,
    fault: Option<RequestFault>,
) -> Response {
    let fault = fault.unwrap_or_default();
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let (Some(status), false) = (fault.status, fault.after_apply) {
        return fault_response(kind, status, &fault);
    }
    let mut response = match kind {
        Kind::Storage => api::dispatch(app, req)
            .await
            .unwrap_or_else(|e| e.into_response()),
        Kind::Query => super::query::dispatch(app, req).await,
        Kind::Control => control(app, req)
            .await
            .unwrap_or_else(|e| e.into_response()),
        Kind::S3 => s3::dispatch(app, req, bucket).await,
    };
    if let (Some(status), true) = (fault.status, fault.after_apply) {
        // Finish what the request started (including its job), then report a failure anyway.
        let bytes = axum::body::to_bytes(std::mem::take(response.body_mut()), 64 << 20)
            .await
            .unwrap_or_default();
        if let Ok(job) = serde_json::from_slice::<JobRecord>(&bytes) {
            super::jobs::wait(app, job.id).await;
        }
        return fault_response(kind, status, &fault);
    }
    if let Some(limit) = fault.cut_after_bytes {
        response = cut_body(response, limit);
    }
    response
}

fn fault_response(kind: Kind, status: u16, fault: &RequestFault) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = fault
        .message
        .clone()
        .unwrap_or_else(|| format!("Injected fault: HTTP {}", status.as_u16()));
    let mut response = if kind == Kind::S3 {
        let code = fault.code.clone().unwrap_or_else(|| match status.as_u16() {
            503 => "SlowDown".into(),
            403 => "AccessDenied".into(),
            _ => "InternalError".into(),
        });
        s3::error_response(status, &code, &message)
    } else if kind == Kind::Query {
        let code = fault
            .code
            .clone()
            .unwrap_or_else(|| "emulator.injectedFault".into());
        super::query::error_response(status, &code, &message)
    } else if status == StatusCode::SERVICE_UNAVAILABLE && fault.code.is_none() {
        // Keboola's maintenance answer.
        (status, axum::Json(serde_json::json!({"status": "maintenance", "reason": message, "estimatedEndTime": null}))).into_response()
    } else {
        let code = fault
            .code
            .clone()
            .unwrap_or_else(|| "emulator.injectedFault".into());
        super::error::ApiError::new(status, &code, message).into_response()
    };
    if let Some(secs) = fault.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// Sends at most `limit` bytes of the body, then fails the stream so the connection is reset mid-body (a body
/// no longer than `limit` is sent whole).
fn cut_body(response: Response, limit: u64) -> Response {
    let (parts, body) = response.into_parts();
    let cut = || std::io::Error::other("injected fault: connection cut");
    // Phase 0: passing bytes through; 1: a chunk was cut short, fail next; 2: finished.
    let stream = futures::stream::unfold(
        (body.into_data_stream(), 0u64, 0u8),
        move |(mut inner, sent, phase)| async move {
            match phase {
                2 => return None,
                1 => {
                    // Let the partial bytes (and the headers) reach the client before the reset.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    return Some((Err(cut()), (inner, sent, 2)));
                }
                _ => {}
            }
            match inner.next().await {
                None => None,
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (inner, sent, 2))),
                Some(Ok(_)) if sent >= limit => Some((Ok(Bytes::new()), (inner, sent, 1))),
                Some(Ok(chunk)) => {
                    let room = (limit - sent) as usize;
                    if chunk.len() > room {
                        Some((
                            Ok::<Bytes, std::io::Error>(chunk.slice(..room)),
                            (inner, limit, 1),
                        ))
                    } else {
                        let n = chunk.len() as u64;
                        Some((Ok(chunk), (inner, sent + n, 0)))
                    }
                }
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The control API (see the crate README).
async fn control(app: &Arc<App>, req: Request) -> Result<Response, super::error::ApiError> {
    use super::error::ApiError;
    app.authenticate(req.headers())?;
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = super::body::Params(super::body::parse_query(req.uri().query()));
    let rest = path.strip_prefix("/_emulator").unwrap_or("");
    let segs = super::body::path_segments(rest);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["health"]) => {
            Ok(axum::Json(serde_json::json!({"status": "ok"})).into_response())
        }
        (Method::GET, ["faults"]) => Ok(axum::Json(app.faults.list()).into_response()),
        (Method::GET, ["stats"]) => {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &app.stats;
            Ok(axum::Json(serde_json::json!({
                "fileTransfers": {
                    "uploads": s.uploads.load(Relaxed),
                    "downloads": s.downloads.load(Relaxed),
                    "bytesUp": s.bytes_up.load(Relaxed),
                    "bytesDown": s.bytes_down.load(Relaxed),
                },
                "workspaces": app.store.read().workspaces.len(),
                "queryJobs": app.query_jobs.count(),
            }))
            .into_response())
        }
        (Method::POST, ["credentials", "expire"]) => {
            let n = app.expire_credentials()?;
            Ok(axum::Json(serde_json::json!({"expired": n})).into_response())
        }
        (Method::DELETE, ["faults"]) => {
            app.faults.clear();
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::POST, ["faults"]) => {
            let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .map_err(|e| {
                    ApiError::bad_request("validation.failed", format!("cannot read the body: {e}"))
                })?;
            let rules: Vec<FaultRule> = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Array(items)) => items
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        ApiError::bad_request(
                            "validation.failed",
                            format!("invalid fault rule: {e}"),
                        )
                    })?,
                Ok(v) => vec![serde_json::from_value(v).map_err(|e| {
                    ApiError::bad_request("validation.failed", format!("invalid fault rule: {e}"))
                })?],
                Err(e) => {
                    return Err(ApiError::bad_request(
                        "validation.failed",
                        format!("invalid JSON: {e}"),
                    ));
                }
            };
            for rule in rules {
                app.faults
                    .add(rule)
                    .map_err(|e| ApiError::bad_request("validation.failed", e.to_string()))?;
            }
            Ok((StatusCode::CREATED, axum::Json(app.faults.list())).into_response())
        }
        (Method::POST | Method::PUT, ["tables", table_id]) => {
            let table_id = table_id.to_string();
            let pk = query.list("primaryKey");
            let tmp = app.store.tmp_path("seed");
            s3::body_to_file(req.into_body(), &tmp, false)
                .await
                .map_err(|e| ApiError::internal(format!("cannot store the seed CSV: {e}")))?;
            let result = api::seed_table(app, &table_id, tmp.clone(), &pk).await;
            let _ = std::fs::remove_file(&tmp);
            result?;
            Ok(
                axum::Json(serde_json::json!({"status": "ok", "tableId": table_id}))
                    .into_response(),
            )
        }
        (Method::GET, ["tables", table_id]) => match api::dump_table(app, table_id).await? {
            Some(csv) => {
                Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
            }
            None => Err(ApiError::table_not_found(table_id)),
        },
        (m, _) => Err(ApiError::route_not_found(m.as_str(), &path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_buckets_are_read_from_the_host() {
        let own = own_hosts("https://storage.example.test:8443");
        assert_eq!(own, ["localhost", "storage.example.test"]);
        let bucket = |h: &str| virtual_bucket(&own, h);
        assert_eq!(
            bucket("kbc-sapi-files.s3.us-east-1.amazonaws.com").as_deref(),
            Some("kbc-sapi-files")
        );
        assert_eq!(
            bucket("my.dotted.bucket.s3.amazonaws.com").as_deref(),
            Some("my.dotted.bucket")
        );
        assert_eq!(bucket("b.s3-eu-west-1.amazonaws.com").as_deref(), Some("b"));
        assert_eq!(
            bucket("b.s3.dualstack.eu-west-1.amazonaws.com").as_deref(),
            Some("b")
        );
        assert_eq!(bucket("b.storage.example.test").as_deref(), Some("b"));
        assert_eq!(
            bucket("kbc-sapi-files.localhost").as_deref(),
            Some("kbc-sapi-files")
        );
        // Path-style hosts.
        for host in [
            "s3.amazonaws.com",
            "s3.us-east-1.amazonaws.com",
            "storage.example.test",
            "localhost",
            "127.0.0.1",
            "connection.keboola.com",
        ] {
            assert_eq!(bucket(host), None, "{host}");
        }
    }
}
