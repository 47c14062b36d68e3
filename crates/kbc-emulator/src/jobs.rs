//! Storage jobs: every async endpoint answers 202 with a job in `waiting`; a background task moves it to
//! `processing` once it holds its table's lock (jobs on one table run one at a time, as in Storage) and a
//! slot of the bounded job pool, runs the blocking work off the async threads, and ends in `success` with the
//! operation's `results` or `error` with `error{code,message,exceptionId}`.

use super::app::App;
use super::error::{ApiError, JobError};
use super::faults::JobFault;
use super::store::{CreatorToken, JobMetrics, JobRecord, JobStatus};
use super::timefmt::{iso, now_secs};
use serde_json::Value;
use std::sync::Arc;

/// At most this many jobs do work at the same time (the machine is small; table locks serialise further).
pub(crate) const MAX_PARALLEL_JOBS: usize = 4;

/// What a job's work returns on success: its `results`.
pub(crate) type JobResult = Result<Value, JobError>;

/// Creates a job record in `waiting` (the 202 body). A record that cannot be saved fails the request.
pub(crate) fn create(
    app: &App,
    operation: &str,
    table_id: Option<&str>,
    params: Value,
) -> Result<JobRecord, ApiError> {
    let created_time = iso(now_secs());
    Ok(app.store.update(|meta| {
        let id = meta.next_id();
        let job = JobRecord {
            id,
            status: JobStatus::Waiting,
            url: format!("{}/v2/storage/jobs/{id}", app.base_url),
            table_id: table_id.map(str::to_owned),
            operation_name: operation.to_owned(),
            operation_params: params,
            created_time,
            start_time: None,
            end_time: None,
            run_id: None,
            results: Value::Null,
            creator_token: CreatorToken {
                id: "1".into(),
                description: "emulator token".into(),
            },
            metrics: JobMetrics::default(),
            error: None,
        };
        meta.jobs.insert(id, job.clone());
        job
    })?)
}

/// Starts a job's work in the background. `lock_key` names the table whose lock it needs (if any).
pub(crate) fn spawn<F>(app: &Arc<App>, job: &JobRecord, lock_key: Option<String>, work: F)
where
    F: FnOnce(&App, Option<JobFault>) -> JobResult + Send + 'static,
{
    let id = job.id;
    let operation = job.operation_name.clone();
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
            j.status = JobStatus::Processing;
            j.start_time = Some(iso(now_secs()));
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
            j.end_time = Some(iso(now_secs()));
            match result {
                Ok(results) => {
                    j.status = JobStatus::Success;
                    j.results = results;
                }
                Err(e) => {
                    j.results = e.results.unwrap_or(Value::Null);
                    j.fail(&e.code, e.message);
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
        // Shutdown waits for the count to reach zero.
        self.0.job_done.notify_waiters();
    }
}

/// Changes a job's record. A background job has nobody to answer, so a failure to save is logged.
fn update(app: &App, id: u64, f: impl FnOnce(&mut JobRecord)) {
    let changed = app.store.update(|meta| {
        if let Some(j) = meta.jobs.get_mut(&id) {
            f(j);
        }
    });
    if let Err(e) = changed {
        tracing::warn!("emulator: cannot persist job {id}: {e}");
    }
}

/// The job's current record.
pub(crate) fn get(app: &App, id: u64) -> Option<JobRecord> {
    app.store.read().jobs.get(&id).cloned()
}

/// Waits until the job is finished (used by "fail after applying" faults and by the seeding helpers).
pub(crate) async fn wait(app: &App, id: u64) -> Option<JobRecord> {
    loop {
        let notified = app.job_done.notified();
        let job = get(app, id)?;
        if job.status.is_finished() {
            return Some(job);
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), notified).await;
    }
}
