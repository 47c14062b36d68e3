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
