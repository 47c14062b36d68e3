//! Buckets: list, create (with the `c-` prefix), detail, update, delete (`force`, `async`); the router of
//! `buckets/…` also sends table creation in a bucket to `loads`.

use super::branches::{in_scope, mark_bucket};
use super::tables::{list_includes, tables_of};
use super::{ApiResult, Call, DEFAULT_BRANCH_ID, accepted, json_response, loads, ok};
use crate::app::App;
use crate::body::Params;
use crate::error::ApiError;
use crate::faults::JobFault;
use crate::jobs::{self, JobResult};
use crate::store::{BucketRecord, Meta, TableRecord};
use crate::timefmt::{iso, now_secs};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::sync::Arc;

/// The `buckets/…` routes.
pub(super) async fn route(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    let (app, params) = (call.app, &call.params);
    Some(match (&call.method, rest) {
        (&Method::GET, []) => list_buckets(app, call.branch),
        (&Method::POST, []) => create_bucket(app, params, call.branch),
        (&Method::GET, [id]) => get_bucket(app, id, params),
        (&Method::PUT, [id]) => update_bucket(app, id, params),
        (&Method::DELETE, [id]) => delete_bucket(app, id, params),
        (&Method::GET, [id, "tables"]) => list_tables(app, id, params),
        (&Method::POST, [id, "tables-async"]) => loads::create_table_async(app, id, params),
        (&Method::POST, [id, "tables-definition"]) => {
            loads::create_table_definition(app, id, params)
        }
        (&Method::POST, [id, "tables"]) => loads::create_table_sync(app, id, params).await,
        _ => return None,
    })
}

/// `GET buckets`: the buckets of the request's branch scope.
fn list_buckets(app: &App, branch: Option<u64>) -> ApiResult {
    let meta = app.store.read();
    ok(Value::Array(
        meta.buckets
            .values()
            .filter(|b| in_scope(&b.id, branch))
            .map(|b| bucket_json(&app.base_url, &meta, b))
            .collect(),
    ))
}

/// `GET buckets/{id}` (`include=columns` adds its tables with their columns).
fn get_bucket(app: &App, id: &str, params: &Params) -> ApiResult {
    let meta = app.store.read();
    let b = meta
        .buckets
        .get(id)
        .ok_or_else(|| ApiError::bucket_not_found(id))?;
    let mut v = bucket_json(&app.base_url, &meta, b);
    if params.str("include").is_some_and(|i| i.contains("columns")) {
        v["tables"] = tables_of(&app.base_url, &meta, id, true, false);
    }
    ok(v)
}

/// `GET buckets/{id}/tables`.
fn list_tables(app: &App, id: &str, params: &Params) -> ApiResult {
    let meta = app.store.read();
    if !meta.buckets.contains_key(id) {
        return Err(ApiError::bucket_not_found(id));
    }
    let (cols, bucket) = list_includes(params);
    ok(tables_of(&app.base_url, &meta, id, cols, bucket))
}

pub(super) fn bucket_json(base: &str, meta: &Meta, b: &BucketRecord) -> Value {
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

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 96
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Inserts a bucket `stage.c-name`; the error when it exists or the name is invalid.
pub(super) fn insert_bucket(
    meta: &mut Meta,
    stage: &str,
    name: &str,
    display: Option<String>,
    description: String,
) -> Result<BucketRecord, ApiError> {
    insert_bucket_in(meta, stage, name, display, description, None)
}

/// Whether the stack has `disable-legacy-bucket-prefix`: bucket names are kept as sent, without `c-`.
pub(super) fn keeps_bucket_names(meta: &Meta) -> bool {
    meta.project
        .features
        .iter()
        .any(|f| f == "disable-legacy-bucket-prefix")
}

/// [`insert_bucket`] in a development branch with branch storage (`branch`), or production (`None`).
/// The server adds `c-` to the name unless the stack has `disable-legacy-bucket-prefix`.
fn insert_bucket_in(
    meta: &mut Meta,
    stage: &str,
    name: &str,
    display: Option<String>,
    description: String,
    branch: Option<u64>,
) -> Result<BucketRecord, ApiError> {
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
    let full = if keeps_bucket_names(meta) {
        name.to_owned()
    } else {
        format!("c-{name}")
    };
    let id = mark_bucket(&format!("{stage}.{full}"), branch);
    if meta.buckets.contains_key(&id) {
        return Err(ApiError::bad_request(
            "storage.buckets.alreadyExists",
            format!("The bucket \"{id}\" already exists."),
        ));
    }
    let b = BucketRecord {
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

fn create_bucket(app: &App, params: &Params, branch: Option<u64>) -> ApiResult {
    let name = params.nonempty("name").ok_or_else(|| {
        ApiError::bad_request(
            "storage.buckets.validation",
            "Parameter \"name\" is required.",
        )
    })?;
    let stage = params.nonempty("stage").unwrap_or_else(|| "in".into());
    let v = app.store.try_update(|meta| {
        let b = insert_bucket_in(
            meta,
            &stage,
            &name,
            params.nonempty("displayName"),
            params.str("description").unwrap_or_default(),
            branch,
        )?;
        Ok::<_, ApiError>(bucket_json(&app.base_url, meta, &b))
    })?;
    Ok(json_response(StatusCode::CREATED, v))
}

fn update_bucket(app: &App, id: &str, params: &Params) -> ApiResult {
    let v = app.store.try_update(|meta| {
        let b = meta
            .buckets
            .get_mut(id)
            .ok_or_else(|| ApiError::bucket_not_found(id))?;
        if let Some(d) = params.nonempty("displayName") {
            b.display_name = d;
        }
        b.last_change_date = Some(now_secs());
        let b = b.clone();
        Ok::<_, ApiError>(bucket_json(&app.base_url, meta, &b))
    })?;
    ok(v)
}

fn delete_bucket(app: &Arc<App>, id: &str, params: &Params) -> ApiResult {
    let force = params.bool("force", false)?;
    let is_async = params.bool("async", false)?;
    {
        let meta = app.store.read();
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
        let gone: Vec<TableRecord> = app.store.update(|meta| {
            let ids: Vec<String> = meta
                .tables
                .values()
                .filter(|t| t.bucket_id == bucket_id)
                .map(|t| t.id.clone())
                .collect();
            meta.buckets.remove(&bucket_id);
            ids.iter().filter_map(|t| meta.tables.remove(t)).collect()
        })?;
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
        )?;
        jobs::spawn(app, &job, None, work);
        accepted(&job)
    } else {
        work(app, None).map_err(|e| ApiError::internal(e.message))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}
