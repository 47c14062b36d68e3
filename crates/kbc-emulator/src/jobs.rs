//! Storage jobs: every async endpoint answers 202 with a job in `waiting`; a background task moves it to
//! `processing` once it holds its table's lock (jobs on one table run one at a time, as in Storage) and a
//! slot of the bounded job pool, runs the blocking work off the async threads, and ends in `success` with the
//! operation's `results` or `error` with `error{code,message,exceptionId}`.

use super::error::{JobError, exception_id};
use super::faults::JobFault;
use super::server::App;
use super::timefmt::{iso, now_secs};
use serde_json::{Value, json};
use std::sync::Arc;

/// At most this many jobs do work at the same time (the machine is small; table locks serialise further).
pub const MAX_PARALLEL_JOBS: usize = 4;

/// What a job's work returns on success: its `results`.
pub type JobResult = Result<Value, JobError>;

/// Creates a job record in `waiting` and returns its JSON (the 202 body).
pub fn create(app: &App, operation: &str, table_id: Option<&str>, params: Value) -> Value {
    let mut meta = app.store.lock();
    let id = meta.next_id();
    let job = json!({
        "id": id,
        "status": "waiting",
        "url": format!("{}/v2/storage/jobs/{id}", app.base_url),
        "tableId": table_id,
        "operationName": operation,
        "operationParams": params,
        "createdTime": iso(now_secs()),
        "startTime": null,
        "endTime": null,
        "runId": null,
        "results": null,
        "creatorToken": {"id": "1", "description": "emulator token"},
        "metrics": {"inCompressed": false, "inBytes": 0, "inBytesUncompressed": 0,
                    "outCompressed": false, "outBytes": 0, "outBytesUncompressed": 0},
    });
    meta.jobs.insert(id, job.clone());
    drop(meta);
    let _ = app.store.persist();
    job
}

/// Starts a job's work in the background. `lock_key` names the table whose lock it needs (if any).
pub fn spawn<F>(app: &Arc<App>, job: &Value, lock_key: Option<String>, work: F)
where
    F: FnOnce(&App, Option<JobFault>) -> JobResult + Send + 'static,
{
    let id = job["id"].as_u64().unwrap_or(0);
    let operation = job["operationName"].as_str().unwrap_or("").to_owned();
    let app = app.clone();
    tokio::spawn(async move {
        let fault = app.faults.take_job_fault(&operation);
        if matches!(fault, Some(JobFault::Hang)) {
            return; // stays `waiting` forever
        }
        let _running = Running::start(&app);
        let table_lock = lock_key.map(|k| app.store.table_lock(&k));
        let _table_guard = match &table_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let Ok(_slot) = app.job_slots.clone().acquire_owned().await else {
            return;
        };
        update(&app, id, |j| {
            j["status"] = "processing".into();
            j["startTime"] = iso(now_secs()).into();
        });
        if let Some(JobFault::Delay(ms)) = fault {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let result = match fault {
            Some(JobFault::Fail { code, message }) => Err(JobError::new(&code, message)),
            other => {
                let app2 = app.clone();
                match tokio::task::spawn_blocking(move || work(&app2, other)).await {
                    Ok(r) => r,
                    Err(_) => Err(JobError::new(
                        "applicationError",
                        "the emulator's job worker panicked",
                    )),
                }
            }
        };
        update(&app, id, |j| {
            j["endTime"] = iso(now_secs()).into();
            match result {
                Ok(results) => {
                    j["status"] = "success".into();
                    j["results"] = results;
                }
                Err(e) => {
                    j["status"] = "error".into();
                    j["results"] = e.results.unwrap_or(Value::Null);
                    j["error"] = json!({"code": e.code, "message": e.message, "exceptionId": exception_id()});
                }
            }
        });
        app.job_done.notify_waiters();
    });
}

/// Counts a job as running for as long as it lives (see `App::jobs_running`).
struct Running<'a>(&'a App);

impl<'a> Running<'a> {
    fn start(app: &'a App) -> Self {
        app.jobs_running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(app)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .jobs_running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn update(app: &App, id: u64, f: impl FnOnce(&mut Value)) {
    {
        let mut meta = app.store.lock();
        if let Some(j) = meta.jobs.get_mut(&id) {
            f(j);
        }
    }
    if let Err(e) = app.store.persist() {
        tracing::warn!("emulator: cannot persist job {id}: {e}");
    }
}

/// The job's current JSON.
pub fn get(app: &App, id: u64) -> Option<Value> {
    app.store.lock().jobs.get(&id).cloned()
}

/// Waits until the job is finished (used by "fail after applying" faults and by the seeding helpers).
pub async fn wait(app: &App, id: u64) -> Option<Value> {
    loop {
        let notified = app.job_done.notified();
        let job = get(app, id)?;
        if matches!(job["status"].as_str(), Some("success" | "error")) {
            return Some(job);
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), notified).await;
    }
}
