//! The shared state of a running emulator (`App`): store, tokens, fault rules, the job pool, workspaces,
//! query jobs and transfer counters. It lives
//! apart from the HTTP front so that the front, the Storage API, the S3 storage and the job runner all
//! depend on it and none of them on each other.

use crate::error::{ApiError, JobError};
use crate::faults::Faults;
use crate::store::{PersistError, Store, TableRecord};
use crate::timefmt::now_secs;
use axum::http::{HeaderMap, StatusCode, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{Notify, Semaphore};

/// Shared state of a running emulator.
pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) tokens: Vec<String>,
    /// `http://HOST:PORT` (or the public URL), used in `uri`/`url` fields.
    pub(crate) base_url: String,
    /// Lower-case host names of the emulator itself: `<bucket>.<host>` addresses a bucket.
    pub(crate) hosts: Vec<String>,
    pub(crate) faults: Faults,
    pub(crate) job_slots: Arc<Semaphore>,
    /// Notified whenever a job finishes (waiters re-check what they wait for).
    pub(crate) job_done: Notify,
    /// Print one line per request on stdout (binary mode).
    pub(crate) log_requests: bool,
    /// Jobs started and not yet finished (hung jobs excluded): shutdown waits for them, so no job writes to
    /// the store after the emulator has stopped.
    pub(crate) jobs_running: AtomicUsize,
    /// The open workspace databases.
    pub(crate) workspaces: crate::workspace::Workspaces,
    /// The Query Service's jobs (in memory).
    pub(crate) query_jobs: crate::query::QueryJobs,
    /// Counters of `GET /_emulator/stats`.
    pub(crate) stats: Stats,
}

/// File transfers through the S3 front since the start: what `GET /_emulator/stats` reports, so tests can
/// prove that work done in a workspace moved no table data through the client.
#[derive(Default)]
pub(crate) struct Stats {
    /// Object PUTs and multipart part uploads.
    pub(crate) uploads: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    /// Object GETs (not HEADs).
    pub(crate) downloads: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
}

impl Stats {
    pub(crate) fn upload(&self, bytes: u64) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn download(&self, bytes: u64) {
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.bytes_down.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl App {
    /// A copy of a table's metadata, for a job that works on it; a missing table fails the job.
    pub(crate) fn table_snapshot(&self, table_id: &str) -> Result<TableRecord, JobError> {
        self.store
            .read()
            .tables
            .get(table_id)
            .cloned()
            .ok_or_else(|| ApiError::table_not_found(table_id).into())
    }

    /// Whether the request carries one of the emulator's tokens. Errors are the real API's 401s.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get("x-storageapi-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        if token.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "",
                "Access token must be set",
            ));
        }
        if !self.tokens.iter().any(|t| t == &token) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "storage.tokenInvalid",
                "Invalid access token",
            ));
        }
        Ok(())
    }

    /// Expires every issued S3 access key (S3 then answers 400 `ExpiredToken`; asking Storage for the file's
    /// credentials again issues fresh ones). Returns how many keys were live.
    pub(crate) fn expire_credentials(&self) -> Result<usize, PersistError> {
        let now = now_secs();
        self.store.update(|meta| {
            let mut n = 0;
            for k in meta.access_keys.values_mut().filter(|k| k.expiration > now) {
                k.expiration = now - 1;
                n += 1;
            }
            n
        })
    }
}
