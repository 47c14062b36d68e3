//! `kbc-runner run` (the default command): read the Common Interface files, set up logging, start the
//! local stack when asked, and run the job or the requested sync action.

use super::RunArgs;
use super::local_stack::LocalStack;
use super::process::{self, Workload};
use crate::interface::{Config, DataDir, Environment};
use crate::logging;
use crate::pipeline::{self, Context, StorageAccess, actions};

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let env = Environment::from_env()?;
    let data = DataDir::resolve(args.data_dir.as_deref(), &env);
    data.check()?;
    let config = Config::load(&data.config_file(), env.in_keboola())?;
    let is_action = config.action != "run";
    if is_action {
        logging::init(logging::Target::Quiet, None);
    } else {
        logging::init(logging::Target::Stdout, env.logger.clone());
    }
    process::run(Workload::Job, |shutdown| async move {
        let local = match &args.local_stack {
            Some(dir) => Some(LocalStack::start(dir, data.root(), args.tls()).await?),
            None => None,
        };
        let storage = match &local {
            Some(stack) => {
                StorageAccess::new(Some((stack.url(), stack.token().to_owned())), &config)
                    .with_s3_endpoint(stack.url())
            }
            None => StorageAccess::from_env(&env, &config),
        };
        let storage = if is_action {
            storage.with_job_timeout(actions::JOB_TIMEOUT)
        } else {
            storage
        };
        let ctx = Context {
            env,
            data,
            config,
            storage,
        };
        let result = if is_action {
            shutdown.unless_requested(actions::dispatch(&ctx)).await
        } else {
            forced_panic_for_tests();
            pipeline::run(&ctx, &shutdown).await
        };
        if let Some(stack) = local {
            let saved = if result.is_ok() {
                stack.keep_state(&ctx.data).await
            } else {
                Ok(())
            };
            stack.shutdown().await;
            saved?;
        }
        result
    })
}

/// Debug builds only (what `cargo test` runs): `KBC_RUNNER_TEST_PANIC` makes the job panic on the runtime,
/// so the functional tests can prove that a panic exits 2, never 101. Release builds never read it.
fn forced_panic_for_tests() {
    #[cfg(debug_assertions)]
    if std::env::var_os("KBC_RUNNER_TEST_PANIC").is_some() {
        panic!("forced panic (KBC_RUNNER_TEST_PANIC is set)");
    }
}
