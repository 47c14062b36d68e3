//! Error values of the emulated Storage API and their wire shape: `{error, code, status:"error", exceptionId}`
//! with the HTTP status Keboola uses for the same condition.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A Storage API error as the real API reports it. `code` is empty for the few errors that carry none
/// (a missing token).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    /// Extra top-level keys (e.g. `results` of a failed sync import); boxed to keep the error small.
    pub(crate) extra: Option<Box<serde_json::Value>>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            extra: None,
        }
    }
    pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub(crate) fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "applicationError",
            message,
        )
    }
    pub(crate) fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("Route {method} {path} is not supported by the emulator"),
        )
    }
    pub(crate) fn table_not_found(table_id: &str) -> Self {
        let (bucket, name) = split_table_id(table_id);
        Self::not_found(
            "storage.tables.notFound",
            format!(
                "The table \"{name}\" was not found in the bucket \"{bucket}\" in the project \"1\""
            ),
        )
    }
    pub(crate) fn bucket_not_found(bucket_id: &str) -> Self {
        Self::not_found(
            "storage.buckets.notFound",
            format!("The bucket \"{bucket_id}\" was not found in the project \"1\""),
        )
    }
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::bad_request("storage.tables.validation", message)
    }
}

impl ApiError {
    /// The answer of a request that ran a job's work itself (the deprecated sync endpoints): the job's
    /// error as a 400 (500 for the emulator's own failures), with its `results`.
    pub(crate) fn from_job(e: JobError) -> Self {
        let mut a = ApiError::bad_request(&e.code, e.message);
        if e.code == "applicationError" {
            a.status = StatusCode::INTERNAL_SERVER_ERROR;
        }
        a.extra = e.results.map(|r| Box::new(json!({"results": r})));
        a
    }
}

/// Splits `in.c-main.t` into (`in.c-main`, `t`); an id without two dots yields an empty bucket.
pub(crate) fn split_table_id(table_id: &str) -> (&str, &str) {
    match table_id.rfind('.') {
        Some(i) if table_id[..i].contains('.') => (&table_id[..i], &table_id[i + 1..]),
        _ => ("", table_id),
    }
}

/// The error for a blocking worker that did not finish: cancelled (the emulator is shutting down, 503) or
/// panicked (a bug, 500).
pub(crate) fn worker_failed(e: tokio::task::JoinError, what: &str) -> ApiError {
    if e.is_cancelled() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "emulator.shuttingDown",
            format!("The {what} was cancelled: the emulator is shutting down."),
        )
    } else {
        ApiError::internal(format!(
            "The {what} failed unexpectedly (a bug in the emulator)."
        ))
    }
}

/// A fresh `exception-<hex>` id, as Keboola's error library emits.
pub(crate) fn exception_id() -> String {
    format!("exception-{}", uuid::Uuid::new_v4().simple())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "error": self.message,
            "code": self.code,
            "status": "error",
            "exceptionId": exception_id(),
        });
        if let (Some(extra), Some(obj)) = (self.extra, body.as_object_mut())
            && let serde_json::Value::Object(extra) = *extra
        {
            for (k, v) in extra {
                obj.insert(k, v);
            }
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// An error of a job: lands in the job's `error` object (and optionally its `results`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct JobError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) results: Option<serde_json::Value>,
}

impl JobError {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            results: None,
        }
    }
}

impl From<ApiError> for JobError {
    fn from(e: ApiError) -> Self {
        Self {
            code: e.code,
            message: e.message,
            results: None,
        }
    }
}

impl From<crate::store::PersistError> for ApiError {
    fn from(e: crate::store::PersistError) -> Self {
        ApiError::internal(format!("cannot persist the emulator store: {e}"))
    }
}

impl From<crate::store::PersistError> for JobError {
    fn from(e: crate::store::PersistError) -> Self {
        e.0.into()
    }
}

impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        Self::new(
            "applicationError",
            format!("emulator storage I/O failed: {e}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_table_ids() {
        assert_eq!(split_table_id("in.c-main.t"), ("in.c-main", "t"));
        assert_eq!(split_table_id("t"), ("", "t"));
        assert_eq!(split_table_id("in.t"), ("", "in.t"));
    }
}
