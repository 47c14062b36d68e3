//! The `kbc-runner` binary: parse the command line, run one command, and map the outcome to the exit code
//! the Keboola platform understands (0 success, 1 user error, 2 application error). This is the only place
//! that decides exit codes; a panic anywhere also ends here, as exit 2, never Rust's default 101.

use kbc_runner::cli::Cli;
use kbc_runner::error::{ErrorClass, classify, render};
use std::io::Write;

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = kbc_runner::secrets::redact(&message).into_owned();
        let _ = std::io::stdout().flush();
        eprintln!("Application error: internal panic: {text}{location}");
        kbc_runner::logging::flush();
        std::process::exit(ErrorClass::Application.exit_code());
    }));

    let cli = match Cli::try_parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are successes; a bad command line is the user's to fix.
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            std::process::exit(code);
        }
    };

    let outcome = kbc_runner::cli::execute(cli);
    let _ = std::io::stdout().flush();
    let code = match outcome {
        Ok(()) => 0,
        // `kbc-runner tables list | head`: the reader has what it wanted; stopping is success, as for
        // any Unix tool.
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            let class = classify(&err);
            let text = render(&err);
            tracing::debug!("failed: {err:?}");
            kbc_runner::logging::flush();
            match class {
                ErrorClass::User => eprintln!("{text}"),
                ErrorClass::Application => eprintln!("Application error: {text}"),
            }
            class.exit_code()
        }
    };
    kbc_runner::logging::flush();
    std::process::exit(code);
}

/// Whether the failure is stdout's reader having gone away (Rust ignores SIGPIPE, so a write fails).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
