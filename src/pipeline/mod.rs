//! The job: export (input mapping), transform (DuckDB SQL), import (output mapping), state, and sync actions.

pub mod actions;

use crate::cli::RunArgs;
use crate::interface::state::State;
use crate::interface::{Config, DataDir, Environment};
use crate::logging;

/// Everything a run needs to know before it starts.
pub struct Context {
    pub env: Environment,
    pub data: DataDir,
    pub config: Config,
}

/// `kbc-runner run`: load the Common Interface files, then run the job or the requested sync action.
pub fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let env = Environment::from_env()?;
    let data = DataDir::resolve(args.data_dir.as_deref(), &env);
    data.check()?;
    let config = Config::load(&data.config_file())?;
    let ctx = Context { env, data, config };
    if ctx.config.action != "run" {
        logging::init(logging::Target::Quiet, None);
        return actions::dispatch(&ctx);
    }
    logging::init(logging::Target::Stdout, ctx.env.logger.clone());
    run_job(&ctx)
}

/// A whole run. The state is written whatever happens: unchanged on failure, updated on success.
fn run_job(ctx: &Context) -> anyhow::Result<()> {
    if std::env::var_os("KBC_RUNNER_TEST_PANIC").is_some() {
        // Lets the functional tests prove that a panic exits 2, never 101.
        panic!("forced panic (KBC_RUNNER_TEST_PANIC is set)");
    }
    let state = State::load(&ctx.data.in_state())?;
    ctx.data.ensure_layout()?;
    tracing::info!("data folder {}", ctx.data.root().display());
    state.save(&ctx.data.out_state())?;
    Ok(())
}
