//! HTTP transport to the Storage API: URL building (branch-aware), authentication, timeouts, and the
//! retry loop driven by [`RetryPolicy`]. Endpoints above this layer describe a request as a [`Call`] and
//! get back a success response or a typed [`Error`].

use super::error::{ApiError, Error};
use super::retry::{Decision, Failure, Idempotency, RetryPolicy, parse_retry_after};
use super::secret::Secret;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// One API request, before it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    /// Path under `/v2/storage/`, e.g. `tables/in.c-main.t/export-async`.
    pub path: String,
    /// Whether the path gets the `branch/{id}/` prefix when a branch is set (jobs never do).
    pub branch_scoped: bool,
    pub query: Vec<(String, String)>,
    pub json: Option<serde_json::Value>,
    pub idempotency: Idempotency,
    /// What to check when a job-creating request may have been applied.
    pub maybe_applied_hint: Option<String>,
    /// Another Keboola service on the same token (the Query Service): its base URL. The path is then
    /// under `/api/v1/` there, never branch-scoped.
    pub service: Option<std::sync::Arc<str>>,
}

impl Call {
    pub(crate) fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path, Idempotency::Idempotent)
    }

    pub(crate) fn new(method: Method, path: impl Into<String>, idempotency: Idempotency) -> Self {
        Call {
            method,
            path: path.into(),
            branch_scoped: true,
            query: Vec::new(),
            json: None,
            idempotency,
            maybe_applied_hint: None,
            service: None,
        }
    }

    /// Sends the call to another service's `/api/v1/` (see [`Call::service`]).
    pub(crate) fn on_service(mut self, root: std::sync::Arc<str>) -> Self {
        self.service = Some(root);
        self.branch_scoped = false;
        self
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub(crate) fn json(mut self, body: serde_json::Value) -> Self {
        self.json = Some(body);
        self
    }

    pub(crate) fn global(mut self) -> Self {
        self.branch_scoped = false;
        self
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.maybe_applied_hint = Some(hint.into());
        self
    }
}

/// The transport settings.
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub url: String,
    pub token: Secret,
    pub branch: Option<String>,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// `X-KBC-RunId`, sent on every request so the API's events and jobs are linked to the run.
    pub run_id: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    /// `https://connection.keboola.com`, without a trailing slash.
    root: String,
    /// The token as a header value marked sensitive, so HTTP-layer debug output never shows it.
    token: reqwest::header::HeaderValue,
    /// The branch id the client was given.
    branch: Option<String>,
    /// The branch in the path of branch-scoped calls, once the client has found out the branch mode
    /// (only a development branch with branch storage has one).
    path_branch: std::sync::OnceLock<Option<String>>,
    policy: RetryPolicy,
    run_id: Option<reqwest::header::HeaderValue>,
}

/// The error body the Storage API sends.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default, deserialize_with = "super::types::de_opt_string")]
    error: Option<String>,
    #[serde(default, deserialize_with = "super::types::de_opt_string")]
    message: Option<String>,
    #[serde(default, deserialize_with = "super::types::de_opt_string")]
    code: Option<String>,
    #[serde(default, deserialize_with = "super::types::de_opt_string")]
    exception_id: Option<String>,
    #[serde(default, deserialize_with = "super::types::de_opt_string")]
    reason: Option<String>,
    /// The Query Service's message (its `error` is the HTTP status).
    #[serde(default, deserialize_with = "super::types::de_opt_string")]
    exception: Option<String>,
    /// `"maintenance"` in Keboola's maintenance answer (`"error"` in ordinary error bodies).
    #[serde(default, deserialize_with = "super::types::de_opt_string")]
    status: Option<String>,
}

