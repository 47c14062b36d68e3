//! Loads: table creation (`tables-async`, `tables-definition`, deprecated sync create), imports
//! (`import-async`, deprecated sync import), from a file or from a workspace object, and the seeding helper
//! of the library API.

use super::buckets::{insert_bucket, keeps_bucket_names, valid_name};
use super::tables::{
    basetype_of, native_of_basetype, set_datatype_metadata, table_json, table_meta,
};
use super::workspaces::{WorkspaceSource, export_source, workspace_source};
use super::{ApiResult, accepted, json_response, ok};
use crate::app::App;
use crate::body::{Params, scalar_string};
use crate::error::{ApiError, JobError, split_table_id, worker_failed};
use crate::jobs::{self, JobResult};
use crate::store::{FILES_BUCKET, Store, TableRecord};
use crate::table::{self, Dialect};
use crate::timefmt::now_secs;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// Options of a load as the request gave them.
#[derive(Debug, Clone)]
pub(super) struct LoadOptions {
    pub(super) dialect: Dialect,
    pub(super) incremental: bool,
    pub(super) file_columns: Option<Vec<String>>,
    pub(super) without_headers: bool,
}

pub(super) fn single_byte(
    params: &Params,
    key: &str,
    default: Option<u8>,
) -> Result<Option<u8>, ApiError> {
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

pub(super) fn load_options(params: &Params) -> Result<LoadOptions, ApiError> {
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

pub(super) fn file_id_param(params: &Params) -> Result<u64, ApiError> {
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

pub(super) fn check_file(app: &App, file_id: u64) -> Result<(), ApiError> {
    if app.store.read().files.contains_key(&file_id) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "storage.files.notFound",
            format!("File {file_id} not found"),
        ))
    }
}

