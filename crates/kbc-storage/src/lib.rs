//! A client for the Keboola Storage API (`/v2/storage`): buckets, tables, async jobs, and File Storage
//! transfers on AWS S3, Azure Blob Storage and Google Cloud Storage.
//!
//! It is a library of its own: it knows nothing of the pipeline, the CLI or the Common Interface. The token
//! and every cloud credential is a [`Secret`]: never in `Debug` output or errors, and registered for
//! [`secret::redact`], which programs built on the client apply to everything they print.
//!
//! - [`transport`] sends requests under the [`RetryPolicy`] (retry what is transient, never repeat a
//!   job-creating POST the server may have acted on) and builds branch-aware paths;
//! - [`jobs`] waits for jobs with an adaptive interval and a deadline;
//! - `tables`, `buckets` and `files` are the typed endpoints; `export_table`, `upload_file` and
//!   `load_table` are the composed flows (export job → file detail → parallel slice download; prepare →
//!   upload; create when missing → delete rows → import job, dropping a table it created on failure);
//! - [`ids`], [`dialect`] and [`Operator`] are the typed values requests take; [`stack`] resolves the URL
//!   and token from the environment; [`secret`] holds the redaction registry; [`local_csv`] reads local
//!   files (gzip told by content);
//! - [`query`] is the Query Service (SQL jobs in a workspace) and `workspaces` the workspaces it runs in,
//!   with their input mapping and the import of workspace tables back into Storage;
//! - [`providers`] turns File Storage credentials into an `object_store` client; [`download`] and
//!   [`upload`] stream data through it with bounded parallelism and flat memory.

pub mod branch;
mod buckets;
mod credentials;
pub mod dialect;
pub mod download;
mod error;
mod files;
pub mod ids;
pub mod jobs;
mod load;
pub mod local_csv;
pub mod progress;
pub mod providers;
pub mod query;
pub mod retry;
pub mod secret;
pub mod stack;
mod tables;
pub mod transport;
pub mod types;
pub mod upload;
mod workspaces;

pub use branch::BranchMode;
pub use dialect::{Delimiter, Dialect, DialectError, Enclosure};
pub use download::header_line;
pub use error::{ApiError, Error, JobFailure, JobTimeout};
pub use files::STREAM_GZIP_ABOVE;
pub use ids::{BucketId, IdError, TableId};
pub use load::{DataSource, LoadError, LoadOutcome, LoadSpec, LoadStep, NewTable};
pub use progress::{TransferProgress, human_bytes};
pub use providers::Endpoints;
pub use query::{QueryError, QueryJob, QueryService};
pub use retry::{Idempotency, RetryPolicy};
pub use secret::Secret;
pub use stack::{Credentials, MissingCredentials};
pub use types::*;
pub use workspaces::{NewWorkspace, Workspace, WorkspaceConnection, WorkspaceObject};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use transport::{Call, Transport, TransportConfig};

/// How to reach and talk to a Storage API stack.
#[derive(Clone)]
pub struct ClientConfig {
    /// The stack URL, e.g. `https://connection.keboola.com` (a bare host gets `https://`).
    pub url: String,
    /// The Storage API token.
    pub token: Secret,
    /// A branch id (`KBC_BRANCHID`). A development branch is handled as the platform handles it (see
    /// [`branch`]): with branch storage, `/v2/storage/branch/{id}/...` paths; without, the branch's
    /// `c-{id}-` buckets. The default branch's id means production.
    pub branch: Option<String>,
    /// Whether the project has branch storage; `None` (the default) reads it from the token's project
    /// features (`protected-default-branch`), as the platform's job runner does.
    pub branch_storage: Option<bool>,
    /// How long to wait for one job.
    pub job_timeout: Duration,
    /// The global bound on parallel slice transfers.
    pub max_connections: usize,
    /// The retry policy of API requests.
    pub retry: RetryPolicy,
    /// Cloud endpoint overrides (emulators); [`ClientConfig::new`] reads them from the environment.
    pub endpoints: Endpoints,
    pub connect_timeout: Duration,
    /// The longest silence while reading a response.
    pub read_timeout: Duration,
    /// The run id sent as `X-KBC-RunId` on every request; [`ClientConfig::new`] reads `KBC_RUNID`.
    pub run_id: Option<String>,
}

