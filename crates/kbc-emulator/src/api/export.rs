//! Reading tables: row selection (`whereFilters`, the deprecated `whereColumn` trio, `changedSince`/
//! `changedUntil`), `export-async` (sliced files, cached), `data-preview`, and the dumping helper of the
//! library API.

use super::branches::unmark;
use super::tables::table_meta;
use super::{ApiResult, accepted, ok};
use crate::app::App;
use crate::body::{Params, scalar_string};
use crate::error::{ApiError, JobError, split_table_id, worker_failed};
use crate::faults::JobFault;
use crate::jobs::{self, JobResult};
use crate::store::{FILES_BUCKET, FileRecord, ObjectMeta, TableRecord};
use crate::table::{self, Filter, Op, Selection};
use crate::timefmt::{now_secs, parse_point};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) fn column_index(t: &TableRecord, name: &str) -> Result<usize, ApiError> {
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

pub(super) fn parse_selection(t: &TableRecord, params: &Params) -> Result<Selection, ApiError> {
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

pub(super) fn selected_columns(t: &TableRecord, params: &Params) -> Result<Vec<usize>, ApiError> {
    let names = params.list("columns");
    if names.is_empty() {
        return Ok((0..t.columns.len()).collect());
    }
    names.iter().map(|n| column_index(t, n)).collect()
}

pub(super) fn export_async(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    let t = table_meta(app, table_id)?;
    let columns = selected_columns(&t, params)?;
    let selection = parse_selection(&t, params)?;
    let limit = params.int("limit")?.filter(|l| *l > 0).map(|l| l as u64);
    if params.get("orderBy").is_some() {
        return Err(ApiError::validation(
            "orderBy is supported by the emulator for data-preview only, not for exports (they stream the table unsorted).",
        ));
    }
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
    )?;
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
    accepted(&job)
}

/// What an export job was asked for, validated.
pub(super) struct ExportRequest {
    pub(super) columns: Vec<usize>,
    pub(super) selection: Selection,
    pub(super) limit: Option<u64>,
    pub(super) gzip: bool,
    pub(super) with_timestamp: bool,
    /// Canonical parameters: identical requests on an unchanged table share the exported file.
    pub(super) cache_key: String,
}

pub(super) fn run_export(
    app: &App,
    table_id: &str,
    req: ExportRequest,
    fault: Option<JobFault>,
) -> JobResult {
    let ExportRequest {
        columns,
        selection,
        limit,
        gzip,
        with_timestamp,
        cache_key,
    } = req;
    let t = app.table_snapshot(table_id)?;
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
        && app.store.read().files.contains_key(&file_id)
    {
        return Ok(json!({"file": {"id": file_id}, "cacheHit": true}));
    }
    let file_id = app.store.next_id();
    let blob_base = app.store.new_blob();
    let (bucket, name) = split_table_id(table_id);
    let key = format!(
        "exp-2/1/table-exports/{}/{name}/{file_id}.csv",
        // Keys never carry branch markers: answers are unmarked, keys must stay what they say.
        unmark(bucket).replace('.', "/")
    );
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
    let mut objects = Vec::new();
    let mut total = 0u64;
    for (i, (path, size)) in slices.iter().enumerate() {
        let slice_key = format!("{key}{i:04}_part_00{suffix}");
        let blob = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        entries.push(json!({"url": format!("s3://{FILES_BUCKET}/{slice_key}")}));
        objects.push((
            slice_key,
            ObjectMeta {
                blob,
                size: *size,
                etag: format!("\"{}\"", uuid::Uuid::new_v4().simple()),
                content_type: Some(if gzip { "application/gzip" } else { "text/csv" }.into()),
                content_disposition: None,
                last_modified: now,
            },
        ));
        total += size;
    }
    let manifest = serde_json::to_vec(&json!({"entries": entries})).unwrap_or_default();
    let manifest_blob = app.store.new_blob();
    crate::store::write_atomic(&app.store, &app.store.blob_path(&manifest_blob), &manifest)?;
    objects.push((
        format!("{key}manifest"),
        ObjectMeta {
            blob: manifest_blob,
            size: manifest.len() as u64,
            etag: format!("\"{}\"", uuid::Uuid::new_v4().simple()),
            content_type: Some("application/json".into()),
            content_disposition: None,
            last_modified: now,
        },
    ));
    let replaced = app.store.update(|meta| {
        let replaced: Vec<String> = objects
            .into_iter()
            .filter_map(|(k, o)| meta.put_object(FILES_BUCKET, &k, o))
            .collect();
        let access_key_id = meta.issue_access_key();
        meta.files.insert(
            file_id,
            FileRecord {
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
        replaced
    })?;
    app.store.remove_blobs(replaced);
    Ok(json!({"file": {"id": file_id}, "cacheHit": false}))
}

pub(super) async fn preview(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
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
    let order = parse_order_by(&t, params)?;
    let rows = tokio::task::spawn_blocking(move || {
        if order.is_empty() {
            table::select_rows(path.as_deref(), &selection, &cols, limit)
        } else {
            table::select_rows_ordered(path.as_deref(), &selection, &cols, &order, limit)
        }
    })
    .await
    .map_err(|e| worker_failed(e, "preview"))?
    .map_err(ApiError::from_job)?;
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

/// `orderBy[]` = `{column, order: ASC|DESC, dataType?}` (preview only).
pub(super) fn parse_order_by(
    t: &TableRecord,
    params: &Params,
) -> Result<Vec<table::OrderKey>, ApiError> {
    let items = match params.get("orderBy") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(ApiError::validation(format!(
                "Parameter \"orderBy\" should be an array of {{column, order}}, got {other}"
            )));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let column = o.get("column").and_then(scalar_string).ok_or_else(|| {
                ApiError::validation(format!(
                    "Invalid request:\n - orderBy[{i}][column]: \"This field is missing.\""
                ))
            })?;
            let descending = match o
                .get("order")
                .and_then(scalar_string)
                .map(|s| s.to_ascii_uppercase())
            {
                None => false,
                Some(s) if s == "ASC" => false,
                Some(s) if s == "DESC" => true,
                Some(s) => {
                    return Err(ApiError::validation(format!(
                        "orderBy[{i}][order] must be ASC or DESC, got \"{s}\""
                    )));
                }
            };
            let numeric = o.get("dataType").and_then(scalar_string).is_some_and(|d| {
                matches!(
                    d.to_ascii_uppercase().as_str(),
                    "INTEGER" | "DOUBLE" | "BIGINT" | "REAL" | "DECIMAL"
                )
            });
            Ok(table::OrderKey {
                column: column_index(t, &column)?,
                descending,
                numeric,
            })
        })
        .collect()
}

/// All rows as RFC CSV with a header, rows sorted (see `Emulator::dump_table`).
pub(crate) async fn dump_table(app: &Arc<App>, table_id: &str) -> Result<Option<String>, ApiError> {
    let Some(t) = app.store.read().tables.get(table_id).cloned() else {
        return Ok(None);
    };
    let lock = app.store.table_lock(table_id);
    let _guard = lock.lock().await;
    let t = app.store.read().tables.get(table_id).cloned().unwrap_or(t);
    let path = (t.data_gen > 0).then(|| app.store.table_data_path(table_id, t.data_gen));
    let cols: Vec<usize> = (0..t.columns.len()).collect();
    let rows = tokio::task::spawn_blocking(move || {
        table::select_rows(path.as_deref(), &Selection::default(), &cols, u64::MAX)
    })
    .await
    .map_err(|e| worker_failed(e, "table dump"))?
    .map_err(ApiError::from_job)?;
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
