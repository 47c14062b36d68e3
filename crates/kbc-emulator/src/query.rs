//! The Keboola Query Service (`/api/v1/...` on the emulator's listener): submit a job of SQL statements for
//! a workspace, poll its status, page through each statement's results, cancel it, list a workspace's
//! history. Statements run in the workspace's DuckDB database (so the SQL is DuckDB's, not Snowflake's), one
//! job at a time per workspace, in order, on a blocking thread; results are kept in memory as text.
//!
//! Jobs live in memory only: a restart forgets them (the real service keeps them for a while).

use crate::app::App;
use crate::error::{ApiError, exception_id};
use crate::workspace::{self, StorageTable};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use duckdb::arrow::array::Array;
use duckdb::arrow::datatypes::DataType;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Rows of one statement kept for paging; more are counted in `numberOfRows` but not kept (an emulator
/// holds results in memory).
const MAX_KEPT_ROWS: usize = 1_000_000;
/// The page sizes the real service accepts.
const PAGE_SIZES: std::ops::RangeInclusive<u64> = 100..=10_000;
const DEFAULT_PAGE_SIZE: u64 = 500;

/// The Query Service's jobs (in memory).
#[derive(Default)]
pub(crate) struct QueryJobs {
    jobs: Mutex<HashMap<String, Arc<Mutex<Job>>>>,
}

impl QueryJobs {
    /// How many jobs were submitted since the start.
    pub(crate) fn count(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Job>>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<Mutex<Job>>> {
        self.map().get(id).cloned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Enqueued,
    Processing,
    Completed,
    Failed,
    Canceled,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::Enqueued => "enqueued",
            JobState::Processing => "processing",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }
    fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Canceled
        )
    }
}

struct Job {
    id: String,
    session_id: String,
    workspace_id: u64,
    actor_type: String,
    status: JobState,
    created_at: String,
    changed_at: String,
    canceled_at: Option<String>,
    cancellation_reason: Option<String>,
    statements: Vec<Statement>,
    /// Cancel asked: the runner stops before the next statement.
    cancel_requested: bool,
    /// The runner is inside a statement: an interrupt now stops it.
    executing: bool,
    /// The runner has let go of the workspace.
    finished: bool,
    interrupt: Option<Arc<duckdb::InterruptHandle>>,
}

struct Statement {
    id: String,
    query: String,
    /// `waiting`, `processing`, `completed`, `failed`, `canceled` or `notExecuted`.
    status: &'static str,
    query_id: Option<String>,
    error: Option<String>,
    rows_affected: Option<u64>,
    number_of_rows: Option<u64>,
    created_at: String,
    executed_at: Option<String>,
    completed_at: Option<String>,
    result: Option<Arc<ResultSet>>,
}

/// What a statement returned: column descriptions and its rows as text (NULL as None).
struct ResultSet {
    columns: Vec<Value>,
    rows: Vec<Vec<Option<String>>>,
    total: u64,
    rows_affected: Option<u64>,
    message: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A Query Service error: `{status:"error", error:<http status>, code, exception, exceptionId, context}`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "status": "error",
            "error": status.as_u16(),
            "code": code,
            "exception": message,
            "exceptionId": exception_id(),
            "context": {},
        })),
    )
        .into_response()
}

fn from_api(e: ApiError) -> Response {
    error_response(e.status, &e.code, &e.message)
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "validation.failed", message)
}

fn job_not_found(id: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "queryJob.notFound",
        &format!("Query job \"{id}\" not found"),
    )
}

/// Routes one `/api/v1/...` request.
pub(crate) async fn dispatch(app: &Arc<App>, req: Request) -> Response {
    if let Err(e) = app.authenticate(req.headers()) {
        return from_api(e);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = crate::body::Params(crate::body::parse_query(req.uri().query()));
    let segs = crate::body::path_segments(path.strip_prefix("/api/v1").unwrap_or(""));
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&method, segs.as_slice()) {
        (&Method::POST, ["branches", branch, "workspaces", ws, "queries"]) => {
            let ws = match crate::api::workspace_for_query(app, branch, ws) {
                Ok(w) => w,
                Err(e) => return from_api(e),
            };
            match read_json(req).await {
                Ok(body) => submit(app, ws, &body),
                Err(r) => r,
            }
        }
        (&Method::GET, ["branches", branch, "workspaces", ws, "queries"]) => {
            match crate::api::workspace_for_query(app, branch, ws) {
                Ok(w) => history(app, &w),
                Err(e) => from_api(e),
            }
        }
        (&Method::GET, ["queries", id]) => match app.query_jobs.get(id) {
            Some(job) => axum::Json(status_json(&lock(&job))).into_response(),
            None => job_not_found(id),
        },
        (&Method::GET, ["queries", id, statement, "results"]) => {
            results(app, id, statement, &query)
        }
        (&Method::POST, ["queries", id, "cancel"]) => {
            let reason = match read_json(req).await {
                Ok(body) => body
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("Canceled by user")
                    .to_owned(),
                Err(r) => return r,
            };
            cancel(app, id, &reason)
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("Route {method} {path} is not supported by the emulator"),
        ),
    }
}

