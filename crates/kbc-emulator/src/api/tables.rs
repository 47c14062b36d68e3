//! Tables: the JSON Storage shows for them, and changes other than loads: update, delete, rows delete,
//! primary key, columns, metadata. The router of `tables/…` also sends imports to `loads` and exports and
//! previews to `export`.

use super::branches::in_scope;
use super::buckets::bucket_json;
use super::export::{column_index, parse_selection};
use super::loads::{table_result, typed_column};
use super::{ApiResult, Call, accepted, export, json_response, loads, ok, php_map};
use crate::app::App;
use crate::body::{Params, as_bool, scalar_string};
use crate::error::{ApiError, JobError};
use crate::faults::JobFault;
use crate::jobs::{self, JobResult};
use crate::store::{Meta, TableRecord};
use crate::table;
use crate::timefmt::{iso, now_secs};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The `tables/…` routes.
pub(super) async fn route(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    let (app, params) = (call.app, &call.params);
    Some(match (&call.method, rest) {
        (&Method::GET, []) => list_tables(app, params, call.branch),
        (&Method::GET, [id]) => get_table(app, id),
        (&Method::PUT, [id]) => update_table(app, id, params),
        (&Method::DELETE, [id]) => delete_table(app, id, params),
        (&Method::POST, [_]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "notAllowed",
            "POST tables/{id} does not exist: set a primary key with POST tables/{id}/primary-key {\"columns\":[..]}, rename with PUT tables/{id} {\"displayName\"}.",
        )),
        (&Method::POST, [id, "import-async"]) => loads::import_async(app, id, params),
        (&Method::POST, [id, "import"]) => loads::import_sync(app, id, params).await,
        (&Method::POST, [id, "export-async"]) => export::export_async(app, id, params),
        (&Method::GET, [id, "data-preview"]) => export::preview(app, id, params).await,
        (&Method::POST, [id, "primary-key"]) => add_primary_key(app, id, params),
        (&Method::DELETE, [id, "primary-key"]) => remove_primary_key(app, id),
        (&Method::DELETE, [id, "rows"]) => delete_rows(app, id, params),
        (&Method::POST, [id, "columns"]) => add_column(app, id, params),
        (&Method::DELETE, [id, "columns", column]) => delete_column(app, id, column, params),
        (&Method::GET, [id, "metadata"]) => table_meta(app, id).and_then(|t| ok(json!(t.metadata))),
        (&Method::POST, [id, "metadata"]) => post_table_metadata(app, id, params),
        (&Method::DELETE, [id, "metadata", metadata_id]) => {
            delete_table_metadata(app, id, metadata_id)
        }
        _ => return None,
    })
}

/// `GET tables`: the tables of the request's branch scope.
fn list_tables(app: &App, params: &Params, branch: Option<u64>) -> ApiResult {
    let meta = app.store.read();
    let (cols, bucket) = list_includes(params);
    ok(Value::Array(
        meta.tables
            .values()
            .filter(|t| in_scope(&t.id, branch))
            .map(|t| table_json(&app.base_url, &meta, t, cols, bucket))
            .collect(),
    ))
}

/// `GET tables/{id}`.
fn get_table(app: &App, id: &str) -> ApiResult {
    let meta = app.store.read();
    let t = meta
        .tables
        .get(id)
        .ok_or_else(|| ApiError::table_not_found(id))?;
    ok(table_json(&app.base_url, &meta, t, true, true))
}

/// Which parts a table listing includes: `include=columns` and/or `buckets` (no `include`: the buckets).
pub(super) fn list_includes(params: &Params) -> (bool, bool) {
    match params.0.get("include") {
        None => (false, true),
        Some(v) => {
            let include = scalar_string(v).unwrap_or_default();
            (include.contains("columns"), include.contains("buckets"))
        }
    }
}

