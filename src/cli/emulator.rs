//! `kbc-runner emulator`: serve the local Storage API until SIGTERM/SIGINT.

use super::EmulatorArgs;
use super::process::{self, Workload};
use crate::error::UserError;
use anyhow::Context as _;
use kbc_emulator::{Emulator, EmulatorConfig, EmulatorOptions};
use std::io::Write as _;

pub(crate) fn run(args: EmulatorArgs) -> anyhow::Result<()> {
    process::run(Workload::Server, |shutdown| async move {
        let options = EmulatorOptions {
            tls: args.tls(),
            public_url: args.public_url.clone(),
            log_requests: true,
        };
        let config = EmulatorConfig {
            listen: args.listen,
            store: args.store,
            tokens: args.tokens,
        };
        // A taken port, an unusable store folder or a bad certificate is the user's to fix (exit 1), with
        // the cause spelled out.
        let emulator = Emulator::start_with_options(config, options)
            .await
            .map_err(|e| UserError::new(format!("cannot start the emulator: {e:#}")))?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", emulator.local_url())
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        shutdown.requested().await;
        emulator.shutdown().await;
        Ok(())
    })
}
