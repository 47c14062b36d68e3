//! The Storage API routes (`/v2/storage/...`, also under `branch/{id|default}/`). This module parses the
//! request (path, token, parameters from query + JSON/form/multipart body) and routes it; token, index,
//! branches and jobs are answered here, the rest in one submodule per resource: `buckets`, `tables`
//! (JSON, changes, metadata), `loads` (create and import), `export` (selection, export, preview) and
//! `files`. Validation that the real API does synchronously answers 4xx; the work itself runs as a job.

use super::body::{Params, from_pairs, parse_body, parse_query, scalar_string};
use super::error::{ApiError, JobError, split_table_id, worker_failed};
use super::faults::JobFault;
use super::jobs::{self, JobResult};
use super::server::{App, authenticate};
use super::store::{Bucket, FILES_BUCKET, FileMeta, Meta, ObjectMeta, REGION, Store, TableMeta};
use super::table::{self, Dialect, Filter, Op, Selection};
use super::timefmt::{iso, iso_colon, now_secs, parse_point};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// The numeric id of the (only) default branch.
const DEFAULT_BRANCH_ID: u64 = 1;
/// Largest request body read into memory (deprecated sync uploads carry CSV in the body).
const MAX_BODY: usize = 512 << 20;

mod branches;
mod buckets;
mod export;
mod files;
mod loads;
mod tables;

use branches::*;
use buckets::*;
use export::*;
use files::*;
use loads::*;
pub(crate) use loads::{dump_table, seed_table};
use tables::*;

type ApiResult = Result<Response, ApiError>;

fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn ok(v: Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, v))
}

fn accepted(v: Value) -> ApiResult {
    Ok(json_response(StatusCode::ACCEPTED, v))
}

/// The real API is PHP, whose empty associative array encodes as `[]`: maps keyed by name
/// (`columnMetadata`, `columnsMetadata`, `bucketPermissions`) are `[]` when empty, an object otherwise.
pub(super) fn php_map(v: Value) -> Value {
    match v {
        Value::Object(m) if m.is_empty() => Value::Array(Vec::new()),
        v => v,
    }
}

