//! The Storage API (`/v2/storage/...`, also under `branch/{id|default}/`): this module reads the request
//! (branch scope, token, parameters from query + JSON/form/multipart body) and hands it by its first path
//! segment to one router per resource: `index` (index, `tokens`), `branches` (`dev-branches`), `buckets`,
//! `tables`, `files`, `jobs` and `workspaces` (also `components/{c}/configs/{cfg}/workspaces`). The routers' handlers live beside them, and in `loads` (create and import)
//! and `export` (export and preview), which `buckets` and `tables` route to. Validation that the real API
//! does synchronously answers 4xx; the work itself runs as a job.

use crate::app::App;
use crate::body::{Params, from_pairs, parse_body, parse_query, path_segments};
use crate::error::ApiError;
use crate::store::JobRecord;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use branches::{MARK, mark_ids, strip_branch_prefix, unmark};
use serde_json::Value;
use std::sync::Arc;

/// The numeric id of the (only) default branch.
const DEFAULT_BRANCH_ID: u64 = 1;
/// Largest request body read into memory (deprecated sync uploads carry CSV in the body).
const MAX_BODY: usize = 512 << 20;

mod branches;
mod buckets;
mod export;
mod files;
mod index;
mod jobs;
mod loads;
mod tables;
mod workspaces;

pub(crate) use branches::{branch_exists, storage_scope};
pub(crate) use export::dump_table;
pub(crate) use loads::seed_table;
pub(crate) use workspaces::{storage_tables, workspace_for_query};

type ApiResult = Result<Response, ApiError>;

/// An authenticated Storage API request, as every resource router gets it.
struct Call<'a> {
    app: &'a Arc<App>,
    method: Method,
    /// Query parameters merged with the body.
    params: Params,
    /// The development branch with its own storage that the request works in (None: production).
    branch: Option<u64>,
    /// The numeric id of the branch the request addresses (1: the default branch).
    branch_id: u64,
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn ok(v: Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, v))
}

/// The 202 answer of an async endpoint: the job it started.
fn accepted(job: &JobRecord) -> ApiResult {
    Ok(json_response(StatusCode::ACCEPTED, job.to_json()))
}

/// The real API is PHP, whose empty associative array encodes as `[]`: maps keyed by name
/// (`columnMetadata`, `columnsMetadata`, `bucketPermissions`) are `[]` when empty, an object otherwise.
fn php_map(v: Value) -> Value {
    match v {
        Value::Object(m) if m.is_empty() => Value::Array(Vec::new()),
        v => v,
    }
}

/// Routes one Storage API request. JSON answers never show the internal ids of branch storage.
pub(crate) async fn dispatch(app: &Arc<App>, req: Request) -> ApiResult {
    let response = dispatch_scoped(app, req)
        .await
        .unwrap_or_else(|e| e.into_response());
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    if !is_json {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the answer: {e}")))?;
    // Almost every answer has no marker: send its bytes as they are.
    let body = match unmark(&String::from_utf8_lossy(&bytes)) {
        std::borrow::Cow::Borrowed(_) => axum::body::Body::from(bytes),
        std::borrow::Cow::Owned(clean) => axum::body::Body::from(clean),
    };
    Ok(Response::from_parts(parts, body))
}

async fn dispatch_scoped(app: &Arc<App>, req: Request) -> ApiResult {
    let method = req.method().clone();
    let full_path = req.uri().path().to_owned();
    let rest = full_path.strip_prefix("/v2/storage").unwrap_or("");
    let mut decoded = path_segments(rest);
    let (branch, branch_id) = strip_branch_prefix(app, req.headers(), &mut decoded)?;
    if decoded.iter().any(|s| s.contains(MARK)) {
        // Internal ids of branch storage are not addressable.
        return Err(ApiError::route_not_found(method.as_str(), &full_path));
    }
    mark_ids(&mut decoded, branch);
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if method == Method::GET && segs.is_empty() {
        return index::index(app, req.uri().query());
    }
    app.authenticate(req.headers())?;
    let call = Call {
        app,
        method,
        params: read_params(req).await?,
        branch,
        branch_id,
    };
    let (resource, rest) = segs
        .split_first()
        .map_or(("", &[][..]), |(r, rest)| (*r, rest));
    let answer = match resource {
        "tokens" => index::route(&call, rest),
        "dev-branches" => branches::route(&call, rest),
        "buckets" => buckets::route(&call, rest).await,
        "tables" => tables::route(&call, rest).await,
        "files" => files::route(&call, rest),
        "jobs" => jobs::route(&call, rest),
        "workspaces" => workspaces::route(&call, rest).await,
        "components" => workspaces::route_component(&call, rest).await,
        _ => None,
    };
    answer.unwrap_or_else(|| Err(ApiError::route_not_found(call.method.as_str(), &full_path)))
}

/// Query parameters merged with the body (JSON, form or multipart); the body wins on conflicts.
async fn read_params(req: Request) -> Result<Params, ApiError> {
    let mut params = parse_query(req.uri().query());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = if content_type
        .as_deref()
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("multipart/form-data"))
    {
        let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
            ApiError::bad_request("validation.failed", format!("Invalid multipart body: {e}"))
        })?;
        let mut fields = Vec::new();
        while let Some(field) = mp.next_field().await.map_err(|e| {
            ApiError::bad_request("validation.failed", format!("Invalid multipart body: {e}"))
        })? {
            let name = field.name().unwrap_or("").to_owned();
            let bytes = field.bytes().await.map_err(|e| {
                ApiError::bad_request(
                    "validation.failed",
                    format!("Invalid multipart field \"{name}\": {e}"),
                )
            })?;
            fields.push((
                name,
                Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            ));
        }
        from_pairs(fields.into_iter())
    } else {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    "validation.failed",
                    format!("Cannot read the request body: {e}"),
                )
            })?;
        parse_body(content_type.as_deref(), &bytes)?
    };
    for (k, v) in body {
        params.insert(k, v);
    }
    Ok(Params(params))
}