pub(super) fn table_json(
    base: &str,
    meta: &Meta,
    t: &TableRecord,
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
        "isTyped": t.definition.is_some(),
        "tableType": "table",
        "timestampType": "MANAGED",
        "path": format!("KBC_EMULATOR.{}", t.id),
        "metadata": t.metadata,
        "columnMetadata": php_map(json!(t.column_metadata)),
    });
    if with_columns {
        v["columns"] = json!(t.columns);
    }
    if let Some(d) = &t.definition {
        v["definition"] = d.clone();
    }
    if with_bucket && let Some(b) = meta.buckets.get(&t.bucket_id) {
        v["bucket"] = bucket_json(base, meta, b);
    }
    v
}

/// The timestamp of a metadata entry (`2017-02-13 23:36:10`, as the metadata routes show it).
fn metadata_stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn metadata_entry(id: u64, key: &str, value: &str, provider: &str, stamp: &str) -> Value {
    json!({"id": id.to_string(), "key": key, "value": value, "provider": provider, "timestamp": stamp})
}

/// The basetype Snowflake reports for a native type: numbers without decimals are INTEGER (`NUMBER` with no
/// scale defaults to `38,0`), other numbers NUMERIC, and unknown types STRING.
pub(super) fn basetype_of(native: &str, length: Option<&str>) -> &'static str {
    let native = native.trim().to_ascii_uppercase();
    let name = native.split('(').next().unwrap_or("").trim();
    match name {
        "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" => "INTEGER",
        "NUMBER" | "DECIMAL" | "NUMERIC" => {
            let scale = length.and_then(|l| l.split(',').nth(1)).map(str::trim);
            match scale {
                None | Some("0") => "INTEGER",
                Some(_) => "NUMERIC",
            }
        }
        "FLOAT" | "FLOAT4" | "FLOAT8" | "DOUBLE" | "DOUBLE PRECISION" | "REAL" => "FLOAT",
        "BOOLEAN" => "BOOLEAN",
        "DATE" => "DATE",
        "TIMESTAMP" | "TIMESTAMP_NTZ" | "TIMESTAMP_LTZ" | "TIMESTAMP_TZ" | "DATETIME" => {
            "TIMESTAMP"
        }
        _ => "STRING",
    }
}

/// The Snowflake type (and length) a column given only a basetype gets, as the real backend answers
/// (e.g. NUMERIC becomes `NUMBER` `38,9`).
pub(super) fn native_of_basetype(basetype: &str) -> (&'static str, Option<&'static str>) {
    match basetype {
        "INTEGER" => ("NUMBER", Some("38,0")),
        "NUMERIC" => ("NUMBER", Some("38,9")),
        "FLOAT" => ("FLOAT", None),
        "BOOLEAN" => ("BOOLEAN", None),
        "DATE" => ("DATE", None),
        "TIMESTAMP" => ("TIMESTAMP_NTZ", Some("9")),
        _ => ("VARCHAR", Some("16777216")),
    }
}

/// The `KBC.datatype.*` metadata Storage itself (provider `storage`) keeps for a typed column, in the order
/// the real API lists it: type, nullable (`"1"` or `""`, PHP's booleans as strings), basetype, then length
/// and default when the definition has them. `column` is an entry of `definition.columns`.
fn datatype_entries(column: &Value) -> Vec<(&'static str, String)> {
    let d = &column["definition"];
    let text = |v: &Value| scalar_string(v).filter(|s| !s.is_empty());
    let mut out = vec![
        (
            "KBC.datatype.type",
            d.get("type").and_then(text).unwrap_or_default(),
        ),
        (
            "KBC.datatype.nullable",
            if d.get("nullable").and_then(as_bool).unwrap_or(true) {
                "1".to_owned()
            } else {
                String::new()
            },
        ),
        (
            "KBC.datatype.basetype",
            column.get("basetype").and_then(text).unwrap_or_default(),
        ),
    ];
    if let Some(length) = d.get("length").and_then(text) {
        out.push(("KBC.datatype.length", length));
    }
    if let Some(default) = d.get("default").and_then(scalar_string) {
        out.push(("KBC.datatype.default", default));
    }
    out
}

