//! Workspaces (`workspaces`, `components/{c}/configs/{cfg}/workspaces`): create and delete (as jobs or sync),
//! list, detail, objects, `input-mapping-load` (a job that copies filtered Storage tables into the workspace
//! with the export filters), and the workspace source of `import-async`/`tables-async`. The DuckDB side is in
//! `crate::workspace`.

use super::branches::{in_scope, mark_table, unmark};
use super::export::{parse_selection, selected_columns};
use super::{ApiResult, Call, accepted, json_response, ok};
use crate::app::App;
use crate::body::{Params, scalar_string};
use crate::error::{ApiError, JobError, worker_failed};
use crate::jobs;
use crate::store::{REGION, WorkspaceRecord};
use crate::table;
use crate::timefmt::{iso, now_secs};
use crate::workspace::{self, StorageTable};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// The `workspaces/…` routes.
pub(super) async fn route(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    Some(match (&call.method, rest) {
        (&Method::POST, []) => create(call, None).await,
        (&Method::GET, []) => list(call, None),
        (&Method::GET, [id]) => find(call, id).and_then(|w| ok(workspace_json(call.app, &w))),
        (&Method::DELETE, [id]) => delete(call, id).await,
        (&Method::GET, [id, "objects"]) => objects(call, id).await,
        (&Method::POST, [id, "input-mapping-load"]) => input_mapping_load(call, id),
        _ => return None,
    })
}

