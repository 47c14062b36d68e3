//! Waiting for Storage jobs: the first poll at once, then an adaptive interval (100 ms growing to 2.5 s),
//! and an overall deadline. Errors name the job, its operation and table, the elapsed time and the
//! server's exceptionId.
//!
//! The loop is written against a fetch function rather than the HTTP client, so its timing can be tested
//! with a paused clock.

use super::error::{Error, JobFailure, JobTimeout};
use super::types::Job;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often to poll: the first interval and its cap. Most table jobs finish in well under a second on an
/// idle stack, so start short; a 2.5 s cap keeps long exports from hammering the API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    pub first: Duration,
    pub max: Duration,
    pub growth: f64,
}

impl Default for PollSchedule {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_millis(2500),
            growth: 1.5,
        }
    }
}

impl PollSchedule {
    fn next(&self, current: Duration) -> Duration {
        current.mul_f64(self.growth).min(self.max)
    }
}

/// Polls `fetch` until the job finishes or `timeout` passes. A job that ends in `error` is returned as
/// [`Error::JobFailed`].
pub async fn wait_with<F, Fut>(
    job_id: u64,
    timeout: Duration,
    schedule: PollSchedule,
    mut fetch: F,
) -> Result<Job, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Job, Error>>,
{
    let start = Instant::now();
    let mut interval = schedule.first;
    loop {
        let job = fetch().await?;
        let elapsed = start.elapsed();
        match job.status.as_str() {
            "success" => {
                tracing::debug!(
                    "job {job_id} ({}) finished in {elapsed:.1?}",
                    job.operation_name
                );
                return Ok(job);
            }
            "error" => {
                let err = job.error.clone();
                return Err(Error::JobFailed(Box::new(JobFailure {
                    job_id,
                    operation: job.operation_name,
                    table_id: job.table_id,
                    code: err.as_ref().and_then(|e| e.code.clone()),
                    message: err
                        .as_ref()
                        .map(|e| e.message.clone())
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "the job ended with status error and no message".into()),
                    exception_id: err.and_then(|e| e.exception_id),
                    elapsed,
                })));
            }
            _ => {}
        }
        if elapsed >= timeout {
            return Err(Error::JobTimeout(Box::new(JobTimeout {
                job_id,
                operation: job.operation_name,
                table_id: job.table_id,
                status: job.status,
                elapsed,
                timeout,
            })));
        }
        // Never sleep past the deadline: the last poll happens right at it.
        tokio::time::sleep(interval.min(timeout - elapsed)).await;
        interval = schedule.next(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn job(status: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": 42, "status": status, "operationName": "tableExport", "tableId": "in.c-main.t",
            "error": if status == "error" { serde_json::json!({"code":"storage.tables.validation","message":"bad filter","exceptionId":"exception-77"}) } else { serde_json::Value::Null },
        }))
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_names_the_job_and_polls_adaptively() {
        let polls: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let start = Instant::now();
        let seen = polls.clone();
        let err = wait_with(
            42,
            Duration::from_secs(3600),
            PollSchedule::default(),
            move || {
                seen.lock().unwrap().push(Instant::now());
                async { Ok(job("processing")) }
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, Error::JobTimeout(t) if t.job_id == 42),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("job 42 (tableExport on in.c-main.t) is still processing after 3600"),
            "{text}"
        );
        assert!(err.is_user());
        let polls = polls.lock().unwrap();
        // First poll at once, then 100 ms, 150 ms, ... capped at 2.5 s, the last one at the deadline.
        assert_eq!(polls[0], start);
        assert_eq!(polls[1] - polls[0], Duration::from_millis(100));
        assert_eq!(polls[2] - polls[1], Duration::from_millis(150));
        let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= Duration::from_millis(2500)));
        assert_eq!(gaps[gaps.len() - 2], Duration::from_millis(2500));
        assert_eq!(*polls.last().unwrap() - start, Duration::from_secs(3600));
        assert!(
            polls.len() > 1400 && polls.len() < 1500,
            "{} polls",
            polls.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn finished_jobs_return_at_once_and_errors_carry_details() {
        let mut n = 0;
        let ok = wait_with(42, Duration::from_secs(10), PollSchedule::default(), || {
            n += 1;
            let status = if n < 3 { "waiting" } else { "success" };
            async move { Ok(job(status)) }
        })
        .await
        .unwrap();
        assert_eq!(ok.status, "success");
        assert_eq!(n, 3);
        let err = wait_with(
            42,
            Duration::from_secs(10),
            PollSchedule::default(),
            || async { Ok(job("error")) },
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        for part in [
            "job 42",
            "tableExport",
            "in.c-main.t",
            "bad filter",
            "storage.tables.validation",
            "exception-77",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
    }
}