/// Replaces the `storage`-provided `KBC.datatype.*` metadata of a column of a typed table.
pub(super) fn set_datatype_metadata(meta: &mut Meta, table_id: &str, column: &Value) {
    let Some(name) = column
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return;
    };
    let entries = datatype_entries(column);
    let ids: Vec<u64> = entries.iter().map(|_| meta.next_id()).collect();
    let stamp = metadata_stamp();
    let Some(t) = meta.tables.get_mut(table_id) else {
        return;
    };
    let list = t.column_metadata.entry(name).or_default();
    list.retain(|e| {
        !(e["provider"] == "storage"
            && e["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("KBC.datatype.")))
    });
    for ((key, value), id) in entries.iter().zip(ids) {
        list.push(metadata_entry(id, key, value, "storage", &stamp));
    }
}

pub(super) fn tables_of(
    base: &str,
    meta: &Meta,
    bucket_id: &str,
    cols: bool,
    bucket: bool,
) -> Value {
    Value::Array(
        meta.tables
            .values()
            .filter(|t| t.bucket_id == bucket_id)
            .map(|t| table_json(base, meta, t, cols, bucket))
            .collect(),
    )
}

pub(super) fn table_meta(app: &App, id: &str) -> Result<TableRecord, ApiError> {
    app.store
        .read()
        .tables
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::table_not_found(id))
}

fn update_table(app: &App, table_id: &str, params: &Params) -> ApiResult {
    let v = app.store.try_update(|meta| {
        let t = meta
            .tables
            .get_mut(table_id)
            .ok_or_else(|| ApiError::table_not_found(table_id))?;
        if let Some(d) = params.nonempty("displayName") {
            t.display_name = d;
        }
        let t = t.clone();
        Ok::<_, ApiError>(table_json(&app.base_url, meta, &t, true, true))
    })?;
    ok(v)
}

fn delete_table(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    table_meta(app, table_id)?;
    // Without `async` the (deprecated) synchronous delete answers 204, which the Python client relies on.
    let is_async = params.bool("async", false)?;
    let tid = table_id.to_owned();
    let work = move |app: &App, _: Option<JobFault>| -> JobResult {
        app.store
            .try_update(|meta| match meta.tables.remove(&tid) {
                Some(_) => Ok(()),
                None => Err(JobError::from(ApiError::table_not_found(&tid))),
            })?;
        let _ = std::fs::remove_dir_all(app.store.table_dir(&tid));
        Ok(Value::Null)
    };
    if is_async {
        let job = jobs::create(app, "tableDrop", Some(table_id), json!({}))?;
        jobs::spawn(app, &job, Some(table_id.to_owned()), work);
        accepted(&job)
    } else {
        work(app, None).map_err(ApiError::from_job)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// Replaces a table's data with a new generation written by `write(old, new)`, under the table lock.
fn rewrite_table(
    app: &App,
    table_id: &str,
    write: impl FnOnce(Option<&Path>, &Path, &TableRecord) -> Result<(u64, TableRecord), JobError>,
) -> Result<TableRecord, JobError> {
    let t = app.table_snapshot(table_id)?;
    let gen_ = app.store.next_id();
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
    app.store.update(|meta| {
        meta.tables.insert(table_id.to_owned(), updated.clone());
    })?;
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
    let job = jobs::create(app, "tableRowsDelete", Some(table_id), json!({}))?;
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        let mut deleted = 0;
        rewrite_table(app, &tid, |old, new, t| {
            let (d, kept, size) = table::delete_rows(old, &selection, new)?;
            deleted = d;
            Ok((
                size,
                TableRecord {
                    rows_count: kept,
                    ..t.clone()
                },
            ))
        })?;
        Ok(json!({"deletedRows": deleted}))
    });
    accepted(&job)
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
    )?;
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        let t = app
            .store
            .read()
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
        app.store.update(|meta| {
            if let Some(t) = meta.tables.get_mut(&tid) {
                t.primary_key = columns;
            }
        })?;
        table_result(app, &tid)
    });
    accepted(&job)
}

