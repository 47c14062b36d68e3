//! The Storage API routes (`/v2/storage/...`, also under `branch/{id|default}/`): token, index, branches,
//! buckets, tables (create, import, export, preview, rows, columns, primary key), files and jobs. Request
//! validation that the real API does synchronously answers 4xx here; the work itself runs as a job.

use super::body::{Params, from_pairs, parse_body, parse_query, scalar_string};
use super::error::{ApiError, JobError, split_table_id};
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

/// Routes one Storage API request.
pub async fn dispatch(app: &Arc<App>, req: Request) -> ApiResult {
    let method = req.method().clone();
    let full_path = req.uri().path().to_owned();
    let rest = full_path.strip_prefix("/v2/storage").unwrap_or("");
    let decoded: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let mut segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if segs.first() == Some(&"branch") && segs.len() >= 2 {
        let branch = segs[1];
        if branch != "default" && branch != DEFAULT_BRANCH_ID.to_string() {
            authenticate(app, req.headers())?;
            return Err(ApiError::not_found(
                "storage.devBranches.notFound",
                format!("Branch \"{branch}\" not found"),
            ));
        }
        segs.drain(..2);
    }
    if method == Method::GET && segs.is_empty() {
        return index(app, req.uri().query());
    }
    authenticate(app, req.headers())?;
    let params = read_params(req).await?;
    let base = &app.base_url;
    match (&method, segs.as_slice()) {
        (&Method::GET, ["tokens", "verify"]) => ok(token_json(app)),
        (&Method::GET, ["dev-branches"]) => ok(json!([branch_json()])),
        (&Method::GET, ["dev-branches", id])
            if *id == DEFAULT_BRANCH_ID.to_string() || *id == "default" =>
        {
            ok(branch_json())
        }
        (&Method::GET, ["buckets"]) => {
            let meta = app.store.lock();
            ok(Value::Array(
                meta.buckets
                    .values()
                    .map(|b| bucket_json(base, &meta, b))
                    .collect(),
            ))
        }
        (&Method::POST, ["buckets"]) => create_bucket(app, &params),
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
        (&Method::POST, ["buckets", id, "tables"]) => create_table_sync(app, id, &params).await,
        (&Method::GET, ["tables"]) => {
            let meta = app.store.lock();
            let (cols, bucket) = list_includes(&params);
            ok(Value::Array(
                meta.tables
                    .values()
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
        "features": [],
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
        "bucketPermissions": bucket_permissions,
        "creatorToken": {"id": 1, "description": "emulator"},
        "componentAccess": [],
        "admin": {"id": 1, "name": "Emulator Admin", "features": [], "isOrganizationMember": true, "role": "admin"},
        "organization": {"id": 1},
        "owner": {
            "name": "Local emulator", "id": "1", "type": "production", "region": REGION,
            "created": iso(0), "expires": null, "features": [],
            "dataSizeBytes": bytes, "rowsCount": rows, "hasSnowflake": true, "hasBigquery": false,
            "defaultBackend": "snowflake", "limits": {}, "metrics": {}, "isDisabled": false,
            "dataRetentionTimeInDays": 7, "assignedBackends": ["snowflake"], "fileStorageProvider": "aws",
        },
    })
}

fn branch_json() -> Value {
    json!({"id": DEFAULT_BRANCH_ID, "name": "Main", "description": "", "created": iso(0), "isDefault": true, "creatorToken": []})
}

// ---------------------------------------------------------------------------------------------------------
// Buckets

fn bucket_json(base: &str, meta: &Meta, b: &Bucket) -> Value {
    let tables = meta.tables.values().filter(|t| t.bucket_id == b.id);
    let (rows, bytes) = tables.fold((0u64, 0u64), |(r, s), t| {
        (r + t.rows_count, s + t.data_size_bytes)
    });
    json!({
        "uri": format!("{base}/v2/storage/buckets/{}", b.id),
        "id": b.id,
        "name": b.name,
        "displayName": b.display_name,
        "idBranch": DEFAULT_BRANCH_ID,
        "stage": b.stage,
        "description": b.description,
        "tables": format!("{base}/v2/storage/buckets/{}/tables", b.id),
        "created": iso(b.created),
        "lastChangeDate": b.last_change_date.map(iso),
        "updated": b.last_change_date.map(iso),
        "isReadOnly": false,
        "dataSizeBytes": bytes,
        "rowsCount": rows,
        "isMaintenance": false,
        "backend": "snowflake",
        "hasExternalSchema": false,
        "databaseName": null,
        "path": format!("KBC_EMULATOR.{}", b.id),
        "sharing": null,
        "bucketSharingAllowed": true,
        "color": null,
        "isLinkedBucket": false,
        "backendPath": ["KBC_EMULATOR", b.id],
        "metadata": [],
        "attributes": [],
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 96
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Inserts a bucket `stage.c-name`; the error when it exists or the name is invalid.
pub fn insert_bucket(
    meta: &mut Meta,
    stage: &str,
    name: &str,
    display: Option<String>,
    description: String,
) -> Result<Bucket, ApiError> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(
            "storage.buckets.validation",
            format!(
                "Invalid bucket name \"{name}\": only alphanumeric characters, dashes and underscores are allowed."
            ),
        ));
    }
    if stage != "in" && stage != "out" {
        return Err(ApiError::bad_request(
            "storage.buckets.validation",
            format!("Invalid stage \"{stage}\": use \"in\" or \"out\"."),
        ));
    }
    let full = format!("c-{name}");
    let id = format!("{stage}.{full}");
    if meta.buckets.contains_key(&id) {
        return Err(ApiError::bad_request(
            "storage.buckets.alreadyExists",
            format!("The bucket \"{id}\" already exists."),
        ));
    }
    let b = Bucket {
        id: id.clone(),
        name: full,
        display_name: display.unwrap_or_else(|| name.to_owned()),
        stage: stage.to_owned(),
        description,
        created: now_secs(),
        last_change_date: None,
    };
    meta.buckets.insert(id, b.clone());
    Ok(b)
}

fn create_bucket(app: &App, params: &Params) -> ApiResult {
    let name = params.nonempty("name").ok_or_else(|| {
        ApiError::bad_request(
            "storage.buckets.validation",
            "Parameter \"name\" is required.",
        )
    })?;
    let stage = params.nonempty("stage").unwrap_or_else(|| "in".into());
    let v = {
        let mut meta = app.store.lock();
        let b = insert_bucket(
            &mut meta,
            &stage,
            &name,
            params.nonempty("displayName"),
            params.str("description").unwrap_or_default(),
        )?;
        bucket_json(&app.base_url, &meta, &b)
    };
    persist(app)?;
    Ok(json_response(StatusCode::CREATED, v))
}

fn update_bucket(app: &App, id: &str, params: &Params) -> ApiResult {
    let v = {
        let mut meta = app.store.lock();
        let b = meta
            .buckets
            .get_mut(id)
            .ok_or_else(|| ApiError::bucket_not_found(id))?;
        if let Some(d) = params.nonempty("displayName") {
            b.display_name = d;
        }
        b.last_change_date = Some(now_secs());
        let b = b.clone();
        bucket_json(&app.base_url, &meta, &b)
    };
    persist(app)?;
    ok(v)
}

fn delete_bucket(app: &Arc<App>, id: &str, params: &Params) -> ApiResult {
    let force = params.bool("force", false)?;
    let is_async = params.bool("async", false)?;
    {
        let meta = app.store.lock();
        if !meta.buckets.contains_key(id) {
            return Err(ApiError::bucket_not_found(id));
        }
        let n = meta.tables.values().filter(|t| t.bucket_id == id).count();
        if n > 0 && !force {
            return Err(ApiError::bad_request(
                "buckets.deleteNotEmpty",
                format!("Only empty buckets can be deleted. There are {n} tables in the bucket."),
            ));
        }
    }
    let bucket_id = id.to_owned();
    let work = move |app: &App, _: Option<JobFault>| -> JobResult {
        let gone: Vec<TableMeta> = {
            let mut meta = app.store.lock();
            let ids: Vec<String> = meta
                .tables
                .values()
                .filter(|t| t.bucket_id == bucket_id)
                .map(|t| t.id.clone())
                .collect();
            meta.buckets.remove(&bucket_id);
            ids.iter().filter_map(|t| meta.tables.remove(t)).collect()
        };
        app.store.persist()?;
        for t in gone {
            let _ = std::fs::remove_dir_all(app.store.table_dir(&t.id));
        }
        Ok(Value::Null)
    };
    if is_async {
        let job = jobs::create(
            app,
            "bucketDelete",
            None,
            json!({"bucketId": id, "force": force}),
        );
        jobs::spawn(app, &job, None, work);
        accepted(job)
    } else {
        work(app, None).map_err(|e| ApiError::internal(e.message))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tables: JSON

pub fn table_json(
    base: &str,
    meta: &Meta,
    t: &TableMeta,
    with_columns: bool,
    with_bucket: bool,
) -> Value {
    let mut v = json!({
        "uri": format!("{base}/v2/storage/tables/{}", t.id),
        "id": t.id,
        "name": t.name,
        "displayName": t.display_name,
        "transactional": false,
        "primaryKey": t.primary_key,
        "indexType": null,
        "indexKey": [],
        "distributionType": null,
        "distributionKey": [],
        "syntheticPrimaryKeyEnabled": false,
        "created": iso(t.created),
        "lastImportDate": t.last_import_date.map(iso),
        "lastChangeDate": t.last_change_date.map(iso),
        "rowsCount": t.rows_count,
        "dataSizeBytes": t.data_size_bytes,
        "isAlias": false,
        "isAliasable": true,
        "isTyped": false,
        "tableType": "table",
        "timestampType": "MANAGED",
        "path": format!("KBC_EMULATOR.{}", t.id),
        "metadata": t.metadata,
        "columnMetadata": if t.column_metadata.is_empty() { json!([]) } else { json!(t.column_metadata) },
    });
    if with_columns {
        v["columns"] = json!(t.columns);
    }
    if with_bucket && let Some(b) = meta.buckets.get(&t.bucket_id) {
        v["bucket"] = bucket_json(base, meta, b);
    }
    v
}

fn tables_of(base: &str, meta: &Meta, bucket_id: &str, cols: bool, bucket: bool) -> Value {
    Value::Array(
        meta.tables
            .values()
            .filter(|t| t.bucket_id == bucket_id)
            .map(|t| table_json(base, meta, t, cols, bucket))
            .collect(),
    )
}

fn persist(app: &App) -> Result<(), ApiError> {
    app.store
        .persist()
        .map_err(|e| ApiError::internal(format!("cannot persist the emulator store: {e}")))
}

fn table_meta(app: &App, id: &str) -> Result<TableMeta, ApiError> {
    app.store
        .lock()
        .tables
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::table_not_found(id))
}

// ---------------------------------------------------------------------------------------------------------
// Loads: create and import

/// Options of a load as the request gave them.
#[derive(Debug, Clone)]
struct LoadOptions {
    dialect: Dialect,
    incremental: bool,
    file_columns: Option<Vec<String>>,
    without_headers: bool,
}

fn single_byte(params: &Params, key: &str, default: Option<u8>) -> Result<Option<u8>, ApiError> {
    match params.0.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => {
            let s = scalar_string(v).unwrap_or_default();
            match s.as_bytes() {
                [] => Ok(None),
                [b] => Ok(Some(*b)),
                _ if s == "\\t" => Ok(Some(b'\t')),
                _ => Err(ApiError::bad_request(
                    "invalidCsv",
                    format!("Invalid {key} \"{s}\": it must be a single character."),
                )),
            }
        }
    }
}

fn load_options(params: &Params) -> Result<LoadOptions, ApiError> {
    let delimiter = single_byte(params, "delimiter", Some(b','))?.unwrap_or(b',');
    let enclosure = single_byte(params, "enclosure", Some(b'"'))?;
    let escaped_by = single_byte(params, "escapedBy", None)?;
    if enclosure.is_some() && escaped_by.is_some() {
        return Err(ApiError::bad_request(
            "storage.tables.validation",
            "Use either enclosure or escapedBy, not both.",
        ));
    }
    let columns = params.array("columns");
    Ok(LoadOptions {
        dialect: Dialect {
            delimiter,
            enclosure,
            escaped_by,
        },
        incremental: params.bool("incremental", false)?,
        file_columns: if columns.is_empty() {
            None
        } else {
            Some(columns)
        },
        without_headers: params.bool("withoutHeaders", false)?,
    })
}

fn file_id_param(params: &Params) -> Result<u64, ApiError> {
    let raw = params.nonempty("dataFileId").ok_or_else(|| {
        let hint = if params.get("dataString").is_some() {
            " \"dataString\" is accepted only by the deprecated sync endpoints (POST buckets/{id}/tables, POST tables/{id}/import)."
        } else {
            ""
        };
        ApiError::bad_request(
            "storage.tables.validation",
            format!("Parameter \"dataFileId\" is required (upload the CSV with files/prepare first).{hint}"),
        )
    })?;
    raw.parse().map_err(|_| {
        ApiError::bad_request(
            "storage.tables.validation",
            format!("Invalid dataFileId \"{raw}\"."),
        )
    })
}

fn check_file(app: &App, file_id: u64) -> Result<(), ApiError> {
    if app.store.lock().files.contains_key(&file_id) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "storage.files.notFound",
            format!("File {file_id} not found"),
        ))
    }
}

