//! The jobs resource: `jobs` (newest first, `limit`/`offset`) and `jobs/{id}`, the records the job runner
//! (`crate::jobs`) keeps.

use super::{ApiResult, Call, ok};
use crate::error::ApiError;
use crate::store::JobRecord;
use axum::http::Method;
use serde_json::Value;

/// The `jobs/…` routes.
pub(super) fn route(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    Some(match (&call.method, rest) {
        (&Method::GET, []) => list_jobs(call),
        (&Method::GET, [id]) => get_job(call, id),
        _ => return None,
    })
}

fn list_jobs(call: &Call<'_>) -> ApiResult {
    let limit = call.params.int("limit")?.unwrap_or(100).clamp(0, 1000) as usize;
    let offset = call.params.int("offset")?.unwrap_or(0).max(0) as usize;
    let meta = call.app.store.read();
    ok(Value::Array(
        meta.jobs
            .values()
            .rev()
            .skip(offset)
            .take(limit)
            .map(JobRecord::to_json)
            .collect(),
    ))
}

fn get_job(call: &Call<'_>, id: &str) -> ApiResult {
    let job = id
        .parse::<u64>()
        .ok()
        .and_then(|id| crate::jobs::get(call.app, id));
    match job {
        Some(j) => ok(j.to_json()),
        None => Err(ApiError::not_found(
            "storage.jobs.notFound",
            format!("Job \"{id}\" not found"),
        )),
    }
}
