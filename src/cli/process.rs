//! What belongs to the process, owned by `cli` alone: the one tokio runtime of a command and the one
//! SIGTERM/SIGINT watcher, which turns a signal into the [`Shutdown`] that the work below awaits.

use crate::shutdown::Shutdown;
use anyhow::Context as _;
use std::future::Future;

/// What a runtime is sized for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workload {
    /// A job or a `tables` command: two workers drive the I/O; DuckDB and file work run on blocking
    /// threads, bounded so that memory stays bounded.
    Job,
    /// `kbc-runner emulator`: a server, sized by tokio's defaults (one worker per core).
    Server,
}

/// Builds the runtime, watches for SIGTERM/SIGINT on it, and runs `work(shutdown)` to its end. A signal
/// triggers the [`Shutdown`] handed to `work`; `work` decides what stopping means.
pub(crate) fn run<T, F>(workload: Workload, work: impl FnOnce(Shutdown) -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Workload::Job = workload {
        limit_malloc_arenas();
        builder.worker_threads(2).max_blocking_threads(8);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let shutdown = Shutdown::default();
    let result = runtime.block_on(async {
        watch_signals(&shutdown);
        work(shutdown.clone()).await
    });
    // After a SIGTERM a DuckDB query may still run on a blocking thread; dropping the runtime would wait
    // for it (found by tests/faults.rs sigterm_during_transform). The process exits right after this.
    runtime.shutdown_background();
    result
}

/// How many malloc arenas a job may use. glibc gives every thread that allocates while others do an arena
/// of its own (up to eight per core) and keeps freed memory in each. bench/transform_memory.py, 4 M rows:
/// peak RSS 269–303 MB with glibc's default, 252 MB with two arenas, 211 MB with one (and 4 % less wall
/// time, 60 % fewer page faults), against 195 MB for the DuckDB CLI, which is built with jemalloc.
const MALLOC_ARENAS: i32 = 1;

/// Caps glibc's malloc arenas before any thread starts, unless `MALLOC_ARENA_MAX` says otherwise (glibc
/// has read it already then).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime's threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// Triggers `shutdown` on the first SIGTERM or SIGINT (the platform stops containers with SIGTERM).
/// Registering can only fail when the runtime has no signal driver; then signals keep their default.
fn watch_signals(shutdown: &Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let cause = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        shutdown.trigger(cause);
    });
}