/// The blob paths of a file's data, in order (one for a plain file, the manifest's entries for a sliced one).
fn file_sources(store: &Store, file_id: u64) -> Result<Vec<PathBuf>, JobError> {
    let f = store.lock().files.get(&file_id).cloned().ok_or_else(|| {
        JobError::new(
            "storage.files.notFound",
            format!("File {file_id} not found"),
        )
    })?;
    if !f.is_sliced {
        return store
            .object_path(FILES_BUCKET, &f.key)
            .map(|(p, _)| vec![p])
            .ok_or_else(|| {
                JobError::new(
                    "storage.fileNotUploaded",
                    format!("File {file_id} was prepared but never uploaded."),
                )
            });
    }
    let (manifest_path, _) = store
        .object_path(FILES_BUCKET, &format!("{}manifest", f.key))
        .ok_or_else(|| {
            JobError::new(
                "storage.manifestFileMissing",
                format!("The manifest of sliced file {file_id} is missing."),
            )
        })?;
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest_path)?).map_err(|e| {
        JobError::new(
            "storage.manifestFileMissing",
            format!("The manifest of sliced file {file_id} is not valid JSON: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for entry in manifest["entries"].as_array().cloned().unwrap_or_default() {
        let url = entry["url"].as_str().unwrap_or("");
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let (p, _) = store.object_path(bucket, key).ok_or_else(|| {
            JobError::new(
                "storage.importFileMissing",
                format!("The slice \"{url}\" of file {file_id} does not exist."),
            )
        })?;
        out.push(p);
    }
    Ok(out)
}

/// Where a new table goes when a load creates it.
struct NewTable {
    bucket_id: String,
    name: String,
    primary_key: Vec<String>,
}

/// Loads `sources` into a table (creating it when `new` is given) and commits the new generation. Runs on a
/// blocking thread with the table's lock held.
/// Returns the columns the load imported.
fn apply_load(
    app: &App,
    table_id: &str,
    new: Option<NewTable>,
    sources: Vec<PathBuf>,
    opts: &LoadOptions,
) -> Result<Vec<String>, JobError> {
    let current = app.store.lock().tables.get(table_id).cloned();
    if new.is_some() && current.is_some() {
        let (bucket, name) = split_table_id(table_id);
        return Err(JobError::new(
            "storage.buckets.tableAlreadyExists",
            format!("The table \"{name}\" already exists in the bucket \"{bucket}\"."),
        ));
    }
    if new.is_none() && current.is_none() {
        return Err(ApiError::table_not_found(table_id).into());
    }
    let (gen_, stamp) = {
        let mut meta = app.store.lock();
        let last = current.as_ref().map(|t| t.last_stamp).unwrap_or(0);
        // The next whole second after now (and after the previous load): stamps have one-second
        // resolution, so a `changedSince` taken before the load, even in the same second, still selects
        // its rows, while `changedSince = lastImportDate` (this stamp) selects none of them.
        (meta.next_id(), (now_secs() + 1).max(last + 1))
    };
    let out = app.store.table_data_path(table_id, gen_);
    let existing = current
        .as_ref()
        .filter(|t| t.data_gen > 0)
        .map(|t| app.store.table_data_path(table_id, t.data_gen));
    let result = table::load(table::Load {
        sources,
        dialect: opts.dialect.clone(),
        file_columns: opts.file_columns.clone(),
        without_headers: opts.without_headers,
        incremental: opts.incremental && current.is_some(),
        create: new.is_some(),
        table_columns: current
            .as_ref()
            .map(|t| t.columns.clone())
            .unwrap_or_default(),
        primary_key: new
            .as_ref()
            .map(|n| n.primary_key.clone())
            .or_else(|| current.as_ref().map(|t| t.primary_key.clone()))
            .unwrap_or_default(),
        existing: existing.as_deref(),
        stamp,
        out: out.clone(),
        scratch: app.store.tmp_path("load"),
    });
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&out);
            return Err(e);
        }
    };
    let now = now_secs();
    {
        let mut meta = app.store.lock();
        let mut t = match (&new, current) {
            (Some(n), _) => TableMeta {
                id: table_id.to_owned(),
                bucket_id: n.bucket_id.clone(),
                name: n.name.clone(),
                display_name: n.name.clone(),
                columns: Vec::new(),
                primary_key: n.primary_key.clone(),
                created: now,
                last_import_date: None,
                last_change_date: None,
                rows_count: 0,
                data_size_bytes: 0,
                data_gen: 0,
                last_stamp: 0,
                export_cache: Default::default(),
                metadata: Vec::new(),
                column_metadata: Default::default(),
            },
            // The stored table as it is now: a bucket delete may have dropped it while the load ran.
            (None, _) => match meta.tables.get(table_id) {
                Some(t) => t.clone(),
                None => {
                    drop(meta);
                    let _ = std::fs::remove_file(&out);
                    return Err(ApiError::table_not_found(table_id).into());
                }
            },
        };
        if !meta.buckets.contains_key(&t.bucket_id) {
            drop(meta);
            let _ = std::fs::remove_file(&out);
            return Err(ApiError::bucket_not_found(&t.bucket_id).into());
        }
        t.columns = outcome.columns.clone();
        t.rows_count = outcome.rows_count;
        t.data_size_bytes = outcome.data_size_bytes;
        t.data_gen = gen_;
        t.last_import_date = Some(stamp);
        t.last_stamp = stamp;
        if outcome.changed || new.is_some() {
            t.last_change_date = Some(stamp);
        }
        t.export_cache.clear();
        if let Some(b) = meta.buckets.get_mut(&t.bucket_id) {
            b.last_change_date = Some(now);
        }
        meta.tables.insert(table_id.to_owned(), t);
    }
    app.store.persist()?;
    if let Some(old) = existing {
        let _ = std::fs::remove_file(old);
    }
    Ok(outcome.imported_columns)
}