fn lock(job: &Arc<Mutex<Job>>) -> std::sync::MutexGuard<'_, Job> {
    job.lock().unwrap_or_else(|p| p.into_inner())
}

/// The JSON body (an empty body is `{}`).
async fn read_json(req: Request) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .map_err(|e| bad_request(&format!("Cannot read the request body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| bad_request(&format!("Invalid JSON body: {e}")))
}

fn submit(app: &Arc<App>, ws: crate::store::WorkspaceRecord, body: &Value) -> Response {
    let statements: Vec<String> = match body.get("statements") {
        Some(Value::Array(items)) if !items.is_empty() => {
            let texts: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .collect();
            if texts.len() != items.len() {
                return bad_request("Statements must not be empty");
            }
            texts
        }
        _ => return bad_request("Statements must not be empty"),
    };
    let transactional = match body.get("transactional") {
        None | Some(Value::Null) => false,
        Some(v) => match crate::body::as_bool(v) {
            Some(b) => b,
            None => return bad_request("\"transactional\" must be a boolean"),
        },
    };
    let actor_type = match body.get("actorType").and_then(Value::as_str) {
        None => "user".to_owned(),
        Some(a @ ("user" | "system")) => a.to_owned(),
        Some(other) => {
            return bad_request(&format!(
                "Invalid actorType \"{other}\": use \"user\" or \"system\"."
            ));
        }
    };
    let session_id = body
        .get("sessionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let created = now();
    let job = Job {
        id: uuid::Uuid::new_v4().to_string(),
        session_id: session_id.clone(),
        workspace_id: ws.id,
        actor_type,
        status: JobState::Enqueued,
        created_at: created.clone(),
        changed_at: created.clone(),
        canceled_at: None,
        cancellation_reason: None,
        statements: statements
            .into_iter()
            .map(|query| Statement {
                id: uuid::Uuid::new_v4().to_string(),
                query,
                status: "waiting",
                query_id: None,
                error: None,
                rows_affected: None,
                number_of_rows: None,
                created_at: created.clone(),
                executed_at: None,
                completed_at: None,
                result: None,
            })
            .collect(),
        cancel_requested: false,
        executing: false,
        finished: false,
        interrupt: None,
    };
    let id = job.id.clone();
    let job = Arc::new(Mutex::new(job));
    app.query_jobs.map().insert(id.clone(), job.clone());
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        run(&app2, &job, &ws, transactional);
        let mut j = lock(&job);
        // A job canceled before it started never ran a statement.
        for s in &mut j.statements {
            if s.status == "waiting" {
                s.status = "notExecuted";
            }
        }
        j.finished = true;
        j.executing = false;
        j.interrupt = None;
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({"queryJobId": id, "sessionId": session_id})),
    )
        .into_response()
}

/// Runs a job's statements in its workspace (blocking). Holds the workspace's connection throughout, so jobs
/// on one workspace run one after another.
fn run(app: &App, job: &Arc<Mutex<Job>>, ws: &crate::store::WorkspaceRecord, transactional: bool) {
    let fail_all = |message: String| {
        let mut j = lock(job);
        if j.status.is_terminal() {
            return;
        }
        for s in &mut j.statements {
            s.status = "notExecuted";
        }
        if let Some(first) = j.statements.first_mut() {
            first.status = "failed";
            first.error = Some(message);
        }
        j.status = JobState::Failed;
        j.changed_at = now();
    };
    let conn = match app.workspaces.connection(&app.store, ws) {
        Ok(c) => c,
        Err(e) => return fail_all(e.message),
    };
    let conn = workspace::lock(&conn);
    {
        let mut j = lock(job);
        if j.cancel_requested {
            return;
        }
        j.status = JobState::Processing;
        j.changed_at = now();
        j.interrupt = Some(conn.interrupt_handle());
    }
    if ws.read_only_storage_access {
        let tables: Vec<StorageTable> = crate::api::storage_tables(app, ws);
        if let Err(e) = workspace::refresh_storage(&conn, &ws.schema(), &tables) {
            return fail_all(e.message);
        }
    }
    if transactional && let Err(e) = conn.execute_batch("BEGIN TRANSACTION") {
        return fail_all(e.to_string());
    }
    let count = lock(job).statements.len();
    let mut ok = true;
    for i in 0..count {
        let sql = {
            let mut j = lock(job);
            if j.cancel_requested {
                break;
            }
            let s = &mut j.statements[i];
            s.status = "processing";
            s.executed_at = Some(now());
            s.query_id = Some(uuid::Uuid::new_v4().to_string());
            j.executing = true;
            j.changed_at = now();
            j.statements[i].query.clone()
        };
        let outcome = execute(&conn, &sql);
        let mut j = lock(job);
        j.executing = false;
        j.changed_at = now();
        let canceled = j.cancel_requested;
        let s = &mut j.statements[i];
        s.completed_at = Some(now());
        match outcome {
            Ok(result) => {
                s.status = "completed";
                s.rows_affected = result.rows_affected;
                s.number_of_rows = Some(result.total);
                s.result = Some(Arc::new(result));
            }
            Err(_) if canceled => {
                s.status = "canceled";
                ok = false;
                break;
            }
            Err(message) => {
                s.status = "failed";
                s.error = Some(message);
                ok = false;
                break;
            }
        }
    }
    let committed = if transactional {
        let end = if ok && !lock(job).cancel_requested {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        conn.execute_batch(end).map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    // A failed COMMIT (or an interrupted ROLLBACK) must not leave the shared connection in a transaction.
    for _ in 0..3 {
        if conn.is_autocommit() {
            break;
        }
        let _ = conn.execute_batch("ROLLBACK");
    }
    let mut j = lock(job);
    for s in &mut j.statements {
        if s.status == "waiting" {
            s.status = "notExecuted";
        }
    }
    if j.status.is_terminal() {
        return; // canceled meanwhile
    }
    j.status = match committed {
        Ok(()) if ok => JobState::Completed,
        Ok(()) => JobState::Failed,
        Err(message) => {
            if let Some(last) = j.statements.last_mut() {
                last.status = "failed";
                last.error = Some(message);
            }
            JobState::Failed
        }
    };
    j.changed_at = now();
}

/// The first keyword of a statement, upper-case (comments and parentheses skipped).
fn first_keyword(sql: &str) -> String {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix('(') {
            rest = r.trim_start();
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Whether a statement answers with rows (a query) rather than a count of rows it changed.
fn returns_rows(sql: &str) -> bool {
    matches!(
        first_keyword(sql).as_str(),
        "SELECT"
            | "WITH"
            | "VALUES"
            | "FROM"
            | "TABLE"
            | "SHOW"
            | "DESCRIBE"
            | "DESC"
            | "EXPLAIN"
            | "PRAGMA"
            | "SUMMARIZE"
            | "CALL"
    )
}

/// A column's type by the names Snowflake's result sets use.
fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "boolean",
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => "fixed",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "real",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Time32(_) | DataType::Time64(_) => "time",
        DataType::Timestamp(_, Some(_)) => "timestamp_tz",
        DataType::Timestamp(_, None) => "timestamp_ntz",
        DataType::Binary | DataType::LargeBinary | DataType::FixedSizeBinary(_) => "binary",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        _ => "variant",
    }
}

/// Runs one statement; its error is the engine's message.
fn execute(conn: &duckdb::Connection, sql: &str) -> Result<ResultSet, String> {
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    let stream = stmt.stream_arrow([]).map_err(|e| e.to_string())?;
    let schema = stream.get_schema();
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    let mut total = 0u64;
    for batch in stream {
        let batch = batch.map_err(|e| e.to_string())?;
        for r in 0..batch.num_rows() {
            total += 1;
            if rows.len() >= MAX_KEPT_ROWS {
                continue;
            }
            let mut row = Vec::with_capacity(batch.num_columns());
            for col in batch.columns() {
                // Logical nulls: a column of type NULL has no null buffer, yet every value is NULL.
                let null = col.logical_nulls().is_some_and(|n| n.is_null(r));
                row.push(if null {
                    None
                } else {
                    Some(
                        duckdb::arrow::util::display::array_value_to_string(col, r)
                            .map_err(|e| e.to_string())?,
                    )
                });
            }
            rows.push(row);
        }
    }
    if returns_rows(sql) {
        let columns = schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": type_name(f.data_type()), "nullable": f.is_nullable()}))
            .collect();
        return Ok(ResultSet {
            columns,
            message: format!("{total} rows selected"),
            rows,
            total,
            rows_affected: None,
        });
    }
    // DML answers one `Count` row; DDL nothing.
    let affected = match (schema.fields().len(), rows.first()) {
        (1, Some(row)) if schema.field(0).name() == "Count" => row
            .first()
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    Ok(ResultSet {
        columns: Vec::new(),
        rows: Vec::new(),
        total: 0,
        rows_affected: Some(affected),
        message: format!("{affected} rows affected"),
    })
}

fn statement_json(s: &Statement, session_id: &str) -> Value {
    let mut v = json!({
        "id": s.id,
        "query": s.query,
        "status": s.status,
        "sessionId": session_id,
        "createdAt": s.created_at,
    });
    let optional = [
        ("queryId", s.query_id.clone().map(Value::from)),
        ("error", s.error.clone().map(Value::from)),
        ("rowsAffected", s.rows_affected.map(Value::from)),
        ("numberOfRows", s.number_of_rows.map(Value::from)),
        ("executedAt", s.executed_at.clone().map(Value::from)),
        ("completedAt", s.completed_at.clone().map(Value::from)),
    ];
    for (k, val) in optional {
        if let Some(val) = val {
            v[k] = val;
        }
    }
    v
}

fn status_json(j: &Job) -> Value {
    let mut v = json!({
        "queryJobId": j.id,
        "status": j.status.name(),
        "actorType": j.actor_type,
        "createdAt": j.created_at,
        "changedAt": j.changed_at,
        "statements": j.statements.iter().map(|s| statement_json(s, &j.session_id)).collect::<Vec<_>>(),
    });
    if let Some(at) = &j.canceled_at {
        v["canceledAt"] = json!(at);
    }
    if let Some(reason) = &j.cancellation_reason {
        v["cancellationReason"] = json!(reason);
    }
    v
}

fn results(app: &App, id: &str, statement: &str, query: &crate::body::Params) -> Response {
    let page = |key: &str, default: u64| -> Result<u64, String> {
        match query.str(key) {
            None => Ok(default),
            Some(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("\"{key}\" must be a non-negative integer")),
        }
    };
    let (offset, page_size) = match (page("offset", 0), page("pageSize", DEFAULT_PAGE_SIZE)) {
        (Ok(o), Ok(p)) => (o, p),
        (Err(m), _) | (_, Err(m)) => return bad_request(&m),
    };
    if !PAGE_SIZES.contains(&page_size) {
        return bad_request(&format!(
            "pageSize must be between {} and {}, got {page_size}",
            PAGE_SIZES.start(),
            PAGE_SIZES.end()
        ));
    }
    let Some(job) = app.query_jobs.get(id) else {
        return job_not_found(id);
    };
    let (status, result, error) = {
        let j = lock(&job);
        let Some(s) = j.statements.iter().find(|s| s.id == statement) else {
            return error_response(
                StatusCode::NOT_FOUND,
                "queryJob.statementNotFound",
                &format!("Statement \"{statement}\" not found in query job \"{id}\""),
            );
        };
        (s.status, s.result.clone(), s.error.clone())
    };
    let Some(result) = result else {
        return axum::Json(json!({
            "status": status, "columns": [], "data": [], "numberOfRows": 0,
            "message": error.unwrap_or_else(|| format!("The statement is {status}: it has no results.")),
        }))
        .into_response();
    };
    let start = (offset as usize).min(result.rows.len());
    let end = start
        .saturating_add(page_size as usize)
        .min(result.rows.len());
    let mut v = json!({
        "status": status,
        "columns": result.columns,
        "data": result.rows[start..end],
        "numberOfRows": result.total,
        "message": result.message,
    });
    if let Some(n) = result.rows_affected {
        v["rowsAffected"] = json!(n);
    }
    axum::Json(v).into_response()
}

fn cancel(app: &Arc<App>, id: &str, reason: &str) -> Response {
    let Some(job) = app.query_jobs.get(id) else {
        return job_not_found(id);
    };
    {
        let mut j = lock(&job);
        if j.status.is_terminal() {
            return bad_request(&format!(
                "Query job \"{id}\" is already {} and cannot be canceled.",
                j.status.name()
            ));
        }
        mark_canceled(&mut j, reason);
    }
    spawn_interrupter(job);
    axum::Json(json!({"queryJobId": id})).into_response()
}

fn mark_canceled(j: &mut Job, reason: &str) {
    let at = now();
    j.cancel_requested = true;
    j.status = JobState::Canceled;
    j.canceled_at = Some(at.clone());
    j.changed_at = at;
    j.cancellation_reason = Some(reason.to_owned());
}

/// Interrupts the job's running statement until the runner lets go. DuckDB clears an interrupt when the
/// next statement starts, so one that lands between two statements would be lost; repeating it while a
/// statement runs closes that gap, and never touching an idle connection keeps it from hitting other work.
fn spawn_interrupter(job: Arc<Mutex<Job>>) {
    tokio::spawn(async move {
        for _ in 0..1500 {
            {
                let j = lock(&job);
                if j.finished {
                    return;
                }
                if j.executing
                    && let Some(h) = &j.interrupt
                {
                    h.interrupt();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
}

/// Cancels the unfinished jobs of a workspace (it is being deleted).
pub(crate) fn cancel_workspace_jobs(app: &App, workspace_id: u64, reason: &str) {
    let jobs: Vec<Arc<Mutex<Job>>> = app.query_jobs.map().values().cloned().collect();
    for job in jobs {
        let mut j = lock(&job);
        if j.workspace_id == workspace_id && !j.status.is_terminal() {
            mark_canceled(&mut j, reason);
            if j.executing
                && let Some(h) = &j.interrupt
            {
                h.interrupt();
            }
        }
    }
}

/// `GET branches/{b}/workspaces/{w}/queries`: the workspace's statements, oldest first, with their job's id.
fn history(app: &App, ws: &crate::store::WorkspaceRecord) -> Response {
    let jobs: Vec<Arc<Mutex<Job>>> = app.query_jobs.map().values().cloned().collect();
    let mut rows: Vec<(String, Value)> = Vec::new();
    for job in jobs {
        let j = lock(&job);
        if j.workspace_id != ws.id {
            continue;
        }
        for s in &j.statements {
            let mut v = statement_json(s, &j.session_id);
            v["queryJobId"] = json!(j.id);
            v["warehouse"] = json!("EMULATOR");
            v["backendSize"] = json!(ws.backend_size);
            rows.push((s.created_at.clone(), v));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    axum::Json(json!({"statements": rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>()}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_return_rows_are_told_by_their_first_keyword() {
        assert!(returns_rows("  select 1"));
        assert!(returns_rows(
            "-- c\n/* x */ (WITH a AS (SELECT 1) SELECT * FROM a)"
        ));
        assert!(returns_rows("values (1)"));
        assert!(!returns_rows("INSERT INTO t VALUES (1)"));
        assert!(!returns_rows("create table t as select 1"));
        assert!(!returns_rows(""));
    }

    #[test]
    fn execute_keeps_rows_as_text_and_counts_changes() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let r = execute(
            &conn,
            "SELECT 1 AS a, NULL AS b, 'x' AS c, 1.5::DOUBLE AS d",
        )
        .unwrap();
        assert_eq!(
            r.rows,
            vec![vec![
                Some("1".into()),
                None,
                Some("x".into()),
                Some("1.5".into())
            ]]
        );
        assert_eq!(r.columns[0]["name"], "a");
        assert_eq!(r.columns[2]["type"], "text");
        conn.execute_batch("CREATE TABLE t (a INT)").unwrap();
        let r = execute(&conn, "INSERT INTO t SELECT * FROM range(3)").unwrap();
        assert_eq!(r.rows_affected, Some(3));
        assert!(r.rows.is_empty());
        let e = execute(&conn, "SELECT * FROM missing_table").err().unwrap();
        assert!(e.contains("missing_table"), "{e}");
    }
}
