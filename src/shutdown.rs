//! The stop signal of one process: `cli` installs the SIGTERM/SIGINT watcher and passes a [`Shutdown`]
//! down; the pipeline and the emulator command only await it. Nothing below `cli` touches signals.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// The run was stopped by SIGTERM or SIGINT (the platform stops containers with SIGTERM).
#[derive(Debug, thiserror::Error)]
#[error("stopped by {0} before finishing; nothing was published for the unfinished work")]
pub(crate) struct Terminated(pub(crate) &'static str);

/// A cancellation token that remembers what cancelled it. Clones share the one token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shutdown {
    token: CancellationToken,
    cause: Arc<OnceLock<&'static str>>,
}

impl Shutdown {
    /// Asks everything that waits on this to stop; the first cause is kept.
    pub(crate) fn trigger(&self, cause: &'static str) {
        let _ = self.cause.set(cause);
        self.token.cancel();
    }

    /// Resolves when [`Shutdown::trigger`] was called, with its cause.
    pub(crate) async fn requested(&self) -> &'static str {
        self.token.cancelled().await;
        self.cause.get().copied().unwrap_or("a shutdown request")
    }

    /// Awaits `work` unless shutdown comes first. Then the work future is dropped, so its temporary files
    /// (dropped guards) are removed and no success manifest or renamed output appears; the result is
    /// [`Terminated`], which exits 2 like any application error. Blocking work on other threads (a DuckDB
    /// query) is not waited for: the process exits right after.
    pub(crate) async fn unless_requested<T>(
        &self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            result = work => result,
            cause = self.requested() => Err(Terminated(cause).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_finishes_when_nobody_asks_to_stop() {
        let shutdown = Shutdown::default();
        let out = shutdown.unless_requested(async { Ok(7) }).await.unwrap();
        assert_eq!(out, 7);
    }

    #[tokio::test]
    async fn a_request_drops_the_work_and_names_its_first_cause() {
        let shutdown = Shutdown::default();
        shutdown.trigger("SIGTERM");
        shutdown.trigger("SIGINT");
        let err = shutdown
            .unless_requested(std::future::pending::<anyhow::Result<()>>())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stopped by SIGTERM before finishing; nothing was published for the unfinished work"
        );
        assert!(err.downcast_ref::<Terminated>().is_some());
    }
}