fn table_result(app: &App, table_id: &str) -> JobResult {
    let meta = app.store.lock();
    let t = meta
        .tables
        .get(table_id)
        .ok_or_else(|| JobError::from(ApiError::table_not_found(table_id)))?;
    Ok(table_json(&app.base_url, &meta, t, true, true))
}

fn import_results(app: &App, table_id: &str, imported: &[String]) -> JobResult {
    let t = app
        .store
        .lock()
        .tables
        .get(table_id)
        .cloned()
        .ok_or_else(|| JobError::from(ApiError::table_not_found(table_id)))?;
    Ok(json!({
        "importedColumns": imported,
        "warnings": [],
        "transaction": null,
        "totalRowsCount": t.rows_count,
        "totalDataSizeBytes": t.data_size_bytes,
    }))
}

fn new_table_target(app: &App, bucket_id: &str, params: &Params) -> Result<NewTable, ApiError> {
    if !app.store.lock().buckets.contains_key(bucket_id) {
        return Err(ApiError::bucket_not_found(bucket_id));
    }
    let name = params.nonempty("name").ok_or_else(|| {
        ApiError::validation("Table create option \"name\" is required and cannot be empty.")
    })?;
    if !valid_name(&name) {
        return Err(ApiError::validation(format!(
            "Invalid table name \"{name}\": only alphanumeric characters, dashes and underscores are allowed."
        )));
    }
    let primary_key = match params.get("primaryKey") {
        Some(Value::Array(_)) | Some(Value::Object(_)) => {
            return Err(ApiError::bad_request(
                "storage.validation.primaryKey",
                "Parameter \"primaryKey\" must be a comma-separated string of column names, not an array.",
            ));
        }
        _ => params.list("primaryKey"),
    };
    let table_id = format!("{bucket_id}.{name}");
    if app.store.lock().tables.contains_key(&table_id) {
        return Err(ApiError::bad_request(
            "storage.buckets.tableAlreadyExists",
            format!("The table \"{name}\" already exists in the bucket \"{bucket_id}\"."),
        ));
    }
    Ok(NewTable {
        bucket_id: bucket_id.to_owned(),
        name,
        primary_key,
    })
}

fn create_table_async(app: &Arc<App>, bucket_id: &str, params: &Params) -> ApiResult {
    let target = new_table_target(app, bucket_id, params)?;
    let file_id = file_id_param(params)?;
    check_file(app, file_id)?;
    let opts = load_options(params)?;
    let table_id = format!("{bucket_id}.{}", target.name);
    let job = jobs::create(
        app,
        "tableCreate",
        None,
        json!({"name": target.name, "primaryKey": target.primary_key.join(","), "source": {"fileId": file_id, "type": "file"}}),
    );
    let tid = table_id.clone();
    jobs::spawn(app, &job, Some(table_id), move |app, _| {
        let sources = file_sources(&app.store, file_id)?;
        apply_load(app, &tid, Some(target), sources, &opts)?;
        table_result(app, &tid)
    });
    accepted(job)
}

