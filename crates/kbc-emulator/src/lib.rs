//! A local Keboola Storage API: the subset of `/v2/storage` that Keboola clients use (tokens, buckets, tables,
//! async jobs, import/export, files, workspaces), the Query Service (`/api/v1`) over DuckDB workspaces, its
//! own S3-compatible file storage at the same base URL, a persistent store, and fault injection. It stands for Keboola, so it shares nothing with the runner but the wire format.
//!
//! Start it with `kbc-runner emulator --listen 127.0.0.1:0 --store DIR --token T`, or in-process with
//! [`Emulator::start`] / [`Emulator::start_with_options`]. What it implements and how it behaves, the
//! control API (`/_emulator/...`) and the fault rules ([`FaultRule`]) are described once, in this crate's
//! `README.md`.
//!
//! Inside: `server` is the HTTP front (logging, faults, routing), `api` the Storage API (one router per
//! resource), `query` the Query Service, `s3` the file storage, `jobs` the job runner, `table` the table
//! engine, `workspace` the workspaces' DuckDB databases, `store` the persistent state, `app` the state they
//! share.

#![warn(unreachable_pub)]

mod api;
mod app;
mod body;
mod error;
pub mod faults;
mod jobs;
mod query;
mod s3;
mod server;
mod store;
mod table;
mod timefmt;
mod tls;
mod workspace;

pub use faults::FaultRule;
pub use store::Project;
pub use tls::TlsFiles;

use anyhow::Context;
use app::App;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where to listen, where to keep state, which tokens to accept.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub store: PathBuf,
    pub tokens: Vec<String>,
}

/// How the emulator is reached: TLS, and the URL it advertises.
#[derive(Debug, Clone, Default)]
pub struct EmulatorOptions {
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The base of every absolute URL in answers (resource `uri`s, file URLs, the index's services), e.g.
    /// `https://storage.example.com` behind a proxy or TLS front. Default: the listening address.
    pub public_url: Option<String>,
    /// Log each request (method, path, status) at info level, as `kbc-runner emulator` does.
    pub log_requests: bool,
}

/// A running emulator (its server is a task on the runtime that started it).
pub struct Emulator {
    app: Arc<App>,
    addr: SocketAddr,
    local_url: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Emulator {
    /// Binds (port 0 allowed), loads the store, serves in a background tokio task of the current runtime.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Emulator> {
        Self::start_with_options(config, EmulatorOptions::default()).await
    }