/// The `components/{c}/configs/{cfg}/workspaces` routes: a configuration's workspaces.
pub(super) async fn route_component(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    let [component, "configs", config, "workspaces"] = rest else {
        return None;
    };
    let owner = Some((component.to_string(), config.to_string()));
    Some(match call.method {
        Method::POST => create(call, owner).await,
        Method::GET => list(call, owner),
        _ => return None,
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "storage.workspaces.notFound",
        format!("Workspace \"{id}\" not found"),
    )
}

/// The workspace `id` of the request's branch.
fn find(call: &Call<'_>, id: &str) -> Result<WorkspaceRecord, ApiError> {
    id.parse::<u64>()
        .ok()
        .and_then(|n| call.app.store.read().workspaces.get(&n).cloned())
        .filter(|w| w.branch_id == call.branch_id)
        .ok_or_else(|| not_found(id))
}

/// The workspace object (never a password: the emulator has none).
pub(crate) fn workspace_json(app: &App, w: &WorkspaceRecord) -> Value {
    let host = url::Url::parse(&app.base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".into());
    json!({
        "id": w.id,
        "name": w.name,
        "type": "table",
        "component": w.component,
        "configurationId": w.configuration_id,
        "created": iso(w.created),
        "backendSize": w.backend_size,
        "statementTimeoutSeconds": 7200,
        "readOnlyStorageAccess": w.read_only_storage_access,
        "platformUsageType": null,
        "creatorToken": {"id": 1, "description": "emulator"},
        "connection": {
            "backend": w.backend,
            "host": host,
            "region": REGION,
            "database": workspace::CATALOG,
            "schema": w.schema(),
            "warehouse": "EMULATOR",
            "user": w.schema(),
            "loginType": w.login_type,
            "ssoLoginAvailable": false,
        },
    })
}

fn list(call: &Call<'_>, owner: Option<(String, String)>) -> ApiResult {
    let meta = call.app.store.read();
    ok(Value::Array(
        meta.workspaces
            .values()
            .filter(|w| w.branch_id == call.branch_id)
            .filter(|w| match &owner {
                None => true,
                Some((c, cfg)) => {
                    w.component.as_deref() == Some(c) && w.configuration_id.as_deref() == Some(cfg)
                }
            })
            .map(|w| workspace_json(call.app, w))
            .collect(),
    ))
}

async fn create(call: &Call<'_>, owner: Option<(String, String)>) -> ApiResult {
    let params = &call.params;
    let backend = params
        .nonempty("backend")
        .unwrap_or_else(|| "snowflake".into());
    if backend != "snowflake" && backend != "bigquery" {
        return Err(ApiError::bad_request(
            "validation.failed",
            format!(
                "Invalid backend \"{backend}\": the emulator offers \"snowflake\" and \"bigquery\" (both DuckDB)."
            ),
        ));
    }
    let id = call.app.store.next_id();
    let (component, configuration_id) = owner.unzip();
    let record = WorkspaceRecord {
        id,
        name: params
            .nonempty("name")
            .unwrap_or_else(|| format!("WORKSPACE_{id}")),
        branch_id: call.branch_id,
        component,
        configuration_id,
        created: now_secs(),
        backend,
        backend_size: params.nonempty("backendSize"),
        read_only_storage_access: params.bool("readOnlyStorageAccess", false)?,
        login_type: params
            .nonempty("loginType")
            .unwrap_or_else(|| "default".into()),
    };
    if params.bool("async", false)? {
        let job = jobs::create(
            call.app,
            "workspaceCreate",
            None,
            json!({"backend": record.backend, "readOnlyStorageAccess": record.read_only_storage_access}),
        )?;
        jobs::spawn(call.app, &job, Some(lock_key(id)), move |app, _| {
            create_now(app, &record)?;
            Ok(workspace_json(app, &record))
        });
        return accepted(&job);
    }
    let app = call.app.clone();
    let v = tokio::task::spawn_blocking(move || {
        create_now(&app, &record).map(|()| workspace_json(&app, &record))
    })
    .await
    .map_err(|e| worker_failed(e, "workspace create"))?
    .map_err(ApiError::from_job)?;
    Ok(json_response(StatusCode::CREATED, v))
}

/// Jobs on one workspace run one at a time, like jobs on one table.
fn lock_key(id: u64) -> String {
    format!("@workspace{id}")
}

fn create_now(app: &App, record: &WorkspaceRecord) -> Result<(), JobError> {
    if let Err(e) = app.workspaces.create(&app.store, record) {
        app.workspaces.remove(&app.store, record.id);
        return Err(e);
    }
    let saved = app.store.update(|meta| {
        meta.workspaces.insert(record.id, record.clone());
    });
    if let Err(e) = saved {
        app.workspaces.remove(&app.store, record.id);
        return Err(e.into());
    }
    Ok(())
}

async fn delete(call: &Call<'_>, id: &str) -> ApiResult {
    let w = find(call, id)?;
    if call.params.bool("async", false)? {
        let job = jobs::create(
            call.app,
            "workspaceDelete",
            None,
            json!({"workspaceId": w.id}),
        )?;
        jobs::spawn(call.app, &job, Some(lock_key(w.id)), move |app, _| {
            delete_now(app, w.id)?;
            Ok(Value::Null)
        });
        return accepted(&job);
    }
    delete_now(call.app, w.id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Forgets the workspace, then removes its database (a running query keeps its open file until it ends).
fn delete_now(app: &App, id: u64) -> Result<(), ApiError> {
    let existed = app
        .store
        .update(|meta| meta.workspaces.remove(&id).is_some())?;
    if !existed {
        return Err(not_found(&id.to_string()));
    }
    crate::query::cancel_workspace_jobs(app, id, "The workspace was deleted.");
    app.workspaces.remove(&app.store, id);
    Ok(())
}

async fn objects(call: &Call<'_>, id: &str) -> ApiResult {
    let w = find(call, id)?;
    let app = call.app.clone();
    let list = tokio::task::spawn_blocking(move || {
        let conn = app.workspaces.connection(&app.store, &w)?;
        let conn = workspace::lock(&conn);
        workspace::objects(&conn, &w.schema())
    })
    .await
    .map_err(|e| worker_failed(e, "workspace objects"))?
    .map_err(ApiError::from_job)?;
    ok(Value::Array(
        list.into_iter()
            .map(|(name, kind)| json!({"name": name, "type": kind}))
            .collect(),
    ))
}

/// The Storage tables a workspace sees with read-only storage access: its branch's.
pub(crate) fn storage_tables(app: &App, w: &WorkspaceRecord) -> Vec<StorageTable> {
    let scope = crate::api::storage_scope(app, w.branch_id);
    let meta = app.store.read();
    meta.tables
        .values()
        .filter(|t| in_scope(&t.id, scope))
        .map(|t| StorageTable {
            bucket: unmark(&t.bucket_id).into_owned(),
            name: t.name.clone(),
            columns: t.columns.clone(),
            data: (t.data_gen > 0).then(|| app.store.table_data_path(&t.id, t.data_gen)),
        })
        .collect()
}

/// The workspace a Query Service request addresses: a real branch id, and a workspace of that branch.
pub(crate) fn workspace_for_query(
    app: &App,
    branch: &str,
    id: &str,
) -> Result<WorkspaceRecord, ApiError> {
    let branch_id = branch
        .parse::<u64>()
        .ok()
        .filter(|b| crate::api::branch_exists(app, *b))
        .ok_or_else(|| {
            ApiError::bad_request(
                "queryService.invalidBranch",
                format!(
                    "Invalid branch \"{branch}\": use the numeric id of a branch of this project."
                ),
            )
        })?;
    id.parse::<u64>()
        .ok()
        .and_then(|n| app.store.read().workspaces.get(&n).cloned())
        .filter(|w| w.branch_id == branch_id)
        .ok_or_else(|| not_found(id))
}

/// One item of `input-mapping-load`, validated.
struct LoadItem {
    source: String,
    destination: String,
    /// The item's filters as export parameters (`changedSince`, `whereColumn`, …, `columns`, `limit`).
    params: Params,
    overwrite: bool,
}

fn load_items(params: &Params) -> Result<Vec<LoadItem>, ApiError> {
    let Some(Value::Array(items)) = params.get("input") else {
        return Err(ApiError::bad_request(
            "validation.failed",
            "Parameter \"input\" must be an array of tables to load.",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |k: &str| {
                item.get(k)
                    .and_then(scalar_string)
                    .filter(|s| !s.is_empty())
            };
            let (Some(source), Some(destination)) = (field("source"), field("destination")) else {
                return Err(ApiError::bad_request(
                    "validation.failed",
                    format!("input[{i}]: \"source\" and \"destination\" are required."),
                ));
            };
            // The input mapping's snake_case keys are the export's filters under other names.
            let mut p = Map::new();
            for (from, to) in [
                ("changed_since", "changedSince"),
                ("where_column", "whereColumn"),
                ("where_values", "whereValues"),
                ("where_operator", "whereOperator"),
                ("limit", "limit"),
            ] {
                if let Some(v) = item.get(from).filter(|v| !v.is_null()) {
                    p.insert(to.into(), v.clone());
                }
            }
            // `columns` are names, or objects with a `source` (the legacy load's shape).
            if let Some(Value::Array(cols)) = item.get("columns") {
                let names: Vec<Value> = cols
                    .iter()
                    .filter_map(|c| match c {
                        Value::Object(o) => o.get("source").cloned(),
                        v => Some(v.clone()),
                    })
                    .collect();
                if !names.is_empty() {
                    p.insert("columns".into(), Value::Array(names));
                }
            }
            let overwrite = item
                .get("overwrite")
                .and_then(crate::body::as_bool)
                .unwrap_or(false);
            Ok(LoadItem {
                source,
                destination,
                params: Params(p),
                overwrite,
            })
        })
        .collect()
}

fn input_mapping_load(call: &Call<'_>, id: &str) -> ApiResult {
    let w = find(call, id)?;
    let items = load_items(&call.params)?;
    if call.params.bool("dryRun", false)? {
        return ok(json!({"input": items.iter().map(|i| json!({
            "source": i.source, "destination": i.destination,
            "loadType": "COPY", "possibleLoadTypes": ["COPY", "VIEW"],
        })).collect::<Vec<_>>()}));
    }
    let preserve = call.params.bool("preserve", false)?;
    let scope = crate::api::storage_scope(call.app, w.branch_id);
    let job = jobs::create(
        call.app,
        "workspaceLoad",
        None,
        json!({"workspaceId": w.id, "preserve": preserve,
               "input": items.iter().map(|i| json!({"source": i.source, "destination": i.destination})).collect::<Vec<_>>()}),
    )?;
    jobs::spawn(call.app, &job, Some(lock_key(w.id)), move |app, _| {
        let conn = app.workspaces.connection(&app.store, &w)?;
        if !preserve {
            workspace::drop_objects(&workspace::lock(&conn), &w.schema())?;
        }
        let mut done = Vec::new();
        for item in items {
            let rows = load_one(app, &conn, &w, scope, &item)?;
            done.push(
                json!({"source": item.source, "destination": item.destination,
                             "loadType": "COPY", "rowsCount": rows}),
            );
        }
        Ok(json!({"input": done}))
    });
    accepted(&job)
}

/// Copies one table's selected rows into the workspace. It takes no table lock (a job holding one may wait
/// for a job slot this load holds): it opens the current data file, which stays readable after a load
/// replaces and removes it, and looks again when a load removed it between the look and the open.
fn load_one(
    app: &App,
    conn: &workspace::WsConn,
    w: &WorkspaceRecord,
    scope: Option<u64>,
    item: &LoadItem,
) -> Result<u64, JobError> {
    let table_id = mark_table(&item.source, scope);
    let mut attempts = 0;
    let (t, data) = loop {
        let t = app
            .table_snapshot(&table_id)
            .map_err(|_| JobError::from(ApiError::table_not_found(&item.source)))?;
        if t.data_gen == 0 {
            break (t, None);
        }
        match std::fs::File::open(app.store.table_data_path(&t.id, t.data_gen)) {
            Ok(f) => break (t, Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 10 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let columns = selected_columns(&t, &item.params)?;
    let selection = parse_selection(&t, &item.params)?;
    let limit = item
        .params
        .int("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as u64);
    let names: Vec<String> = columns.iter().map(|&i| t.columns[i].clone()).collect();
    let conn = workspace::lock(conn);
    if !item.overwrite
        && workspace::object_columns(&conn, &w.schema(), &item.destination)?.is_some()
    {
        return Err(JobError::new(
            "workspace.tableAlreadyExists",
            format!(
                "Table \"{}\" already exists in workspace {} (set \"overwrite\" or load without \"preserve\").",
                item.destination, w.id
            ),
        ));
    }
    workspace::load_table(&conn, &w.schema(), &item.destination, &names, |push| {
        table::for_each_selected(data, &selection, &columns, limit, push)
    })
}

/// Where an import's data comes from when it names a workspace (`dataWorkspaceId` + `dataObject`, or the
/// deprecated `dataTableName`).
#[derive(Debug, Clone)]
pub(super) struct WorkspaceSource {
    pub(super) workspace_id: u64,
    pub(super) object: String,
}

/// The workspace source of an import's parameters; None when it names no workspace. Whether the workspace
/// and the object exist is the job's to find out (it fails then, as Storage's job does).
pub(super) fn workspace_source(params: &Params) -> Result<Option<WorkspaceSource>, ApiError> {
    let Some(raw) = params.nonempty("dataWorkspaceId") else {
        return Ok(None);
    };
    let workspace_id = raw
        .parse()
        .map_err(|_| ApiError::validation(format!("Invalid dataWorkspaceId \"{raw}\".")))?;
    let object = params
        .nonempty("dataObject")
        .or_else(|| params.nonempty("dataTableName"))
        .ok_or_else(|| {
            ApiError::validation(
                "Parameter \"dataObject\" (the table or view in the workspace) is required with \"dataWorkspaceId\".",
            )
        })?;
    Ok(Some(WorkspaceSource {
        workspace_id,
        object,
    }))
}

/// Writes the object (its `columns`, or all of them) to a temp CSV with a header, for the file-load path.
/// The caller removes the file.
pub(super) fn export_source(
    app: &App,
    src: &WorkspaceSource,
    columns: Option<&[String]>,
) -> Result<PathBuf, JobError> {
    let w = app
        .store
        .read()
        .workspaces
        .get(&src.workspace_id)
        .cloned()
        .ok_or_else(|| {
            JobError::new(
                "storage.workspaces.notFound",
                format!("Workspace \"{}\" not found", src.workspace_id),
            )
        })?;
    let conn = app.workspaces.connection(&app.store, &w)?;
    let conn = workspace::lock(&conn);
    if w.read_only_storage_access {
        // The object may be a view over Storage tables: show them as they are now.
        workspace::refresh_storage(&conn, &w.schema(), &storage_tables(app, &w))?;
    }
    let all = workspace::object_columns(&conn, &w.schema(), &src.object)?.ok_or_else(|| {
        JobError::new(
            "storage.workspaces.objectNotFound",
            format!(
                "The object \"{}\" was not found in workspace \"{}\" (schema {}).",
                src.object,
                w.id,
                w.schema()
            ),
        )
    })?;
    let columns = match columns {
        None => all,
        Some(wanted) => {
            if let Some(c) = wanted.iter().find(|c| !all.contains(c)) {
                return Err(JobError::new(
                    "storage.tables.validation.columnNotExists",
                    format!(
                        "Column \"{c}\" does not exist in the workspace object \"{}\". Columns: {}",
                        src.object,
                        all.join(", ")
                    ),
                ));
            }
            wanted.to_vec()
        }
    };
    let out = app.store.tmp_path("workspace-import");
    if let Err(e) = workspace::export_object(&conn, &w.schema(), &src.object, &columns, &out) {
        let _ = std::fs::remove_file(&out);
        return Err(e);
    }
    Ok(out)
}