/// Runs a load with data given inline (`dataString` or a multipart `data` part) right away.
async fn inline_load(
    app: &Arc<App>,
    table_id: String,
    new: Option<NewTable>,
    data: String,
    opts: LoadOptions,
) -> Result<Vec<String>, JobError> {
    let lock = app.store.table_lock(&table_id);
    let _guard = lock.lock().await;
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let tmp = app2.store.tmp_path("inline");
        std::fs::write(&tmp, data.as_bytes())?;
        let r = apply_load(&app2, &table_id, new, vec![tmp.clone()], &opts);
        let _ = std::fs::remove_file(&tmp);
        r
    })
    .await
    .map_err(|_| JobError::new("applicationError", "the load worker panicked"))?
}

fn inline_data(params: &Params) -> Result<String, ApiError> {
    params
        .str("dataString")
        .or_else(|| params.str("data"))
        .ok_or_else(|| {
            ApiError::validation(
                "Parameter \"dataString\" (or a multipart \"data\" file) is required.",
            )
        })
}

fn job_error_to_api(e: JobError) -> ApiError {
    let mut a = ApiError::bad_request(&e.code, e.message);
    if e.code == "applicationError" {
        a.status = StatusCode::INTERNAL_SERVER_ERROR;
    }
    a.extra = e.results.map(|r| Box::new(json!({"results": r})));
    a
}

async fn create_table_sync(app: &Arc<App>, bucket_id: &str, params: &Params) -> ApiResult {
    let target = new_table_target(app, bucket_id, params)?;
    let data = inline_data(params)?;
    let opts = load_options(params)?;
    let table_id = format!("{bucket_id}.{}", target.name);
    inline_load(app, table_id.clone(), Some(target), data, opts)
        .await
        .map_err(job_error_to_api)?;
    let v = {
        let meta = app.store.lock();
        let t = meta
            .tables
            .get(&table_id)
            .ok_or_else(|| ApiError::table_not_found(&table_id))?;
        table_json(&app.base_url, &meta, t, true, true)
    };
    Ok(json_response(StatusCode::CREATED, v))
}

fn import_async(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    table_meta(app, table_id)?;
    let file_id = file_id_param(params)?;
    check_file(app, file_id)?;
    let opts = load_options(params)?;
    let job = jobs::create(
        app,
        "tableImport",
        Some(table_id),
        json!({"source": {"fileId": file_id, "type": "file"}, "incremental": opts.incremental, "columns": opts.file_columns, "withoutHeaders": opts.without_headers}),
    );
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        let sources = file_sources(&app.store, file_id)?;
        let imported = apply_load(app, &tid, None, sources, &opts)?;
        import_results(app, &tid, &imported)
    });
    accepted(job)
}

async fn import_sync(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    table_meta(app, table_id)?;
    let data = inline_data(params)?;
    let opts = load_options(params)?;
    let imported = inline_load(app, table_id.to_owned(), None, data, opts)
        .await
        .map_err(job_error_to_api)?;
    let mut v = import_results(app, table_id, &imported).map_err(job_error_to_api)?;
    v["status"] = json!("ok");
    ok(v)
}

/// Seeds a table from a CSV file with a header: creates the bucket and the table when missing, then does a
/// full load (the `seed_table` of the library API and `POST /_emulator/tables/{id}`).
pub async fn seed_table(
    app: &Arc<App>,
    table_id: &str,
    csv: PathBuf,
    primary_key: &[String],
) -> Result<(), ApiError> {
    let (bucket_id, name) = split_table_id(table_id);
    let (stage, bucket_name) = bucket_id.split_once('.').unwrap_or(("", ""));
    let Some(short) = bucket_name.strip_prefix("c-") else {
        return Err(ApiError::validation(format!(
            "Cannot seed \"{table_id}\": a table id looks like \"in.c-bucket.table\"."
        )));
    };
    {
        let mut meta = app.store.lock();
        if !meta.buckets.contains_key(bucket_id) {
            insert_bucket(&mut meta, stage, short, None, String::new())?;
        }
    }
    let new = if app.store.lock().tables.contains_key(table_id) {
        None
    } else {
        if !valid_name(name) {
            return Err(ApiError::validation(format!(
                "Invalid table name \"{name}\"."
            )));
        }
        Some(NewTable {
            bucket_id: bucket_id.to_owned(),
            name: name.to_owned(),
            primary_key: primary_key.to_vec(),
        })
    };
    if new.is_none() && !primary_key.is_empty() {
        let mut meta = app.store.lock();
        if let Some(t) = meta.tables.get_mut(table_id) {
            t.primary_key = primary_key.to_vec();
        }
    }
    let lock = app.store.table_lock(table_id);
    let _guard = lock.lock().await;
    let app2 = app.clone();
    let tid = table_id.to_owned();
    let opts = LoadOptions {
        dialect: Dialect::default(),
        incremental: false,
        file_columns: None,
        without_headers: false,
    };
    tokio::task::spawn_blocking(move || apply_load(&app2, &tid, new, vec![csv], &opts))
        .await
        .map_err(|_| ApiError::internal("the seed worker panicked"))?
        .map_err(job_error_to_api)?;
    Ok(())
}

/// All rows as RFC CSV with a header, rows sorted (see `Emulator::dump_table`).
pub async fn dump_table(app: &Arc<App>, table_id: &str) -> Result<Option<String>, ApiError> {
    let Some(t) = app.store.lock().tables.get(table_id).cloned() else {
        return Ok(None);
    };
    let lock = app.store.table_lock(table_id);
    let _guard = lock.lock().await;
    let t = app.store.lock().tables.get(table_id).cloned().unwrap_or(t);
    let path = (t.data_gen > 0).then(|| app.store.table_data_path(table_id, t.data_gen));
    let cols: Vec<usize> = (0..t.columns.len()).collect();
    let rows = tokio::task::spawn_blocking(move || {
        table::select_rows(path.as_deref(), &Selection::default(), &cols, u64::MAX)
    })
    .await
    .map_err(|_| ApiError::internal("the dump worker panicked"))?
    .map_err(job_error_to_api)?;
    let mut lines: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| rfc_line(r.iter().map(Vec::as_slice)))
        .collect();
    lines.sort();
    let mut out = rfc_line(t.columns.iter().map(|c| c.as_bytes()));
    for l in lines {
        out.extend_from_slice(&l);
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

fn rfc_line<'a>(fields: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut w = table::rfc_writer(Vec::new());
    let fields: Vec<&[u8]> = fields.collect();
    let _ = w.write_record(&fields);
    w.into_inner().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// Selections: where filters and changedSince/Until

fn column_index(t: &TableMeta, name: &str) -> Result<usize, ApiError> {
    t.columns.iter().position(|c| c == name).ok_or_else(|| {
        ApiError::bad_request(
            "storage.tables.validation.columnNotExists",
            format!(
                "Column \"{name}\" does not exist in the table \"{}\". Columns: {}",
                t.id,
                t.columns.join(", ")
            ),
        )
    })
}

fn parse_selection(t: &TableMeta, params: &Params) -> Result<Selection, ApiError> {
    let now = now_secs();
    let point = |key: &str| -> Result<Option<i64>, ApiError> {
        match params.nonempty(key) {
            None => Ok(None),
            Some(s) => parse_point(&s, now).map(Some).ok_or_else(|| {
                ApiError::validation(format!("Invalid \"{key}\" value \"{s}\": use a unix timestamp, ISO 8601 or a relative time like \"-2 days\"."))
            }),
        }
    };
    let mut sel = Selection {
        filters: Vec::new(),
        changed_since: point("changedSince")?,
        changed_until: point("changedUntil")?,
    };
    if let Some(col) = params.nonempty("whereColumn") {
        let op_name = params
            .nonempty("whereOperator")
            .unwrap_or_else(|| "eq".into());
        let op = match op_name.as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            other => {
                return Err(ApiError::validation(format!(
                    "Invalid where operator {other}"
                )));
            }
        };
        sel.filters.push(Filter {
            column: column_index(t, &col)?,
            op,
            values: params
                .array("whereValues")
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            numeric: false,
        });
    }
    match params.get("whereFilters") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, f) in items.iter().enumerate() {
                let col = f.get("column").and_then(scalar_string).ok_or_else(|| {
                    ApiError::validation(format!(
                        "Invalid request:\n - whereFilters[{i}][column]: \"This field is missing.\""
                    ))
                })?;
                let op_name = f
                    .get("operator")
                    .and_then(scalar_string)
                    .unwrap_or_else(|| "eq".into());
                let op = Op::parse(&op_name).ok_or_else(|| {
                    ApiError::validation(format!("Invalid where operator {op_name}"))
                })?;
                let values: Vec<Vec<u8>> = match f.get("values") {
                    Some(Value::Array(vs)) => vs
                        .iter()
                        .filter_map(scalar_string)
                        .map(String::into_bytes)
                        .collect(),
                    Some(v) => scalar_string(v)
                        .into_iter()
                        .map(String::into_bytes)
                        .collect(),
                    None => {
                        return Err(ApiError::validation(format!(
                            "Invalid request:\n - whereFilters[{i}][values]: \"This field is missing.\""
                        )));
                    }
                };
                let numeric = match f.get("dataType").and_then(scalar_string) {
                    None => false,
                    Some(dt) => match dt.to_ascii_uppercase().as_str() {
                        "INTEGER" | "DOUBLE" | "BIGINT" | "REAL" | "DECIMAL" => true,
                        other => {
                            return Err(ApiError::validation(format!(
                                "Invalid dataType \"{other}\" in whereFilters[{i}]."
                            )));
                        }
                    },
                };
                sel.filters.push(Filter {
                    column: column_index(t, &col)?,
                    op,
                    values,
                    numeric,
                });
            }
        }
        Some(other) => {
            return Err(ApiError::validation(format!(
                "Parameter \"whereFilters\" should be an array, but parameter contains:\n{other}"
            )));
        }
    }
    Ok(sel)
}

