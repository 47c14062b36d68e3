//! Errors of the Storage API client: one enum whose messages say what failed, where, and what to check,
//! plus [`Error::is_user`], the one place that decides which failures are the user's to fix.
//!
//! Messages never contain the Storage token, presigned URLs or cloud credentials: requests are described by
//! method and API path only, and cloud errors pass through [`scrub`] before they are stored.

use std::path::PathBuf;
use std::time::Duration;

/// Errors of the Storage API client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration or a caller's argument is unusable (bad URL, empty token, bad table id).
    #[error("{0}")]
    Invalid(String),

    /// A table or bucket id that breaks the id rules.
    #[error(transparent)]
    Id(#[from] crate::ids::IdError),

    /// The Storage API answered with an error status (after any retries the policy allowed).
    #[error("{0}")]
    Api(Box<ApiError>),

    /// A request that creates a job failed in a way that does not prove the server did not act on it, so
    /// it was not repeated.
    #[error(
        "{method} {path}: {reason}; the request may have been applied on the server, so it was not repeated: {hint}"
    )]
    MaybeApplied {
        method: String,
        path: String,
        reason: String,
        hint: String,
    },

    /// The Storage API could not be reached or did not answer in time, after retries.
    #[error("{method} {path}: {message} (gave up after {attempts} attempt(s) in {elapsed:.1?})")]
    Transport {
        method: String,
        path: String,
        message: String,
        attempts: u32,
        elapsed: Duration,
    },

    /// A Storage job ended with status `error`.
    #[error("{0}")]
    JobFailed(Box<JobFailure>),

    /// A Storage job did not finish before the wait deadline.
    #[error("{0}")]
    JobTimeout(Box<JobTimeout>),

    /// A response that is not of the documented shape.
    #[error("unexpected response from {what}: {message}")]
    Decode { what: String, message: String },

    /// A failure of the cloud file storage (S3, Azure Blob Storage, Google Cloud Storage).
    #[error("{action} {location}: {message}")]
    Cloud {
        action: &'static str,
        location: String,
        message: String,
    },

    /// A local file could not be read or written.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An error answer of the Storage API. (Boxed in [`Error`] to keep `Result`s small.)
#[derive(Debug, Clone, Default)]
pub struct ApiError {
    pub method: String,
    /// The API path, e.g. `/v2/storage/tables/in.c-main.t`; never the token or a query with secrets.
    pub path: String,
    pub status: u16,
    /// The server's error code, e.g. `storage.tables.notFound`.
    pub code: Option<String>,
    pub message: String,
    pub exception_id: Option<String>,
    /// What the request was about in plain words ("table in.c-main.t"), for 403/404 messages.
    pub subject: Option<String>,
    pub attempts: u32,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&api_message(self))
    }
}

/// A job that ended with status `error`.
#[derive(Debug, Clone, Default)]
pub struct JobFailure {
    pub job_id: u64,
    pub operation: String,
    pub table_id: Option<String>,
    pub code: Option<String>,
    pub message: String,
    pub exception_id: Option<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {} ({}", self.job_id, self.operation)?;
        if let Some(t) = &self.table_id {
            write!(f, " on {t}")?;
        }
        write!(f, ") failed after {:.1?}: {}", self.elapsed, self.message)?;
        let mut tags = Vec::new();
        if let Some(c) = self.code.as_deref().filter(|c| !c.is_empty()) {
            tags.push(c.to_owned());
        }
        if let Some(e) = self.exception_id.as_deref().filter(|c| !c.is_empty()) {
            tags.push(format!("exceptionId {e}"));
        }
        if !tags.is_empty() {
            write!(f, " [{}]", tags.join(", "))?;
        }
        Ok(())
    }
}

/// A job that outlived the wait deadline.
#[derive(Debug, Clone, Default)]
pub struct JobTimeout {
    pub job_id: u64,
    pub operation: String,
    pub table_id: Option<String>,
    /// The last status seen (`waiting` or `processing`).
    pub status: String,
    pub elapsed: Duration,
    pub timeout: Duration,
}

impl std::fmt::Display for JobTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {} ({}", self.job_id, self.operation)?;
        if let Some(t) = &self.table_id {
            write!(f, " on {t}")?;
        }
        write!(
            f,
            ") is still {} after {:.1?}; gave up waiting (job timeout {:?}). It may still finish: check it with \
             GET /v2/storage/jobs/{} before running again",
            self.status, self.elapsed, self.timeout, self.job_id
        )
    }
}

impl Error {
    /// Whether the user can fix this: a rejected token, a missing table, a request the API refused, a job
    /// that failed on the data, a job that outlived its deadline. Server errors after retries, network
    /// failures and local I/O failures are the application's.
    pub fn is_user(&self) -> bool {
        match self {
            Error::Invalid(_) | Error::Id(_) | Error::JobTimeout(_) => true,
            Error::Api(e) => (400..500).contains(&e.status) && !matches!(e.status, 408 | 429),
            Error::JobFailed(e) => job_error_is_user(e.code.as_deref()),
            Error::MaybeApplied { .. }
            | Error::Transport { .. }
            | Error::Decode { .. }
            | Error::Cloud { .. }
            | Error::Io { .. } => false,
        }
    }

    /// Whether the API refused the token (HTTP 401 or 403).
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Api(e) if matches!(e.status, 401 | 403))
    }

    /// Whether the API said the object does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api(e) if e.status == 404)
    }

    /// The server's error code, from an API error or a failed job.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api(e) => e.code.as_deref(),
            Error::JobFailed(e) => e.code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            _ => None,
        }
    }

    /// Names what an API request was about, so 403/404 read as "table in.c-x.y does not exist".
    pub fn with_subject(mut self, what: impl Into<String>) -> Self {
        if let Error::Api(e) = &mut self {
            e.subject = Some(what.into());
        }
        self
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn cloud(
        action: &'static str,
        location: impl Into<String>,
        err: impl std::fmt::Display,
    ) -> Self {
        Error::Cloud {
            action,
            location: location.into(),
            message: scrub(&err.to_string()),
        }
    }
}

