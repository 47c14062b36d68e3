//! The transfer progress line of `tables export` and `tables import`, on stderr.

use kbc_storage::{TransferProgress, human_bytes};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Prints transfer progress on stderr: a refreshed line on a terminal, a plain line every 10 s otherwise
/// (job logs), so long transfers show they are alive without flooding the log.
pub(super) struct Ticker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Ticker {
    pub(super) fn start(progress: Arc<TransferProgress>, verb: &'static str) -> Ticker {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        let handle = tokio::spawn(async move {
            let start = Instant::now();
            let mut printed = false;
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let line = progress_line(&progress, start.elapsed(), verb);
                if tty {
                    eprint!("\r\x1b[2K{line}");
                    printed = true;
                } else {
                    eprintln!("{line}");
                }
            }
            if printed {
                eprint!("\r\x1b[2K");
            }
        });
        Ticker {
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the ticker and waits for it, so a terminal's progress line is cleared before the summary.
    pub(super) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// `downloaded 12.3 MB of 40.0 MB (31%), 120000 rows, 5.1 MB/s, ETA 6 s`.
fn progress_line(p: &TransferProgress, elapsed: Duration, verb: &str) -> String {
    let done = p.transferred.load(Ordering::Relaxed);
    let total = p.expected.load(Ordering::Relaxed);
    let rows = p.rows.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let mut line = format!("{verb} {}", human_bytes(done));
    if total > 0 {
        let pct = (done as f64 / total as f64 * 100.0).min(100.0);
        line.push_str(&format!(" of {} ({pct:.0}%)", human_bytes(total)));
    }
    if rows > 0 {
        line.push_str(&format!(", {rows} rows"));
    }
    line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
    if total > done && rate > 0.0 {
        line.push_str(&format!(", ETA {:.0} s", (total - done) as f64 / rate));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_show_rate_and_eta() {
        let p = TransferProgress::default();
        p.expected.store(10_000_000, Ordering::Relaxed);
        p.transferred.store(5_000_000, Ordering::Relaxed);
        p.rows.store(42, Ordering::Relaxed);
        let line = progress_line(&p, Duration::from_secs(5), "downloaded");
        assert_eq!(
            line,
            "downloaded 5.0 MB of 10.0 MB (50%), 42 rows, 1.0 MB/s, ETA 5 s"
        );
        assert_eq!(human_bytes(999), "999 B");
    }
}