impl ClientConfig {
    /// Defaults: no branch, job timeout 1 h, 8 parallel transfers, endpoint overrides from the environment.
    pub fn new(url: impl Into<String>, token: impl Into<Secret>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            branch: None,
            branch_storage: None,
            job_timeout: Duration::from_secs(3600),
            max_connections: 8,
            retry: RetryPolicy::default(),
            endpoints: Endpoints::from_env(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            run_id: std::env::var("KBC_RUNID")
                .ok()
                .filter(|r| !r.trim().is_empty()),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &self.token)
            .field("branch", &self.branch)
            .field("job_timeout", &self.job_timeout)
            .field("max_connections", &self.max_connections)
            .field("run_id", &self.run_id)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A Storage API client. Cheap to clone; clones share connections, the transfer bound and progress.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    job_timeout: Duration,
    poll: jobs::PollSchedule,
    /// One permit per concurrent slice transfer, shared by every export and upload of this client.
    slots: Arc<Semaphore>,
    max_connections: usize,
    endpoints: Endpoints,
    progress: Arc<TransferProgress>,
    branch_storage: Option<bool>,
    /// Found out on first use and kept for the client's life (one run).
    branch_mode: tokio::sync::OnceCell<BranchMode>,
    stack_index: tokio::sync::OnceCell<branch::Index>,
    /// Held while a bucket is made sure of: tables load in parallel, and several may go to one new bucket.
    bucket_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.transport.root())
            .field("branch", &self.inner.transport.branch())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// One place in the client-wide bound on parallel transfers, held for as long as the permit lives.
    pub(crate) async fn transfer_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Invalid("the client was shut down".into()))
    }

    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        if config.max_connections == 0 {
            return Err(Error::Invalid("max_connections must be at least 1".into()));
        }
        let mut retry = config.retry;
        // Maintenance and Retry-After waits may last as long as a job may.
        retry.wait_deadline = retry.wait_deadline.min(config.job_timeout);
        let transport = Transport::new(TransportConfig {
            url: config.url,
            token: Secret::new(config.token.expose().trim()),
            branch: config
                .branch
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty()),
            retry,
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            run_id: config.run_id,
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                job_timeout: config.job_timeout,
                poll: jobs::PollSchedule::default(),
                slots: Arc::new(Semaphore::new(config.max_connections)),
                max_connections: config.max_connections,
                endpoints: config.endpoints,
                progress: Arc::new(TransferProgress::default()),
                branch_storage: config.branch_storage,
                branch_mode: tokio::sync::OnceCell::new(),
                stack_index: tokio::sync::OnceCell::new(),
                bucket_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The stack URL in use (normalized).
    pub fn url(&self) -> &str {
        self.inner.transport.root()
    }

    /// Counters of the transfer in progress, for progress reporting.
    pub fn progress(&self) -> Arc<TransferProgress> {
        self.inner.progress.clone()
    }

    /// `GET tokens/verify`: who the token is and which project it belongs to.
    pub async fn verify_token(&self) -> Result<TokenInfo, Error> {
        self.inner
            .transport
            .json(&Call::get("tokens/verify").global())
            .await
    }

    /// Waits for a job with the configured deadline; a job that ends in `error` is [`Error::JobFailed`].
    pub async fn wait_for_job(&self, job_id: u64) -> Result<Job, Error> {
        let transport = &self.inner.transport;
        jobs::wait_with(
            job_id,
            self.inner.job_timeout,
            self.inner.poll,
            || async move {
                transport
                    .json::<Job>(&Call::get(format!("jobs/{job_id}")).global())
                    .await
            },
        )
        .await
    }

    /// How to renew a file's credentials mid-transfer: `PUT files/{id}/refresh` in the scope the file was
    /// read in.
    pub(crate) fn refresher(
        &self,
        file_id: u64,
        purpose: providers::Purpose,
        default_branch: bool,
    ) -> credentials::Refresh {
        let client = self.clone();
        credentials::Refresh {
            file_id,
            purpose,
            fetch: Arc::new(move || {
                let client = client.clone();
                futures::FutureExt::boxed(async move {
                    let mut call = Call::new(
                        reqwest::Method::PUT,
                        format!("files/{file_id}/refresh"),
                        Idempotency::Idempotent,
                    );
                    if default_branch {
                        call = call.global();
                    }
                    client
                        .inner
                        .transport
                        .json::<FileInfo>(&call)
                        .await
                        .map_err(|e| e.with_subject(format!("file {file_id}")))
                })
            }),
        }
    }

    /// Sends a call answered by a job (202), then waits for the job.
    async fn run_job(&self, call: Call) -> Result<Job, Error> {
        let job: Job = self.inner.transport.json(&call).await?;
        tracing::debug!("job {} ({}) queued", job.id, job.operation_name);
        if job.is_finished() && job.status == "success" {
            return Ok(job);
        }
        self.wait_for_job(job.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_client_hide_the_token() {
        let c = ClientConfig::new("connection.keboola.com", "1234-secret-token");
        assert!(!format!("{c:?}").contains("secret-token"));
        assert_eq!(c.job_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_connections, 8);
        let client = Client::new(c).unwrap();
        assert!(!format!("{client:?}").contains("secret-token"));
        assert_eq!(client.url(), "https://connection.keboola.com");
        assert!(
            Client::new(ClientConfig::new("x.keboola.com", " "))
                .unwrap_err()
                .is_user()
        );
    }
}