fn selected_columns(t: &TableMeta, params: &Params) -> Result<Vec<usize>, ApiError> {
    let names = params.list("columns");
    if names.is_empty() {
        return Ok((0..t.columns.len()).collect());
    }
    names.iter().map(|n| column_index(t, n)).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Export and preview

fn export_async(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    let t = table_meta(app, table_id)?;
    let columns = selected_columns(&t, params)?;
    let selection = parse_selection(&t, params)?;
    let limit = params.int("limit")?.filter(|l| *l > 0).map(|l| l as u64);
    let gzip = params.bool("gzip", false)?;
    let with_timestamp = params.bool("includeInternalTimestamp", false)?;
    let format = params.nonempty("format").unwrap_or_else(|| "rfc".into());
    if format != "rfc" {
        return Err(ApiError::bad_request(
            "storage.tables.validation.invalidFormat",
            format!("Invalid format \"{format}\": the emulator exports only \"rfc\"."),
        ));
    }
    let column_names: Vec<String> = columns.iter().map(|&i| t.columns[i].clone()).collect();
    let export_params = json!({
        "tableName": null,
        "columns": if params.list("columns").is_empty() { json!([]) } else { json!(column_names) },
        "limit": limit,
        "changedSince": selection.changed_since,
        "changedUntil": selection.changed_until,
        "gzipOutput": gzip,
        "format": "rfc",
        "whereFilters": selection.filters.iter().map(|f| json!({
            "column": t.columns[f.column], "operator": format!("{:?}", f.op).to_ascii_lowercase(),
            "values": f.values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect::<Vec<_>>(),
            "numeric": f.numeric,
        })).collect::<Vec<_>>(),
        "fileType": "csv",
        "timezone": null,
        "includeInternalTimestamp": with_timestamp,
    });
    let job = jobs::create(
        app,
        "tableExport",
        Some(table_id),
        json!({"export": export_params, "queue": "main_fast"}),
    );
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, fault| {
        let request = ExportRequest {
            columns,
            selection,
            limit,
            gzip,
            with_timestamp,
            cache_key: export_params.to_string(),
        };
        run_export(app, &tid, request, fault)
    });
    accepted(job)
}

/// What an export job was asked for, validated.
struct ExportRequest {
    columns: Vec<usize>,
    selection: Selection,
    limit: Option<u64>,
    gzip: bool,
    with_timestamp: bool,
    /// Canonical parameters: identical requests on an unchanged table share the exported file.
    cache_key: String,
}

fn run_export(app: &App, table_id: &str, req: ExportRequest, fault: Option<JobFault>) -> JobResult {
    let ExportRequest {
        columns,
        selection,
        limit,
        gzip,
        with_timestamp,
        cache_key,
    } = req;
    let t = app
        .store
        .lock()
        .tables
        .get(table_id)
        .cloned()
        .ok_or_else(|| JobError::from(ApiError::table_not_found(table_id)))?;
    if columns.iter().any(|&c| c >= t.columns.len()) {
        return Err(JobError::new(
            "storage.tables.validation.columnNotExists",
            "A requested column was deleted before the export ran.",
        ));
    }
    let truncate = match fault {
        Some(JobFault::TruncateSlice(n)) => Some(n),
        _ => None,
    };
    if truncate.is_none()
        && let Some(&file_id) = t.export_cache.get(&cache_key)
        && app.store.lock().files.contains_key(&file_id)
    {
        return Ok(json!({"file": {"id": file_id}, "cacheHit": true}));
    }
    let (file_id, blob_base, key) = {
        let mut meta = app.store.lock();
        let id = meta.next_id();
        let (bucket, name) = split_table_id(table_id);
        let key = format!(
            "exp-2/1/table-exports/{}/{name}/{id}.csv",
            bucket.replace('.', "/")
        );
        (id, app.store.new_blob(), key)
    };
    let data = (t.data_gen > 0).then(|| app.store.table_data_path(table_id, t.data_gen));
    let store_root = app.store.root().to_owned();
    let namer = move |i: usize| {
        store_root
            .join("objects")
            .join(format!("{blob_base}-{i:04}"))
    };
    let slices = table::export(table::Export {
        data: data.as_deref(),
        selection,
        columns,
        limit,
        gzip,
        with_timestamp,
        slice_path: &namer,
        truncate_first_slice: truncate,
    })?;
    let now = now_secs();
    let suffix = if gzip { ".gz" } else { "" };
    let mut entries = Vec::new();
    let mut total = 0u64;
    for (i, (path, size)) in slices.iter().enumerate() {
        let slice_key = format!("{key}{i:04}_part_00{suffix}");
        let blob = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        app.store.put_object(
            FILES_BUCKET,
            &slice_key,
            ObjectMeta {
                blob,
                size: *size,
                etag: format!("\"{}\"", uuid::Uuid::new_v4().simple()),
                content_type: Some(if gzip { "application/gzip" } else { "text/csv" }.into()),
                content_disposition: None,
                last_modified: now,
            },
        );
        entries.push(json!({"url": format!("s3://{FILES_BUCKET}/{slice_key}")}));
        total += size;
    }
    let manifest = serde_json::to_vec(&json!({"entries": entries})).unwrap_or_default();
    let manifest_blob = app.store.new_blob();
    super::store::write_atomic(&app.store, &app.store.blob_path(&manifest_blob), &manifest)?;
    app.store.put_object(
        FILES_BUCKET,
        &format!("{key}manifest"),
        ObjectMeta {
            blob: manifest_blob,
            size: manifest.len() as u64,
            etag: format!("\"{}\"", uuid::Uuid::new_v4().simple()),
            content_type: Some("application/json".into()),
            content_disposition: None,
            last_modified: now,
        },
    );
    {
        let mut meta = app.store.lock();
        let access_key_id = Store::issue_access_key(&mut meta);
        meta.files.insert(
            file_id,
            FileMeta {
                id: file_id,
                name: format!("{}.csv{}", table_id, suffix),
                key,
                is_sliced: true,
                is_encrypted: true,
                is_public: false,
                is_permanent: false,
                size_bytes: total,
                tags: vec!["table-export".into()],
                created: now,
                run_id: None,
                access_key_id,
                content_type: "text/csv".into(),
            },
        );
        if truncate.is_none()
            && let Some(t) = meta.tables.get_mut(table_id)
        {
            t.export_cache.insert(cache_key, file_id);
        }
    }
    app.store.persist()?;
    Ok(json!({"file": {"id": file_id}, "cacheHit": false}))
}