/// Routes one Storage API request. JSON answers never show the internal ids of branch storage.
pub async fn dispatch(app: &Arc<App>, req: Request) -> ApiResult {
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
    let mut decoded = super::body::path_segments(rest);
    // The development branch with its own storage that the request works in (None: production).
    let mut branch: Option<u64> = None;
    if decoded.first().map(String::as_str) == Some("branch") && decoded.len() >= 2 {
        // The default branch's index needs no token, as production's does not; any other branch id is
        // only looked up for a caller with a token.
        if decoded[1] != "default" && decoded[1] != DEFAULT_BRANCH_ID.to_string() {
            authenticate(app, req.headers())?;
        }
        if let Scope::Dev(id) = scope_of(app, &decoded[1])? {
            let storage_route = matches!(
                decoded.get(2).map(String::as_str),
                Some("buckets" | "tables")
            );
            if storage_route {
                if !has_branch_storage(app) {
                    return Err(no_branch_storage(id));
                }
                branch = Some(id);
            }
        }
        decoded.drain(..2);
    }
    if decoded.iter().any(|s| s.contains(branches::MARK)) {
        // Internal ids of branch storage are not addressable.
        return Err(ApiError::route_not_found(method.as_str(), &full_path));
    }
    if branch.is_some() && decoded.len() >= 2 {
        decoded[1] = match decoded[0].as_str() {
            "buckets" => mark_bucket(&decoded[1], branch),
            _ => mark_table(&decoded[1], branch),
        };
    }
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if method == Method::GET && segs.is_empty() {
        return index(app, req.uri().query());
    }
    authenticate(app, req.headers())?;
    let params = read_params(req).await?;
    let base = &app.base_url;
    match (&method, segs.as_slice()) {
        (&Method::GET, ["tokens", "verify"]) => ok(token_json(app)),
        (&Method::GET, ["dev-branches"]) => list_branches(app),
        (&Method::POST, ["dev-branches"]) => create_branch(app, &params),
        (&Method::GET, ["dev-branches", id]) => get_branch(app, id),
        (&Method::DELETE, ["dev-branches", id]) => delete_branch(app, id),
        (&Method::GET, ["buckets"]) => {
            let meta = app.store.lock();
            ok(Value::Array(
                meta.buckets
                    .values()
                    .filter(|b| in_scope(&b.id, branch))
                    .map(|b| bucket_json(base, &meta, b))
                    .collect(),
            ))
        }
        (&Method::POST, ["buckets"]) => create_bucket(app, &params, branch),
        (&Method::GET, ["buckets", id]) => {
            let meta = app.store.lock();
            let b = meta
                .buckets
                .get(*id)
                .ok_or_else(|| ApiError::bucket_not_found(id))?;
            let mut v = bucket_json(base, &meta, b);
            if params.str("include").is_some_and(|i| i.contains("columns")) {
                v["tables"] = tables_of(base, &meta, id, true, false);
            }
            ok(v)
        }
        (&Method::PUT, ["buckets", id]) => update_bucket(app, id, &params),
        (&Method::DELETE, ["buckets", id]) => delete_bucket(app, id, &params),
        (&Method::GET, ["buckets", id, "tables"]) => {
            let meta = app.store.lock();
            if !meta.buckets.contains_key(*id) {
                return Err(ApiError::bucket_not_found(id));
            }
            let (cols, bucket) = list_includes(&params);
            ok(tables_of(base, &meta, id, cols, bucket))
        }
        (&Method::POST, ["buckets", id, "tables-async"]) => create_table_async(app, id, &params),
        (&Method::POST, ["buckets", id, "tables-definition"]) => {
            create_table_definition(app, id, &params)
        }
        (&Method::POST, ["buckets", id, "tables"]) => create_table_sync(app, id, &params).await,
        (&Method::GET, ["tables"]) => {
            let meta = app.store.lock();
            let (cols, bucket) = list_includes(&params);
            ok(Value::Array(
                meta.tables
                    .values()
                    .filter(|t| in_scope(&t.id, branch))
                    .map(|t| table_json(base, &meta, t, cols, bucket))
                    .collect(),
            ))
        }
        (&Method::GET, ["tables", id]) => {
            let meta = app.store.lock();
            let t = meta
                .tables
                .get(*id)
                .ok_or_else(|| ApiError::table_not_found(id))?;
            ok(table_json(base, &meta, t, true, true))
        }
        (&Method::PUT, ["tables", id]) => update_table(app, id, &params),
        (&Method::DELETE, ["tables", id]) => delete_table(app, id, &params),
        (&Method::POST, ["tables", id, "import-async"]) => import_async(app, id, &params),
        (&Method::POST, ["tables", id, "import"]) => import_sync(app, id, &params).await,
        (&Method::POST, ["tables", id, "export-async"]) => export_async(app, id, &params),
        (&Method::GET, ["tables", id, "data-preview"]) => preview(app, id, &params).await,
        (&Method::POST, ["tables", id, "primary-key"]) => add_primary_key(app, id, &params),
        (&Method::DELETE, ["tables", id, "primary-key"]) => remove_primary_key(app, id),
        (&Method::DELETE, ["tables", id, "rows"]) => delete_rows(app, id, &params),
        (&Method::POST, ["tables", id, "columns"]) => add_column(app, id, &params),
        (&Method::DELETE, ["tables", id, "columns", column]) => {
            delete_column(app, id, column, &params)
        }
        (&Method::GET, ["tables", id, "metadata"]) => ok(json!(table_meta(app, id)?.metadata)),
        (&Method::POST, ["tables", id, "metadata"]) => post_table_metadata(app, id, &params),
        (&Method::DELETE, ["tables", id, "metadata", metadata_id]) => {
            delete_table_metadata(app, id, metadata_id)
        }
        (&Method::POST, ["files", "prepare"]) => prepare_file(app, &params),
        (&Method::GET, ["files"]) => list_files(app, &params),
        (&Method::GET, ["files", id]) => {
            let fed = params.bool("federationToken", false)?;
            let f = if fed {
                fresh_credentials(app, id)?
            } else {
                find_file(app, id)?
            };
            ok(file_json(app, &f, fed, false))
        }
        (&Method::DELETE, ["files", id]) => delete_file(app, id),
        (&Method::POST, ["files", id, "tags"]) => {
            let tag = params.nonempty("tag").ok_or_else(|| {
                ApiError::bad_request("storage.files.validation", "Parameter \"tag\" is required")
            })?;
            edit_file(app, id, |f| {
                if !f.tags.contains(&tag) {
                    f.tags.push(tag.clone());
                }
            })
        }
        (&Method::DELETE, ["files", id, "tags", tag]) => {
            edit_file(app, id, |f| f.tags.retain(|t| t.as_str() != *tag))
        }
        (&Method::PUT | &Method::POST, ["files", id, "refresh"]) => {
            let f = fresh_credentials(app, id)?;
            ok(file_json(app, &f, true, true))
        }
        (&Method::GET, ["jobs"]) => {
            let limit = params.int("limit")?.unwrap_or(100).clamp(0, 1000) as usize;
            let offset = params.int("offset")?.unwrap_or(0).max(0) as usize;
            let meta = app.store.lock();
            ok(Value::Array(
                meta.jobs
                    .values()
                    .rev()
                    .skip(offset)
                    .take(limit)
                    .cloned()
                    .collect(),
            ))
        }
        (&Method::GET, ["jobs", id]) => {
            let job = id.parse::<u64>().ok().and_then(|id| jobs::get(app, id));
            job.map(ok).unwrap_or_else(|| {
                Err(ApiError::not_found(
                    "storage.jobs.notFound",
                    format!("Job \"{id}\" not found"),
                ))
            })
        }
        (&Method::POST, ["tables", _]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "notAllowed",
            "POST tables/{id} does not exist: set a primary key with POST tables/{id}/primary-key {\"columns\":[..]}, rename with PUT tables/{id} {\"displayName\"}.",
        )),
        (&Method::POST, ["files"]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "notAllowed",
            "POST files does not exist: call POST files/prepare, upload to S3 with the returned uploadParams, then use the file id.",
        )),
        (m, _) => Err(ApiError::route_not_found(m.as_str(), &full_path)),
    }
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