impl Transport {
    pub(crate) fn new(config: TransportConfig) -> Result<Self, Error> {
        let root = normalize_url(&config.url)?;
        if config.token.is_empty() {
            return Err(Error::Invalid("the Storage API token is empty".into()));
        }
        let mut token =
            reqwest::header::HeaderValue::from_str(config.token.expose()).map_err(|_| {
                Error::Invalid(
                    "the Storage API token contains characters that cannot be sent in an HTTP header"
                        .into(),
                )
            })?;
        token.set_sensitive(true);
        if let Some(b) = &config.branch
            && (b.is_empty()
                || !b
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(Error::Invalid(format!(
                "branch id {b:?} is not valid (expected a number)"
            )));
        }
        // A run id that cannot be a header value is dropped rather than failing the run: it only links events.
        let run_id = config
            .run_id
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .and_then(|r| reqwest::header::HeaderValue::from_str(r).ok());
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .gzip(true)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Transport {
            http,
            root,
            token,
            path_branch: if config.branch.is_none() {
                std::sync::OnceLock::from(None)
            } else {
                std::sync::OnceLock::new()
            },
            branch: config.branch,
            policy: config.retry,
            run_id,
        })
    }

    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn branch(&self) -> Option<&str> {
        self.branch.as_deref()
    }

    /// Sets the branch of branch-scoped paths, once the branch mode is known.
    pub(crate) fn set_path_branch(&self, branch: Option<String>) {
        let _ = self.path_branch.set(branch);
    }

    /// The path as shown in messages and built into URLs: `/v2/storage/[branch/{id}/]path`.
    pub(crate) fn api_path(&self, call: &Call) -> String {
        if call.service.is_some() {
            return format!("/api/v1/{}", call.path);
        }
        match (self.path_branch.get(), call.branch_scoped) {
            (Some(Some(branch)), true) => format!("/v2/storage/branch/{branch}/{}", call.path),
            _ => format!("/v2/storage/{}", call.path),
        }
    }

    /// Sends a call, retrying as the policy allows; returns the first success response (body unread).
    pub(crate) async fn send(&self, call: &Call) -> Result<reqwest::Response, Error> {
        self.exchange(call, |resp| async move { Ok(resp) }).await
    }

    /// Sends a call and reads the whole answer, retrying as the policy allows. The body is read inside
    /// the retry loop: a connection reset mid-body is an interrupted exchange like any other, retried for
    /// idempotent calls and reported as "may have been applied" for job-creating ones (found by
    /// `tests/faults.rs`: `import/reset-mid-job-poll`, `import/reset-after-import-queued`).
    async fn send_read(&self, call: &Call) -> Result<bytes::Bytes, Error> {
        self.exchange(call, |resp| resp.bytes()).await
    }

    /// The retry loop: sends the call, and hands a success response to `finish` (which may read its body);
    /// a failure of either is judged by the retry policy.
    async fn exchange<T, F, Fut>(&self, call: &Call, finish: F) -> Result<T, Error>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = Result<T, reqwest::Error>>,
    {
        if call.branch_scoped && self.path_branch.get().is_none() {
            // Guessing here could write to production from a branch run.
            return Err(Error::Invalid(format!(
                "internal error: {} {} was sent before the branch mode was known",
                call.method, call.path
            )));
        }
        let path = self.api_path(call);
        let root = call.service.as_deref().unwrap_or(&self.root);
        let url = format!("{root}{}", encode_path(&path));
        let start = Instant::now();
        let mut retries = 0u32;
        loop {
            let mut req = self
                .http
                .request(call.method.clone(), &url)
                .header("X-StorageApi-Token", self.token.clone())
                .header(reqwest::header::ACCEPT_ENCODING, "gzip");
            if let Some(run_id) = &self.run_id {
                req = req.header("X-KBC-RunId", run_id.clone());
            }
            if !call.query.is_empty() {
                req = req.query(&call.query);
            }
            if let Some(body) = &call.json {
                req = req.json(body);
            }
            let (failure, error) = match req.send().await {
                Ok(resp) if resp.status().is_success() => match finish(resp).await {
                    Ok(value) => return Ok(value),
                    Err(e) => (
                        Failure::Interrupted,
                        Error::Transport {
                            method: call.method.to_string(),
                            path: path.clone(),
                            message: format!("reading the response: {}", describe_reqwest(&e)),
                            attempts: retries + 1,
                            elapsed: start.elapsed(),
                        },
                    ),
                },
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                    let body = read_error_body(resp).await;
                    let failure = if status == StatusCode::SERVICE_UNAVAILABLE
                        && body.status.as_deref() == Some("maintenance")
                    {
                        Failure::Maintenance { retry_after }
                    } else {
                        Failure::Status {
                            status: status.as_u16(),
                            retry_after,
                        }
                    };
                    (failure, api_error(call, &path, status, body, retries + 1))
                }
                Err(e) => {
                    let failure = if e.is_connect() {
                        Failure::Connect
                    } else {
                        Failure::Interrupted
                    };
                    let message = describe_reqwest(&e);
                    let error = Error::Transport {
                        method: call.method.to_string(),
                        path: path.clone(),
                        message,
                        attempts: retries + 1,
                        elapsed: start.elapsed(),
                    };
                    (failure, error)
                }
            };
            match self
                .policy
                .decide(retries, start.elapsed(), call.idempotency, &failure)
            {
                Decision::Retry(delay) => {
                    match &failure {
                        Failure::Maintenance { .. }
                        | Failure::Status {
                            retry_after: Some(_),
                            ..
                        } => tracing::warn!(
                            "{} {path}: {}; waiting {delay:.0?}, then trying again (the run waits at most \
                             {:.0?} in all)",
                            call.method,
                            short_reason(&failure),
                            self.policy.wait_deadline
                        ),
                        _ => tracing::warn!(
                            "{} {path}: {}; retrying in {delay:.1?} (retry {} of {})",
                            call.method,
                            short_reason(&failure),
                            retries + 1,
                            self.policy.max_retries
                        ),
                    }
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                Decision::GiveUp => return Err(error),
                Decision::MaybeApplied => return Err(maybe_applied(call, path, &error)),
            }
        }
    }

    /// Sends a call and parses the JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, Error> {
        let bytes = self.send_read(call).await?;
        let what = format!("{} {}", call.method, self.api_path(call));
        decode(&what, &bytes)
    }

    /// Like [`Transport::json`], but a 404 is `None`.
    pub(crate) async fn json_opt<T: DeserializeOwned>(
        &self,
        call: &Call,
    ) -> Result<Option<T>, Error> {
        match self.json(call).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a call and returns the body as text.
    pub(crate) async fn text(&self, call: &Call) -> Result<String, Error> {
        let bytes = self.send_read(call).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A plain GET of a presigned URL (no token), streamed; used when a file has no cloud credentials.
    pub(crate) async fn get_presigned(&self, url: &Secret) -> Result<reqwest::Response, Error> {
        let resp = self
            .http
            .get(url.expose())
            .send()
            .await
            .map_err(|e| Error::Transport {
                method: "GET".into(),
                path: "a presigned file URL".into(),
                message: describe_reqwest(&e),
                attempts: 1,
                elapsed: Duration::ZERO,
            })?;
        if !resp.status().is_success() {
            return Err(Error::Cloud {
                action: "downloading",
                location: "a presigned file URL".into(),
                message: format!("HTTP {}", resp.status()),
            });
        }
        Ok(resp)
    }
}

/// The `User-Agent` of every request: names the program and its version, as Keboola's clients do.
pub const USER_AGENT: &str = concat!("kbc-runner/", env!("CARGO_PKG_VERSION"));

/// The error for a job-creating request whose outcome is unknown.
fn maybe_applied(call: &Call, path: String, error: &Error) -> Error {
    Error::MaybeApplied {
        method: call.method.to_string(),
        path,
        reason: error.to_string(),
        hint: call.maybe_applied_hint.clone().unwrap_or_else(|| {
            "check the project's Storage jobs (GET /v2/storage/jobs) before running again".into()
        }),
    }
}

/// Parses JSON, naming the key path where the shape differs from what we expect.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Decode {
        what: what.to_owned(),
        message: format!("at {}: {}", e.path(), e.inner()),
    })
}

