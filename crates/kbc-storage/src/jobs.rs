//! Waiting for Storage jobs: the first poll at once, then an adaptive interval (a tenth of the time waited
//! so far, at least 100 ms and at most 2.5 s),
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

/// How often to poll. The interval is a tenth of the time already waited, between `first` and `max`: a job
/// is then noticed at most max(100 ms, 10 % of its duration) after it ends, while a long export is polled
/// only every 2.5 s. Most table jobs finish well under a second on an idle stack, hence the short start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    pub first: Duration,
    pub max: Duration,
    /// The share of the elapsed time to wait before the next poll.
    pub share: f64,
}

impl Default for PollSchedule {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_millis(2500),
            share: 0.1,
        }
    }
}

impl PollSchedule {
    pub(crate) fn interval(&self, elapsed: Duration) -> Duration {
        elapsed.mul_f64(self.share).clamp(self.first, self.max)
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
        tokio::time::sleep(schedule.interval(elapsed).min(timeout - elapsed)).await;
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
        // First poll at once, then every 100 ms for a second, then a tenth of the time waited, capped at
        // 2.5 s, the last one at the deadline: a job is noticed at most max(100 ms, 10 %) after it ends.
        assert_eq!(polls[0], start);
        assert_eq!(polls[1] - polls[0], Duration::from_millis(100));
        assert_eq!(polls[2] - polls[1], Duration::from_millis(100));
        for w in polls.windows(2) {
            let waited = w[0] - start;
            // Tokio's timer has millisecond resolution.
            let bound =
                waited.mul_f64(0.1).max(Duration::from_millis(100)) + Duration::from_millis(1);
            assert!(
                w[1] - w[0] <= bound,
                "gap {:?} after {waited:?}",
                w[1] - w[0]
            );
        }
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