fn list_includes(params: &Params) -> (bool, bool) {
    match params.0.get("include") {
        None => (false, true),
        Some(v) => {
            let include = scalar_string(v).unwrap_or_default();
            (include.contains("columns"), include.contains("buckets"))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Token, index, branches

fn index(app: &App, query: Option<&str>) -> ApiResult {
    let q = Params(parse_query(query));
    let mut v = json!({
        "api": "storage",
        "documentation": "https://keboola.docs.apiary.io/",
        "version": "v2",
        "services": [{"id": "import", "url": app.base_url}, {"id": "storage", "url": app.base_url}],
        "features": app.store.lock().project.features,
        "urlTemplates": {},
    });
    let exclude = q.str("exclude").unwrap_or_default();
    if !exclude.contains("components") {
        v["components"] = json!([]);
    }
    ok(v)
}

fn token_json(app: &App) -> Value {
    let (rows, bytes) = {
        let meta = app.store.lock();
        meta.tables.values().fold((0u64, 0u64), |(r, b), t| {
            (r + t.rows_count, b + t.data_size_bytes)
        })
    };
    let project = app.store.lock().project.clone();
    let mut features = project.project_features.clone();
    if project.branch_storage && !features.iter().any(|f| f == "protected-default-branch") {
        // How the platform's job runner learns that the project has branch storage.
        features.push("protected-default-branch".into());
    }
    let bucket_permissions: serde_json::Map<String, Value> = app
        .store
        .lock()
        .buckets
        .keys()
        .map(|k| (k.clone(), json!("manage")))
        .collect();
    json!({
        "id": "1",
        "created": iso(0),
        "refreshed": iso(0),
        "description": "emulator token",
        "uri": format!("{}/v2/storage/tokens/1", app.base_url),
        "isMasterToken": true,
        "canManageBuckets": true,
        "canManageTokens": true,
        "canReadAllFileUploads": true,
        "canPurgeTrash": true,
        "canManageProtectedDefaultBranch": true,
        "canCreateJobs": true,
        "expires": null,
        "isExpired": false,
        "isDisabled": false,
        "isBYODB": false,
        "dailyCapacity": 0,
        "bucketPermissions": php_map(Value::Object(bucket_permissions)),
        "creatorToken": {"id": 1, "description": "emulator"},
        "componentAccess": [],
        "admin": {"id": 1, "name": "Emulator Admin", "features": [], "isOrganizationMember": true, "role": "admin"},
        "organization": {"id": 1},
        "owner": {
            "name": "Local emulator", "id": "1", "type": "production", "region": REGION,
            "created": iso(0), "expires": null, "features": features,
            "dataSizeBytes": bytes, "rowsCount": rows, "hasSnowflake": true, "hasBigquery": false,
            "defaultBackend": "snowflake", "limits": {}, "metrics": {}, "isDisabled": false,
            "dataRetentionTimeInDays": 7, "assignedBackends": ["snowflake"], "fileStorageProvider": "aws",
        },
    })
}
