//! The Keboola Query Service: SQL jobs run server-side in a workspace, over HTTP, with the Storage token
//! (`POST /api/v1/branches/{branch}/workspaces/{workspace}/queries`, then status, results pages, cancel).
//! Requests go through the Storage client's transport, so they share its retry policy, timeouts, run id
//! and redaction; jobs are polled on the Storage jobs' adaptive schedule.
//!
//! Submitting is a job-creating POST and is never repeated blindly. The one exception is the Query
//! Service's transient `403 Failed to get workspace credentials` (it has a short deadline to fetch them
//! from Connection), which Keboola's own MCP server retries three times; so does [`QueryService::submit`].

use crate::Client;
use crate::error::Error;
use crate::jobs::PollSchedule;
use crate::retry::Idempotency;
use crate::transport::Call;
use crate::types::de_null_default;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The largest results page the Query Service serves.
pub const MAX_PAGE_SIZE: u32 = 10_000;
const CREDENTIALS_RETRIES: u32 = 3;

/// A query job, as `GET /api/v1/queries/{id}` describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryJob {
    pub query_job_id: String,
    /// `created`, `enqueued`, `processing`, `completed`, `failed` or `canceled`.
    pub status: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub statements: Vec<StatementStatus>,
    #[serde(default)]
    pub cancellation_reason: Option<String>,
}

impl QueryJob {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "canceled")
    }
}

/// One statement of a query job.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementStatus {
    pub id: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub query: String,
    /// `waiting`, `processing`, `completed`, `failed`, `canceled` or `notExecuted`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub rows_affected: Option<i64>,
    #[serde(default)]
    pub number_of_rows: Option<u64>,
}

/// One page of a statement's results. Values are text or null, as the Query Service sends them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultsPage {
    #[serde(default, deserialize_with = "de_null_default")]
    pub columns: Vec<ResultColumn>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub data: Vec<Vec<Option<String>>>,
    #[serde(default)]
    pub number_of_rows: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResultColumn {
    pub name: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub r#type: String,
}

/// Why a query job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A statement failed in the backend: the user's SQL (or data).
    #[error("statement {} of {total} failed: {message}", .index + 1)]
    Statement {
        /// Zero-based position in the submitted statements.
        index: usize,
        total: usize,
        query: String,
        message: String,
    },
    /// The job did not finish in time; it was cancelled.
    #[error("the query job {job_id} did not finish within {timeout:?}; it was cancelled")]
    Timeout { job_id: String, timeout: Duration },
    /// The run was stopped; the job was cancelled.
    #[error("the query job {job_id} was cancelled: {reason}")]
    Cancelled { job_id: String, reason: String },
    /// The Query Service could not be asked (after retries), or answered out of shape.
    #[error(transparent)]
    Api(#[from] Error),
}

impl QueryError {
    /// Whether the user can fix it: their SQL, their timeout, their token.
    pub fn is_user(&self) -> bool {
        match self {
            QueryError::Statement { .. } | QueryError::Timeout { .. } => true,
            QueryError::Cancelled { .. } => false,
            QueryError::Api(e) => e.is_user(),
        }
    }
}

/// The Query Service of one workspace.
#[derive(Debug, Clone)]
pub struct QueryService {
    client: Client,
    root: Arc<str>,
    branch_id: String,
    workspace_id: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DevBranch {
    #[serde(deserialize_with = "crate::types::de_u64_lenient")]
    id: u64,
    #[serde(default)]
    is_default: bool,
}

impl Client {
    /// The Query Service's URL: the index's `services[id=query]`, else the stack URL with `connection.`
    /// replaced by `query.` (how Keboola's MCP server finds it on stacks that do not list it).
    pub async fn query_service_url(&self) -> Result<String, Error> {
        let index = self.stack_index().await?;
        if let Some(s) = index.services.iter().find(|s| s.id == "query") {
            return crate::transport::normalize_url(&s.url);
        }
        let root = self.url();
        match root.split_once("://connection.") {
            Some((scheme, rest)) => Ok(format!("{scheme}://query.{rest}")),
            None => Err(Error::Invalid(format!(
                "the Storage API index of {root} lists no Query Service (services[id=query]), so the \
                 workspace engine cannot run SQL on this stack"
            ))),
        }
    }

    /// The numeric id of the run's branch, which the Query Service needs (it refuses `default`): the
    /// given branch id, else the project's default branch from `dev-branches`.
    pub async fn numeric_branch_id(&self) -> Result<String, Error> {
        if let Some(id) = self.inner.transport.branch() {
            return Ok(id.to_owned());
        }
        let branches: Vec<DevBranch> = self
            .inner
            .transport
            .json(&Call::get("dev-branches").global())
            .await?;
        branches
            .iter()
            .find(|b| b.is_default)
            .map(|b| b.id.to_string())
            .ok_or_else(|| Error::Invalid("the project lists no default branch".into()))
    }