fn remove_primary_key(app: &Arc<App>, table_id: &str) -> ApiResult {
    table_meta(app, table_id)?;
    let job = jobs::create(app, "tablePrimaryKeyDelete", Some(table_id), json!({}))?;
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        app.store.update(|meta| {
            if let Some(t) = meta.tables.get_mut(&tid) {
                t.primary_key.clear();
            }
        })?;
        table_result(app, &tid)
    });
    accepted(&job)
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
    // A typed table's new column gets a definition (from `definition` and/or `basetype`, else a string).
    let typed = match &t.definition {
        Some(_) => {
            let mut c = json!({});
            for key in ["definition", "basetype"] {
                if let Some(v) = params.get(key).filter(|v| !v.is_null()) {
                    c[key] = v.clone();
                }
            }
            if c.as_object().is_some_and(|o| o.is_empty()) {
                c["basetype"] = json!("STRING");
            }
            Some(typed_column("the new column", &name, &c)?)
        }
        None => None,
    };
    let job = jobs::create(app, "tableColumnAdd", Some(table_id), json!({"name": name}))?;
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        // Stored rows are shorter than the new width and read as "" for the new column: no rewrite needed.
        app.store.update(|meta| {
            if let Some(t) = meta.tables.get_mut(&tid)
                && !t.columns.contains(&name)
            {
                t.columns.push(name);
                t.export_cache.clear();
                if let (Some(c), Some(d)) = (&typed, t.definition.as_mut())
                    && let Some(cols) = d.get_mut("columns").and_then(Value::as_array_mut)
                {
                    cols.push(c.clone());
                }
                if let Some(c) = &typed {
                    set_datatype_metadata(meta, &tid, c);
                }
            }
        })?;
        table_result(app, &tid)
    });
    accepted(&job)
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
    )?;
    let tid = table_id.to_owned();
    let column = column.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        rewrite_table(app, &tid, |old, new, t| {
            let size = table::drop_column(old, index, new)?;
            let mut t = t.clone();
            t.columns.retain(|c| c != &column);
            t.primary_key.retain(|c| c != &column);
            // The column's metadata and definition go with it.
            t.column_metadata.remove(&column);
            if let Some(cols) = t
                .definition
                .as_mut()
                .and_then(|d| d.get_mut("columns"))
                .and_then(Value::as_array_mut)
            {
                cols.retain(|c| c["name"] != column.as_str());
            }
            Ok((size, t))
        })?;
        table_result(app, &tid)
    });
    accepted(&job)
}

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
    let (metadata, columns_metadata) = app.store.try_update(|meta| {
        let t = meta
            .tables
            .get(table_id)
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
        let ids: Vec<u64> = (0..table_entries.len() + column_entries.len())
            .map(|_| meta.next_id())
            .collect();
        let Some(t) = meta.tables.get_mut(table_id) else {
            return Err(ApiError::table_not_found(table_id));
        };
        let stamp = metadata_stamp();
        let upsert = |list: &mut Vec<Value>, id: u64, key: &str, value: &str| {
            let entry = metadata_entry(id, key, value, &provider, &stamp);
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
        Ok((t.metadata.clone(), t.column_metadata.clone()))
    })?;
    Ok(json_response(
        StatusCode::CREATED,
        json!({"metadata": metadata, "columnsMetadata": php_map(json!(columns_metadata))}),
    ))
}

fn delete_table_metadata(app: &App, table_id: &str, metadata_id: &str) -> ApiResult {
    app.store.try_update(|meta| {
        let t = meta
            .tables
            .get_mut(table_id)
            .ok_or_else(|| ApiError::table_not_found(table_id))?;
        if !t.metadata.iter().any(|e| e["id"] == metadata_id) {
            return Err(ApiError::not_found(
                "storage.metadata.notFound",
                format!("Metadata \"{metadata_id}\" of the table \"{table_id}\" was not found."),
            ));
        }
        t.metadata.retain(|e| e["id"] != metadata_id);
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