async fn preview(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    let t = table_meta(app, table_id)?;
    let limit = match params.int("limit")? {
        None | Some(0) => 100,
        Some(l) if !(0..=1000).contains(&l) => {
            return Err(ApiError::validation(format!(
                "Invalid limit {l}: the maximum for data preview is 1000 rows."
            )));
        }
        Some(l) => l as u64,
    };
    let format = params.nonempty("format").unwrap_or_else(|| "rfc".into());
    if format != "rfc" && format != "json" {
        return Err(ApiError::bad_request(
            "storage.tables.validation.invalidFormat",
            format!("Invalid format \"{format}\": use \"rfc\" or \"json\"."),
        ));
    }
    let columns = selected_columns(&t, params)?;
    let selection = parse_selection(&t, params)?;
    let path = (t.data_gen > 0).then(|| app.store.table_data_path(table_id, t.data_gen));
    let cols = columns.clone();
    let rows = tokio::task::spawn_blocking(move || {
        table::select_rows(path.as_deref(), &selection, &cols, limit)
    })
    .await
    .map_err(|_| ApiError::internal("the preview worker panicked"))?
    .map_err(job_error_to_api)?;
    let names: Vec<&str> = columns.iter().map(|&i| t.columns[i].as_str()).collect();
    if format == "json" {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                Value::Array(
                    r.iter()
                        .zip(&names)
                        .map(|(v, n)| {
                            let s = String::from_utf8_lossy(v);
                            let truncated = s.chars().count() > 16384;
                            let value: String = if truncated {
                                s.chars().take(16384).collect()
                            } else {
                                s.into_owned()
                            };
                            json!({"columnName": n, "value": value, "isTruncated": truncated})
                        })
                        .collect(),
                )
            })
            .collect();
        return ok(json!({"columns": names, "rows": rows}));
    }
    let mut out = rfc_line(names.iter().map(|n| n.as_bytes()));
    for r in &rows {
        out.extend_from_slice(&rfc_line(r.iter().map(Vec::as_slice)));
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
}

// ---------------------------------------------------------------------------------------------------------
// Table changes: update, delete, rows, primary key, columns

fn update_table(app: &App, table_id: &str, params: &Params) -> ApiResult {
    let v = {
        let mut meta = app.store.lock();
        let t = meta
            .tables
            .get_mut(table_id)
            .ok_or_else(|| ApiError::table_not_found(table_id))?;
        if let Some(d) = params.nonempty("displayName") {
            t.display_name = d;
        }
        let t = t.clone();
        table_json(&app.base_url, &meta, &t, true, true)
    };
    persist(app)?;
    ok(v)
}

fn delete_table(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    table_meta(app, table_id)?;
    // Without `async` the (deprecated) synchronous delete answers 204, which the Python client relies on.
    let is_async = params.bool("async", false)?;
    let tid = table_id.to_owned();
    let work = move |app: &App, _: Option<JobFault>| -> JobResult {
        let removed = app.store.lock().tables.remove(&tid);
        if removed.is_none() {
            return Err(ApiError::table_not_found(&tid).into());
        }
        app.store.persist()?;
        let _ = std::fs::remove_dir_all(app.store.table_dir(&tid));
        Ok(Value::Null)
    };
    if is_async {
        let job = jobs::create(app, "tableDrop", Some(table_id), json!({}));
        jobs::spawn(app, &job, Some(table_id.to_owned()), work);
        accepted(job)
    } else {
        work(app, None).map_err(job_error_to_api)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// Replaces a table's data with a new generation written by `write(old, new)`, under the table lock.
fn rewrite_table(
    app: &App,
    table_id: &str,
    write: impl FnOnce(
        Option<&std::path::Path>,
        &std::path::Path,
        &TableMeta,
    ) -> Result<(u64, TableMeta), JobError>,
) -> Result<TableMeta, JobError> {
    let t = app
        .store
        .lock()
        .tables
        .get(table_id)
        .cloned()
        .ok_or_else(|| JobError::from(ApiError::table_not_found(table_id)))?;
    let gen_ = app.store.lock().next_id();
    let old = (t.data_gen > 0).then(|| app.store.table_data_path(table_id, t.data_gen));
    let new_path = app.store.table_data_path(table_id, gen_);
    let (size, mut updated) = match write(old.as_deref(), &new_path, &t) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&new_path);
            return Err(e);
        }
    };
    updated.data_gen = gen_;
    updated.data_size_bytes = size;
    updated.export_cache.clear();
    updated.last_change_date = Some(now_secs());
    app.store
        .lock()
        .tables
        .insert(table_id.to_owned(), updated.clone());
    app.store.persist()?;
    if let Some(old) = old {
        let _ = std::fs::remove_file(old);
    }
    Ok(updated)
}

fn delete_rows(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    let t = table_meta(app, table_id)?;
    let selection = parse_selection(&t, params)?;
    if let Some(f) = selection.filters.iter().find(|f| f.values.is_empty()) {
        return Err(ApiError::bad_request(
            "validation.failed",
            format!(
                "Filter on column \"{}\" has no values.",
                t.columns[f.column]
            ),
        ));
    }
    if selection.is_empty() && !params.bool("allowTruncate", false)? {
        return Err(ApiError::bad_request(
            "storage.tables.validation.unintendedTruncation",
            "No filters have been specified, which will truncate the table, but the `allowTruncate` parameter was not set.",
        ));
    }
    let job = jobs::create(app, "tableRowsDelete", Some(table_id), json!({}));
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        let mut deleted = 0;
        rewrite_table(app, &tid, |old, new, t| {
            let (d, kept, size) = table::delete_rows(old, &selection, new)?;
            deleted = d;
            Ok((
                size,
                TableMeta {
                    rows_count: kept,
                    ..t.clone()
                },
            ))
        })?;
        Ok(json!({"deletedRows": deleted}))
    });
    accepted(job)
}