    /// The Query Service of workspace `workspace_id` at `url`, in branch `branch_id`.
    pub fn query_service(&self, url: &str, branch_id: &str, workspace_id: u64) -> QueryService {
        QueryService {
            client: self.clone(),
            root: Arc::from(url.trim_end_matches('/')),
            branch_id: branch_id.to_owned(),
            workspace_id,
        }
    }
}

impl QueryService {
    fn call(&self, method: Method, path: String, idempotency: Idempotency) -> Call {
        Call::new(method, path, idempotency).on_service(self.root.clone())
    }

    /// Submits statements as one job; returns its id.
    pub async fn submit(
        &self,
        statements: &[String],
        transactional: bool,
    ) -> Result<String, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Submitted {
            query_job_id: String,
        }
        let call = self
            .call(
                Method::POST,
                format!(
                    "branches/{}/workspaces/{}/queries",
                    self.branch_id, self.workspace_id
                ),
                Idempotency::CreatesJob,
            )
            .json(json!({
                "statements": statements,
                "transactional": transactional,
                "actorType": "system",
            }))
            .hint(format!(
                "check the query history of workspace {}",
                self.workspace_id
            ));
        let mut attempt = 0;
        loop {
            match self.client.inner.transport.json::<Submitted>(&call).await {
                Ok(s) => return Ok(s.query_job_id),
                Err(e) if attempt < CREDENTIALS_RETRIES && is_credentials_race(&e) => {
                    attempt += 1;
                    tracing::warn!(
                        "the Query Service could not get the workspace's credentials yet; trying again \
                         ({attempt} of {CREDENTIALS_RETRIES})"
                    );
                    tokio::time::sleep(Duration::from_secs(attempt as u64)).await;
                }
                Err(e) => return Err(e.with_subject(format!("workspace {}", self.workspace_id))),
            }
        }
    }

    /// `GET /api/v1/queries/{id}`.
    pub async fn status(&self, job_id: &str) -> Result<QueryJob, Error> {
        self.client
            .inner
            .transport
            .json(&self.call(
                Method::GET,
                format!("queries/{job_id}"),
                Idempotency::Idempotent,
            ))
            .await
    }

    /// One page of a statement's results; `page_size` is kept within what the service allows.
    pub async fn results(
        &self,
        job_id: &str,
        statement_id: &str,
        offset: u64,
        page_size: u32,
    ) -> Result<ResultsPage, Error> {
        let call = self
            .call(
                Method::GET,
                format!("queries/{job_id}/{statement_id}/results"),
                Idempotency::Idempotent,
            )
            .query("offset", offset.to_string())
            .query("pageSize", page_size.clamp(100, MAX_PAGE_SIZE).to_string());
        self.client.inner.transport.json(&call).await
    }