    /// Like [`Emulator::start`], with TLS and/or a public URL.
    pub async fn start_with_options(
        config: EmulatorConfig,
        options: EmulatorOptions,
    ) -> anyhow::Result<Emulator> {
        let log_requests = options.log_requests;
        if config.tokens.iter().all(|t| t.trim().is_empty()) {
            anyhow::bail!("the emulator needs at least one non-empty token");
        }
        let public_url = options
            .public_url
            .as_deref()
            .map(parse_public_url)
            .transpose()?;
        let acceptor = options.tls.as_ref().map(tls::acceptor).transpose()?;
        let store_dir = config.store.clone();
        let store = tokio::task::spawn_blocking(move || store::Store::open(&store_dir))
            .await
            .context("the store loader panicked")?
            .with_context(|| {
                format!(
                    "cannot open the emulator store at {}",
                    config.store.display()
                )
            })?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let local_url = format!("{scheme}://{addr}");
        let base_url = public_url.unwrap_or_else(|| local_url.clone());
        let app = Arc::new(App {
            store,
            tokens: config.tokens.clone(),
            hosts: server::own_hosts(&base_url),
            base_url,
            faults: faults::Faults::default(),
            job_slots: Arc::new(tokio::sync::Semaphore::new(jobs::MAX_PARALLEL_JOBS)),
            job_done: tokio::sync::Notify::new(),
            log_requests,
            jobs_running: std::sync::atomic::AtomicUsize::new(0),
            workspaces: workspace::Workspaces::default(),
            query_jobs: query::QueryJobs::default(),
            stats: app::Stats::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = server::router(app.clone());
        let stopped = async move {
            let _ = rx.await;
        };
        let task = match acceptor {
            None => tokio::spawn(async move {
                let served = axum::serve(listener, router).with_graceful_shutdown(stopped);
                if let Err(e) = served.await {
                    tracing::error!("emulator server stopped: {e}");
                }
            }),
            Some(acceptor) => {
                let listener = tls::TlsListener::new(listener, acceptor)
                    .context("cannot read the bound address")?;
                tokio::spawn(async move {
                    let served = axum::serve(listener, router).with_graceful_shutdown(stopped);
                    if let Err(e) = served.await {
                        tracing::error!("emulator server stopped: {e}");
                    }
                })
            }
        };
        Ok(Emulator {
            app,
            addr,
            local_url,
            shutdown: tx,
            task,
        })
    }

    /// The URL the emulator advertises (no trailing slash): the public URL when one was set, else
    /// [`Emulator::local_url`].
    pub fn url(&self) -> String {
        self.app.base_url.clone()
    }

    /// Where it listens: `http://127.0.0.1:PORT`, or `https://…` with TLS.
    pub fn local_url(&self) -> String {
        self.local_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates bucket and table when missing and does a full load; `csv` has a header row (RFC 4180, `,`
    /// and `"`).
    pub async fn seed_table(
        &self,
        table_id: &str,
        csv: &[u8],
        primary_key: &[String],
    ) -> anyhow::Result<()> {
        let tmp = self.app.store.tmp_path("seed");
        tokio::fs::write(&tmp, csv)
            .await
            .with_context(|| format!("cannot stage the seed CSV of {table_id}"))?;
        let result = api::seed_table(&self.app, table_id, tmp.clone(), primary_key).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result.map_err(|e| {
            anyhow::anyhow!("cannot seed table {table_id}: {} ({})", e.message, e.code)
        })
    }

    /// Seeds every `DIR/tables/<table_id>.csv`; an optional `DIR/tables/<table_id>.csv.manifest` JSON may
    /// give `{"primary_key": [..]}`.
    pub async fn seed_dir(&self, dir: &Path) -> anyhow::Result<()> {
        let tables = dir.join("tables");
        let mut entries = tokio::fs::read_dir(&tables)
            .await
            .with_context(|| format!("cannot read {}", tables.display()))?;
        let mut files = Vec::new();
        while let Some(e) = entries
            .next_entry()
            .await
            .with_context(|| format!("cannot read {}", tables.display()))?
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(table_id) = name.strip_suffix(".csv") {
                files.push((table_id.to_owned(), e.path()));
            }
        }
        files.sort();
        for (table_id, path) in files {
            let manifest = path.with_file_name(format!("{table_id}.csv.manifest"));
            let primary_key: Vec<String> = match tokio::fs::read(&manifest).await {
                Ok(bytes) => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes)
                        .with_context(|| format!("{} is not valid JSON", manifest.display()))?;
                    v.get("primary_key")
                        .and_then(|p| p.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", manifest.display()));
                }
            };
            let csv = tokio::fs::read(&path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?;
            self.seed_table(&table_id, &csv, &primary_key).await?;
        }
        Ok(())
    }

    /// The table's rows as CSV: header line, then rows sorted ascending (deterministic), all values quoted,
    /// `\n`; None when the table does not exist. No `_timestamp` column.
    pub async fn dump_table(&self, table_id: &str) -> anyhow::Result<Option<String>> {
        api::dump_table(&self.app, table_id)
            .await
            .map_err(|e| anyhow::anyhow!("cannot dump table {table_id}: {}", e.message))
    }

    /// Adds a fault rule (see [`faults`]).
    pub fn add_fault(&self, rule: FaultRule) -> anyhow::Result<()> {
        self.app
            .faults
            .add(rule)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The project's settings: stack and project features, branch storage (kept in the store).
    pub fn project(&self) -> Project {
        self.app.store.read().project.clone()
    }

    /// Sets the project's settings (see [`Project`]) and saves them in the store.
    pub fn set_project(&self, project: Project) -> anyhow::Result<()> {
        self.app
            .store
            .update(|meta| meta.project = project)
            .context("saving the emulator store")
    }

    /// Expires every S3 access key issued so far (a client must fetch fresh credentials from Storage).
    /// Returns how many keys were live, or 0 when the change could not be saved (logged as an error).
    pub fn expire_credentials(&self) -> usize {
        self.app.expire_credentials().unwrap_or_else(|e| {
            tracing::error!("emulator: cannot save the expired S3 keys: {e}");
            0
        })
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.app.faults.clear();
    }

    /// Stops accepting connections and waits (briefly) for the server task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
        // Let running jobs finish their writes (bounded: a job is a few seconds at most here). Each job
        // notifies `job_done` when it stops counting as running.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let stopped = self.app.job_done.notified();
            let running = self
                .app
                .jobs_running
                .load(std::sync::atomic::Ordering::SeqCst);
            if running == 0 || tokio::time::timeout_at(deadline, stopped).await.is_err() {
                break;
            }
        }
    }
}

/// `--public-url`: an absolute http(s) URL without query or fragment; kept without its trailing slash.
fn parse_public_url(text: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(text.trim())
        .with_context(|| format!("the public URL {text:?} is not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("the public URL {text:?} must be an http:// or https:// URL with a host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        anyhow::bail!("the public URL {text:?} must not have a query or fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}