/// Job error codes that mean the platform failed rather than the data or the request.
fn job_error_is_user(code: Option<&str>) -> bool {
    match code {
        None => false,
        Some(code) => {
            let code = code.to_ascii_lowercase();
            !(code.is_empty()
                || code.contains("internal")
                || code.contains("applicationerror")
                || code == "error")
        }
    }
}

fn api_message(e: &ApiError) -> String {
    let ApiError {
        method,
        path,
        status,
        code,
        message,
        exception_id,
        subject,
        attempts,
    } = e;
    let (code, exception_id, subject) =
        (code.as_deref(), exception_id.as_deref(), subject.as_deref());
    let details = {
        let mut d = format!("HTTP {status}");
        if let Some(code) = code.filter(|c| !c.is_empty()) {
            d.push_str(&format!(" {code}"));
        }
        if let Some(id) = exception_id.filter(|c| !c.is_empty()) {
            d.push_str(&format!(", exceptionId {id}"));
        }
        if *attempts > 1 {
            d.push_str(&format!(", {attempts} attempts"));
        }
        d
    };
    let server = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    match *status {
        401 => format!(
            "the Storage API token is invalid or expired ({method} {path}, {details}{server})"
        ),
        403 => match subject {
            Some(s) => format!("the Storage API token has no access to {s} ({details}{server})"),
            None => format!(
                "the Storage API token has no access to {method} {path} ({details}{server})"
            ),
        },
        404 => match subject {
            Some(s) => format!("{s} does not exist ({details}{server})"),
            None => format!("not found: {method} {path} ({details}{server})"),
        },
        _ => {
            let mut text = format!("Storage API {method} {path} failed ({details}){server}");
            if *status >= 500
                && let Some(id) = exception_id
            {
                text.push_str(&format!(
                    ". If it keeps failing, report exceptionId {id} to Keboola support"
                ));
            }
            text
        }
    }
}

/// Removes query strings from URLs inside a message: presigned URLs and SAS tokens carry credentials there.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        // Copy up to and including the scheme separator, then the URL until whitespace, cut at '?'.
        out.push_str(&rest[..pos + 3]);
        rest = &rest[pos + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')' || c == '>')
            .unwrap_or(rest.len());
        let url = &rest[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?[redacted]");
            }
            None => out.push_str(url),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, subject: Option<&str>) -> Error {
        Error::Api(Box::new(ApiError {
            method: "GET".into(),
            path: "/v2/storage/tables/in.c-x.y".into(),
            status,
            code: Some("storage.tables.notFound".into()),
            message: "The table was not found".into(),
            exception_id: Some("exception-1".into()),
            subject: subject.map(Into::into),
            attempts: 1,
        }))
    }

    #[test]
    fn plain_words_for_401_403_404() {
        let e = api(401, None);
        assert!(
            e.to_string()
                .starts_with("the Storage API token is invalid or expired"),
            "{e}"
        );
        assert!(e.is_user());
        let e = api(404, Some("table in.c-x.y"));
        assert!(
            e.to_string().starts_with("table in.c-x.y does not exist"),
            "{e}"
        );
        assert!(e.is_not_found() && e.is_user());
        let e = api(403, Some("table in.c-x.y"));
        assert!(
            e.to_string().contains("has no access to table in.c-x.y"),
            "{e}"
        );
    }

    #[test]
    fn server_errors_are_application_errors() {
        let e = api(500, None);
        assert!(!e.is_user());
        assert!(e.to_string().contains("exceptionId exception-1"), "{e}");
        assert!(!api(429, None).is_user());
        assert!(!api(408, None).is_user());
        assert!(api(400, None).is_user());
    }

    #[test]
    fn job_errors_on_data_are_user_errors_and_deadline_too() {
        let failed = |code: Option<&str>| {
            Error::JobFailed(Box::new(JobFailure {
                job_id: 7,
                operation: "tableImport".into(),
                table_id: Some("in.c-main.t".into()),
                code: code.map(Into::into),
                message: "Some columns are missing".into(),
                exception_id: Some("exception-9".into()),
                elapsed: Duration::from_millis(1500),
            }))
        };
        let e = failed(Some("csvImport.columnsNotMatch"));
        assert!(e.is_user());
        let text = e.to_string();
        for part in [
            "job 7",
            "tableImport",
            "in.c-main.t",
            "csvImport.columnsNotMatch",
            "exception-9",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        assert!(!failed(None).is_user());
        assert!(!failed(Some("storage.internalError")).is_user());
        let t = Error::JobTimeout(Box::new(JobTimeout {
            job_id: 8,
            operation: "tableExport".into(),
            table_id: Some("in.c-main.t".into()),
            status: "processing".into(),
            elapsed: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
        }));
        assert!(t.is_user());
        assert!(
            t.to_string().contains("job 8 (tableExport on in.c-main.t)"),
            "{t}"
        );
    }

    #[test]
    fn scrub_cuts_query_strings() {
        let text = "GET https://acc.blob.core.windows.net/c/x?sv=1&sig=SECRET failed; s3://b/k ok";
        let s = scrub(text);
        assert!(!s.contains("SECRET"), "{s}");
        assert!(
            s.contains("https://acc.blob.core.windows.net/c/x?[redacted] failed; s3://b/k ok"),
            "{s}"
        );
    }
}