    /// Cancels a job; a job that already ended is left as it is.
    pub async fn cancel(&self, job_id: &str, reason: &str) -> Result<(), Error> {
        let call = self
            .call(
                Method::POST,
                format!("queries/{job_id}/cancel"),
                // Cancelling twice cancels nothing more.
                Idempotency::Idempotent,
            )
            .json(json!({ "reason": reason }));
        match self.client.inner.transport.send(&call).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(400) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs statements as one job and waits for it: a failed statement is [`QueryError::Statement`];
    /// past `timeout`, or when `stop` resolves (with its reason), the job is cancelled first.
    pub async fn run(
        &self,
        statements: &[String],
        timeout: Duration,
        stop: impl Future<Output = String>,
    ) -> Result<QueryJob, QueryError> {
        let job_id = self.submit(statements, false).await?;
        tracing::debug!("query job {job_id}: {} statements", statements.len());
        let waited = tokio::select! {
            waited = self.wait(&job_id, timeout) => waited,
            reason = stop => Err(QueryError::Cancelled { job_id: job_id.clone(), reason }),
        };
        match waited {
            Ok(job) => finished(job, statements.len()),
            Err(err) => {
                let reason = match &err {
                    QueryError::Cancelled { reason, .. } => format!("kbc-runner: {reason}"),
                    _ => format!("kbc-runner: {err}"),
                };
                if let Err(e) = self.cancel(&job_id, &reason).await {
                    tracing::warn!("could not cancel query job {job_id}: {e}");
                } else {
                    tracing::info!("cancelled query job {job_id}");
                }
                Err(err)
            }
        }
    }

    /// Polls until the job ends or `timeout` passes.
    async fn wait(&self, job_id: &str, timeout: Duration) -> Result<QueryJob, QueryError> {
        let schedule = PollSchedule::default();
        let start = Instant::now();
        loop {
            let job = self.status(job_id).await?;
            if job.is_terminal() {
                return Ok(job);
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(QueryError::Timeout {
                    job_id: job_id.to_owned(),
                    timeout,
                });
            }
            tokio::time::sleep(schedule.interval(elapsed).min(timeout - elapsed)).await;
        }
    }

    /// Runs one query and reads all its rows (for small answers: catalog lookups).
    pub async fn select(
        &self,
        sql: &str,
        timeout: Duration,
    ) -> Result<(Vec<ResultColumn>, Vec<Vec<Option<String>>>), QueryError> {
        let job = self
            .run(&[sql.to_owned()], timeout, std::future::pending())
            .await?;
        let statement = job.statements.first().ok_or_else(|| {
            QueryError::Api(Error::Decode {
                what: format!("query job {}", job.query_job_id),
                message: "no statements in the answer".into(),
            })
        })?;
        let mut rows = Vec::new();
        let mut columns = Vec::new();
        loop {
            let page = self
                .results(
                    &job.query_job_id,
                    &statement.id,
                    rows.len() as u64,
                    MAX_PAGE_SIZE,
                )
                .await?;
            if columns.is_empty() {
                columns = page.columns;
            }
            let got = page.data.len();
            rows.extend(page.data);
            let total = page.number_of_rows.unwrap_or(rows.len() as u64);
            if got == 0 || rows.len() as u64 >= total {
                return Ok((columns, rows));
            }
        }
    }
}

/// A terminal job as the caller sees it: completed, or the first failed statement as an error.
fn finished(job: QueryJob, total: usize) -> Result<QueryJob, QueryError> {
    match job.status.as_str() {
        "completed" => Ok(job),
        "canceled" => Err(QueryError::Cancelled {
            job_id: job.query_job_id.clone(),
            reason: job
                .cancellation_reason
                .unwrap_or_else(|| "cancelled by someone else".into()),
        }),
        _ => {
            let failed = job
                .statements
                .iter()
                .enumerate()
                .find(|(_, s)| s.status == "failed");
            Err(match failed {
                Some((index, s)) => QueryError::Statement {
                    index,
                    total,
                    query: s.query.clone(),
                    message: s
                        .error
                        .clone()
                        .unwrap_or_else(|| "no message from the backend".into()),
                },
                None => QueryError::Statement {
                    index: 0,
                    total,
                    query: String::new(),
                    message: format!(
                        "the query job {} ended as {} without a failed statement",
                        job.query_job_id, job.status
                    ),
                },
            })
        }
    }
}

fn is_credentials_race(e: &Error) -> bool {
    e.status() == Some(403)
        && e.to_string()
            .to_ascii_lowercase()
            .contains("failed to get workspace credentials")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(value: serde_json::Value) -> QueryJob {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_first_failed_statement_is_the_error() {
        let j = job(json!({
            "queryJobId": "q1", "status": "failed", "actorType": "system",
            "statements": [
                {"id": "s1", "query": "CREATE TABLE a AS SELECT 1", "status": "completed", "rowsAffected": 1},
                {"id": "s2", "query": "SELECT * FROM missing", "status": "failed", "error": "Table missing does not exist"},
                {"id": "s3", "query": "SELECT 2", "status": "notExecuted"}
            ]
        }));
        match finished(j, 3).unwrap_err() {
            QueryError::Statement {
                index,
                total,
                query,
                message,
            } => {
                assert_eq!((index, total), (1, 3));
                assert_eq!(query, "SELECT * FROM missing");
                assert_eq!(message, "Table missing does not exist");
            }
            other => panic!("{other:?}"),
        }
        let done = job(json!({"queryJobId": "q2", "status": "completed", "statements": []}));
        assert!(finished(done, 0).is_ok());
        let cancelled = job(
            json!({"queryJobId": "q3", "status": "canceled", "cancellationReason": "by admin"}),
        );
        let err = finished(cancelled, 1).unwrap_err();
        assert!(!err.is_user());
        assert!(err.to_string().contains("by admin"), "{err}");
    }

    #[test]
    fn results_pages_keep_nulls() {
        let page: ResultsPage = serde_json::from_value(json!({
            "status": "completed",
            "columns": [{"name": "a", "type": "VARCHAR", "nullable": true}],
            "data": [["1"], [null]], "numberOfRows": 2
        }))
        .unwrap();
        assert_eq!(page.data, vec![vec![Some("1".to_owned())], vec![None]]);
        assert_eq!(page.columns[0].name, "a");
    }
}