fn add_primary_key(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    let t = table_meta(app, table_id)?;
    let columns = params.list("columns");
    if columns.is_empty() {
        return Err(ApiError::validation("Parameter \"columns\" is required."));
    }
    for c in &columns {
        if !t.columns.contains(c) {
            return Err(ApiError::bad_request(
                "storage.tables.validation.invalidPrimaryKeyColumns",
                format!("Primary key column \"{c}\" does not exist in the table \"{table_id}\"."),
            ));
        }
    }
    if !t.primary_key.is_empty() {
        return Err(ApiError::bad_request(
            "storage.tables.primaryKeyAlreadyExists",
            format!("The table \"{table_id}\" already has a primary key; remove it first."),
        ));
    }
    let job = jobs::create(
        app,
        "tablePrimaryKeyAdd",
        Some(table_id),
        json!({"columns": columns}),
    );
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        let t = app
            .store
            .lock()
            .tables
            .get(&tid)
            .cloned()
            .ok_or_else(|| JobError::from(ApiError::table_not_found(&tid)))?;
        let key: Vec<usize> = columns
            .iter()
            .filter_map(|c| t.columns.iter().position(|x| x == c))
            .collect();
        let data = (t.data_gen > 0).then(|| app.store.table_data_path(&tid, t.data_gen));
        if table::has_duplicate_keys(data.as_deref(), &key)? {
            return Err(JobError::new(
                "storage.tables.primaryKeyDuplicateValues",
                format!(
                    "Cannot create new primary key, duplicate values in primary key columns ({}).",
                    columns.join(", ")
                ),
            ));
        }
        if let Some(t) = app.store.lock().tables.get_mut(&tid) {
            t.primary_key = columns;
        }
        app.store.persist()?;
        table_result(app, &tid)
    });
    accepted(job)
}

fn remove_primary_key(app: &Arc<App>, table_id: &str) -> ApiResult {
    table_meta(app, table_id)?;
    let job = jobs::create(app, "tablePrimaryKeyDelete", Some(table_id), json!({}));
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        if let Some(t) = app.store.lock().tables.get_mut(&tid) {
            t.primary_key.clear();
        }
        app.store.persist()?;
        table_result(app, &tid)
    });
    accepted(job)
}

fn add_column(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    let t = table_meta(app, table_id)?;
    let name = params
        .nonempty("name")
        .ok_or_else(|| ApiError::validation("Parameter \"name\" is required."))?;
    if table::normalize_column_name(&name) != name {
        return Err(ApiError::bad_request(
            "storage.tables.validation.invalidColumnName",
            format!(
                "Invalid column name \"{name}\": only alphanumeric characters and underscores are allowed."
            ),
        ));
    }
    if t.columns.contains(&name) {
        return Err(ApiError::bad_request(
            "storage.tables.columnAlreadyExists",
            format!("The column \"{name}\" already exists in the table \"{table_id}\"."),
        ));
    }
    let job = jobs::create(app, "tableColumnAdd", Some(table_id), json!({"name": name}));
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        // Stored rows are shorter than the new width and read as "" for the new column: no rewrite needed.
        if let Some(t) = app.store.lock().tables.get_mut(&tid)
            && !t.columns.contains(&name)
        {
            t.columns.push(name);
            t.export_cache.clear();
        }
        app.store.persist()?;
        table_result(app, &tid)
    });
    accepted(job)
}

fn delete_column(app: &Arc<App>, table_id: &str, column: &str, params: &Params) -> ApiResult {
    let t = table_meta(app, table_id)?;
    let index = column_index(&t, column)?;
    if t.primary_key.iter().any(|k| k == column) && !params.bool("force", false)? {
        return Err(ApiError::bad_request(
            "storage.tables.cannotDeletePrimaryKeyColumn",
            format!(
                "The column \"{column}\" is part of the primary key of \"{table_id}\"; remove the key first or use force."
            ),
        ));
    }
    if t.columns.len() == 1 {
        return Err(ApiError::bad_request(
            "storage.tables.cannotDeleteLastColumn",
            "A table must keep at least one column.",
        ));
    }
    let job = jobs::create(
        app,
        "tableColumnDelete",
        Some(table_id),
        json!({"name": column}),
    );
    let tid = table_id.to_owned();
    let column = column.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        rewrite_table(app, &tid, |old, new, t| {
            let size = table::drop_column(old, index, new)?;
            let mut t = t.clone();
            t.columns.retain(|c| c != &column);
            t.primary_key.retain(|c| c != &column);
            Ok((size, t))
        })?;
        table_result(app, &tid)
    });
    accepted(job)
}

// ---------------------------------------------------------------------------------------------------------
// Table metadata

/// Adds or updates (by provider and key) metadata of a table and its columns; answers 201 with
/// `{metadata, columnsMetadata}` (the JSON variant's shape, also for form bodies).
fn post_table_metadata(app: &App, table_id: &str, params: &Params) -> ApiResult {
    let provider = params.nonempty("provider").ok_or_else(|| {
        ApiError::bad_request(
            "storage.metadata.validation",
            "Parameter \"provider\" is required.",
        )
    })?;
    let entry_of = |m: &Value, i: usize| -> Result<(String, String), ApiError> {
        let key = m
            .get("key")
            .and_then(scalar_string)
            .filter(|k| !k.is_empty());
        let value = m.get("value").and_then(scalar_string);
        match (key, value) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(ApiError::bad_request(
                "storage.metadata.validation",
                format!("Metadata entry {i} needs a non-empty \"key\" and a \"value\"."),
            )),
        }
    };
    let table_entries: Vec<(String, String)> = match params.get("metadata") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, m)| entry_of(m, i))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let mut column_entries: Vec<(String, String, String)> = Vec::new();
    if let Some(Value::Object(cols)) = params.get("columnsMetadata") {
        for (name, items) in cols {
            for (i, m) in items.as_array().into_iter().flatten().enumerate() {
                let column = m
                    .get("columnName")
                    .and_then(scalar_string)
                    .unwrap_or_else(|| name.clone());
                let (k, v) = entry_of(m, i)?;
                column_entries.push((column, k, v));
            }
        }
    } else if let Some(Value::Array(items)) = params.get("columnsMetadata") {
        for (i, m) in items.iter().enumerate() {
            for m in m.as_array().into_iter().flatten() {
                let column = m
                    .get("columnName")
                    .and_then(scalar_string)
                    .unwrap_or_default();
                let (k, v) = entry_of(m, i)?;
                column_entries.push((column, k, v));
            }
        }
    }
    let (metadata, columns_metadata) = {
        let mut meta = app.store.lock();
        let ids: Vec<u64> = (0..table_entries.len() + column_entries.len())
            .map(|_| meta.next_id())
            .collect();
        let t = meta
            .tables
            .get_mut(table_id)
            .ok_or_else(|| ApiError::table_not_found(table_id))?;
        if let Some((c, _, _)) = column_entries
            .iter()
            .find(|(c, _, _)| !t.columns.contains(c))
        {
            return Err(ApiError::bad_request(
                "storage.tables.validation.columnNotExists",
                format!("Column \"{c}\" does not exist in the table \"{table_id}\"."),
            ));
        }
        let stamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
        let upsert = |list: &mut Vec<Value>, id: u64, key: &str, value: &str| {
            let entry = json!({"id": id.to_string(), "key": key, "value": value, "provider": provider, "timestamp": stamp});
            match list
                .iter_mut()
                .find(|e| e["key"] == key && e["provider"] == provider.as_str())
            {
                Some(e) => {
                    e["value"] = json!(value);
                    e["timestamp"] = json!(stamp);
                }
                None => list.push(entry),
            }
        };
        let mut ids = ids.into_iter();
        for (k, v) in &table_entries {
            upsert(&mut t.metadata, ids.next().unwrap_or(0), k, v);
        }
        for (c, k, v) in &column_entries {
            upsert(
                t.column_metadata.entry(c.clone()).or_default(),
                ids.next().unwrap_or(0),
                k,
                v,
            );
        }
        (t.metadata.clone(), t.column_metadata.clone())
    };
    persist(app)?;
    Ok(json_response(
        StatusCode::CREATED,
        json!({"metadata": metadata, "columnsMetadata": columns_metadata}),
    ))
}