/// A bare host gets `https://`; a trailing slash or a `/v2/storage` suffix is dropped.
pub fn normalize_url(url: &str) -> Result<String, Error> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Error::Invalid("the Storage API URL is empty".into()));
    }
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let parsed = url::Url::parse(&with_scheme)
        .map_err(|e| Error::Invalid(format!("the Storage API URL {url:?} is not valid: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::Invalid(format!(
            "the Storage API URL {url:?} is not an http(s) URL with a host"
        )));
    }
    let mut root = with_scheme.trim_end_matches('/').to_owned();
    for suffix in ["/v2/storage", "/v2"] {
        if let Some(stripped) = root.strip_suffix(suffix) {
            root = stripped.to_owned();
        }
    }
    Ok(root)
}

/// Percent-encodes each path segment (table ids are safe, but column names in paths may not be).
fn encode_path(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    path.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

async fn read_error_body(resp: reqwest::Response) -> ErrorBody {
    // Error bodies are small; a huge one (an HTML error page) is cut, not parsed.
    let text = match resp.bytes().await {
        Ok(b) => b,
        Err(_) => return ErrorBody::default(),
    };
    let slice = &text[..text.len().min(64 * 1024)];
    match serde_json::from_slice::<ErrorBody>(slice) {
        Ok(body) => body,
        Err(_) => {
            let plain = String::from_utf8_lossy(slice);
            let plain: String = plain.chars().take(300).collect();
            ErrorBody {
                error: Some(plain.trim().to_owned()).filter(|s| !s.is_empty()),
                ..Default::default()
            }
        }
    }
}

fn api_error(call: &Call, path: &str, status: StatusCode, body: ErrorBody, attempts: u32) -> Error {
    let message = if call.service.is_some() {
        body.exception.or(body.message)
    } else {
        body.error.or(body.message)
    };
    let message = message.or(body.reason).unwrap_or_default();
    Error::Api(Box::new(ApiError {
        method: call.method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        code: body.code,
        message: super::error::scrub(&message),
        exception_id: body.exception_id,
        subject: None,
        attempts,
    }))
}

/// The error and its causes, without the URL (which may carry a presigned query).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut parts = vec![if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    }];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = super::error::scrub(&s.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn short_reason(f: &Failure) -> String {
    match f {
        Failure::Status { status, .. } => format!("HTTP {status}"),
        Failure::Connect => "could not connect".into(),
        Failure::Interrupted => "no complete answer (timeout or reset)".into(),
        Failure::Maintenance { .. } => "HTTP 503 (Storage maintenance)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(
            normalize_url("connection.keboola.com").unwrap(),
            "https://connection.keboola.com"
        );
        assert_eq!(
            normalize_url("https://connection.keboola.com/v2/storage/").unwrap(),
            "https://connection.keboola.com"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(normalize_url("").is_err());
        assert!(normalize_url("ftp://x").is_err());
    }

    #[test]
    fn paths_are_branch_aware_except_jobs() {
        let t = Transport::new(TransportConfig {
            url: "https://c.keboola.com".into(),
            token: Secret::new("tok-0123456789-secret"),
            branch: Some("123".into()),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            run_id: None,
        })
        .unwrap();
        assert_eq!(
            t.api_path(&Call::get("tables/in.c-a.b")),
            "/v2/storage/tables/in.c-a.b",
            "no branch path before the branch mode is known"
        );
        t.set_path_branch(Some("123".into()));
        assert_eq!(
            t.api_path(&Call::get("tables/in.c-a.b")),
            "/v2/storage/branch/123/tables/in.c-a.b"
        );
        assert_eq!(
            t.api_path(&Call::get("jobs/5").global()),
            "/v2/storage/jobs/5"
        );
        assert_eq!(
            encode_path("/v2/storage/tables/in.c-a.b/columns/a b"),
            "/v2/storage/tables/in.c-a.b/columns/a%20b"
        );
        assert!(!format!("{t:?}").contains("0123456789-secret"));
        let bad = TransportConfig {
            url: "https://c.keboola.com".into(),
            token: Secret::new("line\nbreak"),
            branch: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            run_id: None,
        };
        assert!(Transport::new(bad).unwrap_err().is_user());
    }
}