/// The blob paths of a file's data, in order (one for a plain file, the manifest's entries for a sliced one).
pub(super) fn file_sources(store: &Store, file_id: u64) -> Result<Vec<PathBuf>, JobError> {
    let f = store.read().files.get(&file_id).cloned().ok_or_else(|| {
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
pub(super) struct NewTable {
    pub(super) bucket_id: String,
    pub(super) name: String,
    pub(super) primary_key: Vec<String>,
}

/// Loads `sources` into a table (creating it when `new` is given) and commits the new generation. Runs on a
/// blocking thread with the table's lock held.
/// Returns the columns the load imported.
pub(super) fn apply_load(
    app: &App,
    table_id: &str,
    new: Option<NewTable>,
    sources: Vec<PathBuf>,
    opts: &LoadOptions,
) -> Result<Vec<String>, JobError> {
    let current = app.store.read().tables.get(table_id).cloned();
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
    let gen_ = app.store.next_id();
    let last = current.as_ref().map(|t| t.last_stamp).unwrap_or(0);
    // The next whole second after now (and after the previous load): stamps have one-second resolution,
    // so a `changedSince` taken before the load, even in the same second, still selects its rows, while
    // `changedSince = lastImportDate` (this stamp) selects none of them.
    let stamp = (now_secs() + 1).max(last + 1);
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
        typed: current.as_ref().is_some_and(|t| t.definition.is_some()),
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
    let committed = app.store.try_update(|meta| {
        let mut t = match (&new, current) {
            (Some(n), _) => TableRecord::new(
                table_id,
                &n.bucket_id,
                &n.name,
                Vec::new(),
                n.primary_key.clone(),
                now,
            ),
            // The stored table as it is now: a bucket delete may have dropped it while the load ran.
            (None, _) => match meta.tables.get(table_id) {
                Some(t) => t.clone(),
                None => return Err(JobError::from(ApiError::table_not_found(table_id))),
            },
        };
        if !meta.buckets.contains_key(&t.bucket_id) {
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
        Ok(())
    });
    if let Err(e) = committed {
        // Refused (nothing points at the new generation: it goes), or not saved (it stays in use).
        let in_use = app.store.read().tables.get(table_id).map(|t| t.data_gen) == Some(gen_);
        if !in_use {
            let _ = std::fs::remove_file(&out);
        }
        return Err(e);
    }
    if let Some(old) = existing {
        let _ = std::fs::remove_file(old);
    }
    Ok(outcome.imported_columns)
}

pub(super) fn table_result(app: &App, table_id: &str) -> JobResult {
    let meta = app.store.read();
    let t = meta
        .tables
        .get(table_id)
        .ok_or_else(|| JobError::from(ApiError::table_not_found(table_id)))?;
    Ok(table_json(&app.base_url, &meta, t, true, true))
}

pub(super) fn import_results(app: &App, table_id: &str, imported: &[String]) -> JobResult {
    let t = app.table_snapshot(table_id)?;
    Ok(json!({
        "importedColumns": imported,
        "warnings": [],
        "transaction": null,
        "totalRowsCount": t.rows_count,
        "totalDataSizeBytes": t.data_size_bytes,
    }))
}

pub(super) fn new_table_target(
    app: &App,
    bucket_id: &str,
    params: &Params,
) -> Result<NewTable, ApiError> {
    if !app.store.read().buckets.contains_key(bucket_id) {
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
    if app.store.read().tables.contains_key(&table_id) {
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

pub(super) fn create_table_async(app: &Arc<App>, bucket_id: &str, params: &Params) -> ApiResult {
    let target = new_table_target(app, bucket_id, params)?;
    if let Some(src) = workspace_source(params)? {
        let table_id = format!("{bucket_id}.{}", target.name);
        let job = jobs::create(
            app,
            "tableCreate",
            None,
            json!({"name": target.name, "primaryKey": target.primary_key.join(","),
                   "source": {"workspaceId": src.workspace_id, "dataObject": src.object, "type": "workspace"}}),
        )?;
        let tid = table_id.clone();
        jobs::spawn(app, &job, Some(table_id), move |app, _| {
            load_from_workspace(
                app,
                &tid,
                Some(target),
                &src,
                None,
                &workspace_options(None),
            )?;
            table_result(app, &tid)
        });
        return accepted(&job);
    }
    let file_id = file_id_param(params)?;
    check_file(app, file_id)?;
    let opts = load_options(params)?;
    let table_id = format!("{bucket_id}.{}", target.name);
    let job = jobs::create(
        app,
        "tableCreate",
        None,
        json!({"name": target.name, "primaryKey": target.primary_key.join(","), "source": {"fileId": file_id, "type": "file"}}),
    )?;
    let tid = table_id.clone();
    jobs::spawn(app, &job, Some(table_id), move |app, _| {
        let sources = file_sources(&app.store, file_id)?;
        apply_load(app, &tid, Some(target), sources, &opts)?;
        table_result(app, &tid)
    });
    accepted(&job)
}

/// The load options of an import from a workspace: the request's `incremental` and `columns`, and the
/// dialect of the CSV the workspace object is written to (default, with a header).
fn workspace_options(given: Option<LoadOptions>) -> LoadOptions {
    LoadOptions {
        dialect: Dialect::default(),
        incremental: given.as_ref().is_some_and(|o| o.incremental),
        file_columns: given.and_then(|o| o.file_columns),
        without_headers: false,
    }
}

/// Loads a workspace object's `columns` (all when None) into a table (creating it when `new` is given)
/// through the file-load path, so incremental, primary key and typed-table semantics are the file's.
fn load_from_workspace(
    app: &App,
    table_id: &str,
    new: Option<NewTable>,
    src: &WorkspaceSource,
    columns: Option<&[String]>,
    opts: &LoadOptions,
) -> Result<Vec<String>, JobError> {
    let csv = export_source(app, src, columns)?;
    let r = apply_load(app, table_id, new, vec![csv.clone()], opts);
    let _ = std::fs::remove_file(&csv);
    r
}

pub(super) const BASETYPES: &[&str] = &[
    "BOOLEAN",
    "DATE",
    "FLOAT",
    "INTEGER",
    "NUMERIC",
    "STRING",
    "TIMESTAMP",
];

/// One entry of a typed table's `definition.columns` from a request's `definition` and/or `basetype`
/// (`what` names the column in messages).
pub(super) fn typed_column(what: &str, name: &str, c: &Value) -> Result<Value, ApiError> {
    let native = c.pointer("/definition/type").and_then(scalar_string);
    let basetype = match (c.get("basetype").and_then(scalar_string), &native) {
        (Some(b), _) => b.to_ascii_uppercase(),
        (None, Some(t)) => {
            let length = c.pointer("/definition/length").and_then(scalar_string);
            basetype_of(t, length.as_deref()).to_owned()
        }
        (None, None) => {
            return Err(ApiError::validation(format!(
                "{what}: give a \"definition\" {{\"type\": ..}} or a \"basetype\"."
            )));
        }
    };
    if !BASETYPES.contains(&basetype.as_str()) {
        return Err(ApiError::validation(format!(
            "{what}: unknown basetype \"{basetype}\"; use one of {}.",
            BASETYPES.join(", ")
        )));
    }
    let definition = match (native, c.get("definition")) {
        (Some(_), Some(d)) => d.clone(),
        // Only a basetype: the backend picks its own type for it, as Snowflake does.
        _ => {
            let (t, length) = native_of_basetype(&basetype);
            let mut d = json!({"type": t, "nullable": true});
            if let Some(length) = length {
                d["length"] = json!(length);
            }
            d
        }
    };
    Ok(json!({"name": name, "definition": definition, "basetype": basetype, "canBeFiltered": true}))
}

/// `tables-definition`: an empty typed table from column definitions. Values are stored as given (no type
/// checks); the difference that matters to clients is kept: loads re-stamp every incoming key.
pub(super) fn create_table_definition(
    app: &Arc<App>,
    bucket_id: &str,
    params: &Params,
) -> ApiResult {
    if params.get("primaryKey").is_some() && params.get("primaryKeysNames").is_none() {
        return Err(ApiError::validation(
            "Typed tables take \"primaryKeysNames\" (an array), not \"primaryKey\".",
        ));
    }
    let target = new_table_target(app, bucket_id, params)?;
    let mut columns = Vec::new();
    let mut definitions = Vec::new();
    for (i, c) in params
        .get("columns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = c.get("name").and_then(scalar_string).unwrap_or_default();
        if name.is_empty() || table::normalize_column_name(&name) != name {
            return Err(ApiError::bad_request(
                "storage.tables.validation.invalidColumnName",
                format!(
                    "columns[{i}]: invalid column name \"{name}\" (use letters, digits and underscores)."
                ),
            ));
        }
        if columns.contains(&name) {
            return Err(ApiError::validation(format!(
                "columns[{i}]: the column \"{name}\" is defined twice."
            )));
        }
        definitions.push(typed_column(&format!("columns[{i}]"), &name, c)?);
        columns.push(name);
    }
    if columns.is_empty() {
        return Err(ApiError::bad_request(
            "storage.tables.validation.noColumns",
            "A typed table needs at least one column in \"columns\".",
        ));
    }
    let primary_key = params.array("primaryKeysNames");
    if let Some(k) = primary_key.iter().find(|k| !columns.contains(k)) {
        return Err(ApiError::bad_request(
            "storage.tables.validation.invalidPrimaryKeyColumns",
            format!("Primary key column \"{k}\" is not among the defined columns."),
        ));
    }
    let definition = json!({"primaryKeysNames": primary_key, "columns": definitions});
    let table_id = format!("{bucket_id}.{}", target.name);
    let job = jobs::create(
        app,
        "tableDefinitionCreate",
        None,
        json!({"name": target.name}),
    )?;
    let tid = table_id.clone();
    jobs::spawn(app, &job, Some(table_id), move |app, _| {
        let now = now_secs();
        app.store.try_update(|meta| {
            if meta.tables.contains_key(&tid) {
                return Err(JobError::new(
                    "storage.buckets.tableAlreadyExists",
                    format!(
                        "The table \"{}\" already exists in the bucket \"{}\".",
                        target.name, target.bucket_id
                    ),
                ));
            }
            if !meta.buckets.contains_key(&target.bucket_id) {
                return Err(ApiError::bucket_not_found(&target.bucket_id).into());
            }
            let typed_columns = definition["columns"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            meta.tables.insert(
                tid.clone(),
                TableRecord {
                    definition: Some(definition),
                    ..TableRecord::new(
                        &tid,
                        &target.bucket_id,
                        &target.name,
                        columns,
                        primary_key,
                        now,
                    )
                },
            );
            for c in &typed_columns {
                set_datatype_metadata(meta, &tid, c);
            }
            Ok(())
        })?;
        table_result(app, &tid)
    });
    accepted(&job)
}

/// Runs a load with data given inline (`dataString` or a multipart `data` part) right away.
pub(super) async fn inline_load(
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
    .map_err(|e| JobError::from(worker_failed(e, "load")))?
}

pub(super) fn inline_data(params: &Params) -> Result<String, ApiError> {
    params
        .str("dataString")
        .or_else(|| params.str("data"))
        .ok_or_else(|| {
            ApiError::validation(
                "Parameter \"dataString\" (or a multipart \"data\" file) is required.",
            )
        })
}

pub(super) async fn create_table_sync(
    app: &Arc<App>,
    bucket_id: &str,
    params: &Params,
) -> ApiResult {
    let target = new_table_target(app, bucket_id, params)?;
    let data = inline_data(params)?;
    let opts = load_options(params)?;
    let table_id = format!("{bucket_id}.{}", target.name);
    inline_load(app, table_id.clone(), Some(target), data, opts)
        .await
        .map_err(ApiError::from_job)?;
    let v = {
        let meta = app.store.read();
        let t = meta
            .tables
            .get(&table_id)
            .ok_or_else(|| ApiError::table_not_found(&table_id))?;
        table_json(&app.base_url, &meta, t, true, true)
    };
    Ok(json_response(StatusCode::CREATED, v))
}

pub(super) fn import_async(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    table_meta(app, table_id)?;
    if let Some(src) = workspace_source(params)? {
        let mut opts = workspace_options(Some(load_options(params)?));
        let job = jobs::create(
            app,
            "tableImport",
            Some(table_id),
            json!({"source": {"workspaceId": src.workspace_id, "dataObject": src.object, "type": "workspace"},
                   "incremental": opts.incremental, "columns": opts.file_columns}),
        )?;
        let tid = table_id.to_owned();
        // The object's columns to import; the exported file has a header naming them.
        let columns = opts.file_columns.take();
        jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
            let imported = load_from_workspace(app, &tid, None, &src, columns.as_deref(), &opts)?;
            import_results(app, &tid, &imported)
        });
        return accepted(&job);
    }
    let file_id = file_id_param(params)?;
    check_file(app, file_id)?;
    let opts = load_options(params)?;
    let job = jobs::create(
        app,
        "tableImport",
        Some(table_id),
        json!({"source": {"fileId": file_id, "type": "file"}, "incremental": opts.incremental, "columns": opts.file_columns, "withoutHeaders": opts.without_headers}),
    )?;
    let tid = table_id.to_owned();
    jobs::spawn(app, &job, Some(tid.clone()), move |app, _| {
        let sources = file_sources(&app.store, file_id)?;
        let imported = apply_load(app, &tid, None, sources, &opts)?;
        import_results(app, &tid, &imported)
    });
    accepted(&job)
}

pub(super) async fn import_sync(app: &Arc<App>, table_id: &str, params: &Params) -> ApiResult {
    table_meta(app, table_id)?;
    let data = inline_data(params)?;
    let opts = load_options(params)?;
    let imported = inline_load(app, table_id.to_owned(), None, data, opts)
        .await
        .map_err(ApiError::from_job)?;
    let mut v = import_results(app, table_id, &imported).map_err(ApiError::from_job)?;
    v["status"] = json!("ok");
    ok(v)
}

/// Seeds a table from a CSV file with a header: creates the bucket and the table when missing, then does a
/// full load (the `seed_table` of the library API and `POST /_emulator/tables/{id}`).
pub(crate) async fn seed_table(
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
    if !app.store.read().buckets.contains_key(bucket_id) {
        app.store.try_update(|meta| {
            if meta.buckets.contains_key(bucket_id) {
                return Ok(());
            }
            let name = if keeps_bucket_names(meta) {
                bucket_name
            } else {
                short
            };
            insert_bucket(meta, stage, name, None, String::new()).map(drop)
        })?;
    }
    let new = if app.store.read().tables.contains_key(table_id) {
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
        app.store.update(|meta| {
            if let Some(t) = meta.tables.get_mut(table_id) {
                t.primary_key = primary_key.to_vec();
            }
        })?;
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
        .map_err(|e| worker_failed(e, "seed load"))?
        .map_err(ApiError::from_job)?;
    Ok(())
}