fn delete_table_metadata(app: &App, table_id: &str, metadata_id: &str) -> ApiResult {
    {
        let mut meta = app.store.lock();
        let t = meta
            .tables
            .get_mut(table_id)
            .ok_or_else(|| ApiError::table_not_found(table_id))?;
        let before = t.metadata.len();
        t.metadata.retain(|e| e["id"] != metadata_id);
        if t.metadata.len() == before {
            return Err(ApiError::not_found(
                "storage.metadata.notFound",
                format!("Metadata \"{metadata_id}\" of the table \"{table_id}\" was not found."),
            ));
        }
    }
    persist(app)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------------------
// Files

/// A plain-HTTP URL for an object that our S3 front accepts (presigned style: the access key in the query).
fn object_url(app: &App, key: &str, access_key_id: &str) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let path: String = key.split('/').map(enc).collect::<Vec<_>>().join("/");
    format!(
        "{}/{FILES_BUCKET}/{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Expires=3600&X-Amz-Signature=emulator",
        app.base_url,
        enc(&format!(
            "{access_key_id}/20000101/{REGION}/s3/aws4_request"
        ))
    )
}

fn credentials_json(meta: &Meta, access_key_id: &str) -> Value {
    match meta.access_keys.get(access_key_id) {
        Some(k) => json!({
            "AccessKeyId": access_key_id,
            "SecretAccessKey": k.secret,
            "SessionToken": k.session_token,
            "Expiration": iso_colon(k.expiration),
        }),
        None => Value::Null,
    }
}

fn file_json(app: &App, f: &FileMeta, federation: bool, upload: bool) -> Value {
    let meta = app.store.lock();
    let url_key = if f.is_sliced {
        format!("{}manifest", f.key)
    } else {
        f.key.clone()
    };
    let mut v = json!({
        "id": f.id,
        "created": iso(f.created),
        "isPublic": f.is_public,
        "isSliced": f.is_sliced,
        "isEncrypted": f.is_encrypted,
        "name": f.name,
        "fileType": if f.name.contains(".csv") { "csv" } else { "file" },
        "url": object_url(app, &url_key, &f.access_key_id),
        "provider": "aws",
        "region": REGION,
        "sizeBytes": f.size_bytes,
        "tags": f.tags,
        "maxAgeDays": if f.is_permanent { Value::Null } else { json!(15) },
        "runId": f.run_id,
        "runIds": f.run_id.iter().collect::<Vec<_>>(),
        "creatorToken": {"id": 1, "description": "emulator token"},
        "contentType": f.content_type,
    });
    if federation {
        v["s3Path"] = json!({"bucket": FILES_BUCKET, "key": f.key});
        v["credentials"] = credentials_json(&meta, &f.access_key_id);
    }
    if upload {
        let mut params = json!({
            "key": f.key,
            "bucket": FILES_BUCKET,
            "acl": "private",
            "credentials": credentials_json(&meta, &f.access_key_id),
        });
        if f.is_encrypted {
            params["x-amz-server-side-encryption"] = json!("AES256");
        }
        v["uploadParams"] = params;
    }
    v
}

fn prepare_file(app: &App, params: &Params) -> ApiResult {
    let name = params.nonempty("name").ok_or_else(|| {
        ApiError::bad_request(
            "storage.files.validation",
            "Parameter \"name\" is required.",
        )
    })?;
    let is_sliced = params.bool("isSliced", false)?;
    let f = {
        let mut meta = app.store.lock();
        let id = meta.next_id();
        let access_key_id = Store::issue_access_key(&mut meta);
        let now = now_secs();
        let day = chrono::DateTime::from_timestamp(now, 0)
            .unwrap_or_default()
            .format("%Y/%m/%d")
            .to_string();
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let f = FileMeta {
            id,
            name: name.clone(),
            key: format!("exp-15/1/files/{day}/{id}.{safe}"),
            is_sliced,
            is_encrypted: params.bool("isEncrypted", true)?,
            is_public: params.bool("isPublic", false)?,
            is_permanent: params.bool("isPermanent", false)?,
            size_bytes: params.int("sizeBytes")?.unwrap_or(0).max(0) as u64,
            tags: params.array("tags"),
            created: now,
            run_id: None,
            access_key_id,
            content_type: params
                .nonempty("contentType")
                .unwrap_or_else(|| "application/octet-stream".into()),
        };
        meta.files.insert(id, f.clone());
        f
    };
    persist(app)?;
    Ok(json_response(
        StatusCode::CREATED,
        file_json(app, &f, false, true),
    ))
}

/// The file, with a newly issued access key when its key has expired (as asking Storage again for federated
/// credentials gives fresh ones).
fn fresh_credentials(app: &App, id: &str) -> Result<FileMeta, ApiError> {
    let f = find_file(app, id)?;
    let renewed = {
        let mut meta = app.store.lock();
        let expired = meta
            .access_keys
            .get(&f.access_key_id)
            .is_none_or(|k| k.expiration <= now_secs());
        if !expired {
            return Ok(f);
        }
        let key = Store::issue_access_key(&mut meta);
        let file = meta.files.get_mut(&f.id).ok_or_else(|| {
            ApiError::not_found("storage.files.notFound", format!("File {id} not found"))
        })?;
        file.access_key_id = key;
        file.clone()
    };
    persist(app)?;
    Ok(renewed)
}

fn find_file(app: &App, id: &str) -> Result<FileMeta, ApiError> {
    id.parse::<u64>()
        .ok()
        .and_then(|id| app.store.lock().files.get(&id).cloned())
        .ok_or_else(|| {
            ApiError::not_found("storage.files.notFound", format!("File {id} not found"))
        })
}

fn list_files(app: &App, params: &Params) -> ApiResult {
    let limit = params.int("limit")?.unwrap_or(100).clamp(0, 1000) as usize;
    let offset = params.int("offset")?.unwrap_or(0).max(0) as usize;
    let tags = params.array("tags");
    let since_id = params.int("sinceId")?;
    let max_id = params.int("maxId")?;
    let files: Vec<FileMeta> = {
        let meta = app.store.lock();
        meta.files
            .values()
            .rev()
            .filter(|f| tags.iter().all(|t| f.tags.contains(t)))
            .filter(|f| since_id.is_none_or(|s| f.id as i64 > s))
            .filter(|f| max_id.is_none_or(|m| f.id as i64 <= m))
            .skip(offset)
            .take(limit)
            .cloned()
            .collect()
    };
    ok(Value::Array(
        files
            .iter()
            .map(|f| file_json(app, f, false, false))
            .collect(),
    ))
}

fn delete_file(app: &App, id: &str) -> ApiResult {
    let f = find_file(app, id)?;
    let blobs: Vec<String> = {
        let mut meta = app.store.lock();
        meta.files.remove(&f.id);
        let prefix = format!("{FILES_BUCKET}/{}", f.key);
        let keys: Vec<String> = meta
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| meta.objects.remove(k))
            .map(|o| o.blob)
            .collect()
    };
    persist(app)?;
    for b in blobs {
        let _ = std::fs::remove_file(app.store.blob_path(&b));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn edit_file(app: &App, id: &str, f: impl FnOnce(&mut FileMeta)) -> ApiResult {
    let file = find_file(app, id)?;
    {
        let mut meta = app.store.lock();
        if let Some(m) = meta.files.get_mut(&file.id) {
            f(m);
        }
    }
    persist(app)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
