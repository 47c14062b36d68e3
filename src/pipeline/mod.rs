//! The job: export (input mapping), transform (DuckDB SQL), import (output mapping), state, sync actions.
//!
//! [`run_command`] reads the Common Interface (environment, data folder, config), picks the steps
//! ([`plan::Steps`]) and runs them in order. Storage is only contacted when a step needs it, so a run with
//! nothing to export or import works without a token. `out/state.json` is always written: updated when the
//! whole job succeeded, the previous state unchanged otherwise.
//!
//! - [`plan`]: steps, output mapping + manifest merge, destination resolution (pure);
//! - [`export`], [`transform`], [`import`]: the three steps;
//! - [`actions`]: sync actions (`testConnection`, `listTables`, `listColumns`);
//! - [`report`]: per-table numbers and the final summary;
//! - [`local_stack`]: `--local-stack DIR`, an in-process emulator standing in for Keboola.

pub mod actions;
pub mod export;
pub mod import;
pub mod local_stack;
pub mod plan;
pub mod report;
pub mod sql_plan;
pub mod transform;

use crate::cli::RunArgs;
use crate::error::UserError;
use crate::interface::manifest::uses_schema_form;
use crate::interface::state::State;
use crate::interface::{Config, DataDir, Environment};
use crate::logging;
use crate::storage::{Client, ClientConfig};
use anyhow::Context as _;
use plan::Steps;
use report::TableReport;
use std::sync::OnceLock;
use std::time::Duration;

/// Everything a run needs to know before it starts.
pub struct Context {
    pub env: Environment,
    pub data: DataDir,
    pub config: Config,
    /// Where Storage is, when known (environment, parameters, or the local stack).
    pub storage: StorageAccess,
}

/// `kbc-runner run`: load the Common Interface files, then run the job or the requested sync action.
pub fn run_command(args: RunArgs) -> anyhow::Result<()> {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let local = match &args.local_stack {
            Some(dir) => Some(local_stack::LocalStack::start(dir, data.root(), args.tls()).await?),
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
            actions::dispatch(&ctx).await
        } else {
            run_job(&ctx).await
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
    });
    // After a SIGTERM a DuckDB query may still run on a blocking thread; dropping the runtime would wait
    // for it (found by tests/faults.rs sigterm_during_transform). The process exits right after this.
    runtime.shutdown_background();
    result
}

/// Where Storage is and how to reach it; the client is made on first use, so runs that never touch
/// Storage need no token.
pub struct StorageAccess {
    credentials: Option<(String, String)>,
    /// The S3 endpoint of an emulator (the local stack); otherwise the client's own rules apply.
    s3_endpoint: Option<String>,
    /// `KBC_BRANCHID`: the branch this run is in. The client finds out whether it is the default branch and
    /// whether the project has branch storage, and reads and writes as the platform does in each case.
    branch: Option<String>,
    job_timeout: Duration,
    max_connections: usize,
    client: OnceLock<Client>,
}

impl StorageAccess {
    /// Credentials from `KBC_URL`/`KBC_TOKEN`, then `KEBOOLA_STACK_URL`/`KEBOOLA_TOKEN`, then the
    /// parameters `storage_url` and `#storage_token`.
    pub fn from_env(env: &Environment, config: &Config) -> StorageAccess {
        let from_env = env
            .storage_credentials()
            .map(|(url, token)| (url, token.expose().to_owned()));
        let from_params = config.parameters.storage_token.as_ref().and_then(|token| {
            let url = config
                .parameters
                .storage_url
                .clone()
                .or_else(|| env.kbc_url.clone())
                .or_else(|| env.keboola_stack_url.clone())?;
            Some((crate::interface::env::normalize_url(&url), token.clone()))
        });
        let mut access = StorageAccess::new(from_env.or(from_params), config);
        access.branch = env.branch_id.clone();
        access
    }

    fn new(credentials: Option<(String, String)>, config: &Config) -> StorageAccess {
        if let Some((_, token)) = &credentials {
            crate::secrets::register(token);
        }
        StorageAccess {
            credentials,
            s3_endpoint: None,
            branch: None,
            job_timeout: Duration::from_secs(config.parameters.job_timeout_seconds.unwrap_or(3600)),
            max_connections: config.parameters.concurrency() * 4,
            client: OnceLock::new(),
        }
    }

    /// Sends file transfers to an S3-compatible endpoint (the local stack's emulator).
    pub fn with_s3_endpoint(mut self, endpoint: String) -> Self {
        self.s3_endpoint = Some(endpoint);
        self
    }

    /// Overrides the job timeout (sync actions must answer within 30 s).
    pub fn with_job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// The client; a user error naming every way to give a token when there is none. `why` says which
    /// step needs Storage.
    pub fn client(&self, why: &str) -> anyhow::Result<&Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let Some((url, token)) = &self.credentials else {
            return Err(UserError::new(format!(
                "{why} needs the Storage API, but no token is set: set KBC_TOKEN and KBC_URL (or \
                 KEBOOLA_TOKEN and KEBOOLA_STACK_URL), or parameters.#storage_token and \
                 parameters.storage_url in config.json"
            ))
            .into());
        };
        let mut config = ClientConfig::new(url.clone(), token.clone());
        config.job_timeout = self.job_timeout;
        config.max_connections = self.max_connections;
        if let Some(endpoint) = &self.s3_endpoint {
            config.endpoints.s3 = Some(endpoint.clone());
        }
        config.branch = self.branch.clone();
        let client = Client::new(config).context("setting up the Storage API client")?;
        Ok(self.client.get_or_init(|| client))
    }
}

/// A whole run. The state is written whatever happens: unchanged on failure, updated on success.
async fn run_job(ctx: &Context) -> anyhow::Result<()> {
    if std::env::var_os("KBC_RUNNER_TEST_PANIC").is_some() {
        // Lets the functional tests prove that a panic exits 2, never 101.
        panic!("forced panic (KBC_RUNNER_TEST_PANIC is set)");
    }
    let state = State::load(&ctx.data.in_state())?;
    ctx.data.ensure_layout()?;
    let steps = Steps::decide(&ctx.config, &ctx.env);
    for warning in &ctx.config.warnings {
        tracing::warn!("config.json: {warning}");
    }
    if steps.import && ctx.env.in_keboola() {
        // The platform's output mapping always runs after the component and loads every file in
        // out/tables; loading them here too would write Storage twice (or fail the platform's mapping).
        return Err(UserError::new(
            "parameters.steps includes `import`, but inside Keboola the platform's output mapping loads \
             out/tables after the component: remove `import` from parameters.steps and map the tables in \
             the configuration's output mapping",
        )
        .into());
    }
    tracing::info!(
        "data folder {}; steps: {}{}",
        ctx.data.root().display(),
        steps.describe(),
        if ctx.env.in_keboola() {
            " (running in Keboola)"
        } else {
            ""
        }
    );
    if ctx.config.parameters.debug == Some(true) {
        tracing::info!(
            "parameters.debug is accepted as the DuckDB transformation has it; for debug logs set KBC_RUNNER_LOG=debug"
        );
    }
    let mut reports = Vec::new();
    // SIGTERM drops the steps (their temporary files with them) and takes the failure path below, so
    // the previous state is written back and nothing half-done is published.
    let result = crate::cli::until_terminated(run_steps(ctx, steps, &state, &mut reports)).await;
    if !reports.is_empty() {
        tracing::info!("summary:\n{}", report::summary(&reports));
    }
    match result {
        Ok(new_state) => {
            new_state.save(&ctx.data.out_state())?;
            tracing::info!("job finished");
            Ok(())
        }
        Err(err) => {
            // The platform keeps the old state on failure; write it back so nothing is lost either way.
            if let Err(save) = state.save(&ctx.data.out_state()) {
                tracing::error!("could not write {}: {save}", ctx.data.out_state().display());
            }
            Err(err)
        }
    }
}

/// The steps in order; returns the state to save. On a failure before the import, `write_always` tables
/// are still imported, and the first failure is returned.
async fn run_steps(
    ctx: &Context,
    steps: Steps,
    state: &State,
    reports: &mut Vec<TableReport>,
) -> anyhow::Result<State> {
    let mut new_state = state.clone();
    let concurrency = ctx.config.parameters.concurrency();
    let before_import: anyhow::Result<()> = async {
        let inputs = &ctx.config.storage.input.tables;
        if steps.export && !inputs.is_empty() {
            tracing::info!("export: {} tables, {concurrency} at a time", inputs.len());
            let exported = export::run(
                &ctx.storage,
                inputs,
                &ctx.data.in_tables(),
                state,
                ctx.env.in_keboola(),
                concurrency,
            )
            .await?;
            for e in exported {
                if let Some((table, date)) = &e.last_import {
                    new_state.set_last_import_date(table, date);
                }
                reports.push(e.report);
            }
        }
        if steps.transform {
            let params = &ctx.config.parameters;
            let job = transform::TransformJob {
                in_tables: ctx.data.in_tables(),
                out_tables: ctx.data.out_tables(),
                out_files: ctx.data.out_files(),
                working_dir: Some(ctx.data.root().to_owned()),
                blocks: params.blocks.clone(),
                inputs: ctx.config.storage.input.tables.clone(),
                outputs: ctx.config.storage.output.tables.clone(),
                output_files: ctx.config.storage.output.files.clone(),
                dtypes_infer: params.dtypes_infer.unwrap_or(false),
                threads: params.threads,
                memory_limit: params.duckdb_memory_limit(),
                schema_form: uses_schema_form(
                    ctx.config.storage.output.data_type_support,
                    ctx.env.data_type_support,
                ),
            };
            if job.blocks.is_empty() && job.outputs.is_empty() {
                tracing::info!("transform: no SQL blocks and no output tables, nothing to do");
            } else {
                let done = transform::run(job).await?;
                reports.extend(done);
            }
        }
        Ok(())
    }
    .await;

    if steps.import {
        let only_write_always = before_import.is_err();
        let plans = plan::plan_outputs(&ctx.config, &ctx.data.out_tables(), only_write_always)?;
        if !plans.is_empty() {
            if only_write_always {
                tracing::warn!(
                    "the job failed; importing the {} write_always tables anyway",
                    plans.len()
                );
            }
            let imported = async {
                let client = ctx
                    .storage
                    .client("the import step (storage.output.tables)")?;
                import::run(client, plans, concurrency).await
            }
            .await;
            match imported {
                Ok(done) => reports.extend(done),
                Err(e) if only_write_always => {
                    tracing::error!("importing write_always tables failed: {e:#}")
                }
                Err(e) => return Err(e),
            }
        } else if !only_write_always {
            tracing::info!("import: nothing in out/tables to import");
        }
    }
    before_import?;
    Ok(new_state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn config(text: &str) -> Config {
        Config::parse(Path::new("config.json"), text).unwrap()
    }

    #[test]
    fn credentials_come_from_env_then_parameters() {
        let params = config(
            r##"{"parameters": {"#storage_token": "param-token-1", "storage_url": "param.example.com"}}"##,
        );
        let access = StorageAccess::from_env(
            &env(&[
                ("KBC_TOKEN", "env-token-1"),
                ("KBC_URL", "https://env.example.com"),
            ]),
            &params,
        );
        let (url, token) = access.credentials.clone().unwrap();
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("https://env.example.com", "env-token-1")
        );

        let access = StorageAccess::from_env(&env(&[("KBC_BRANCHID", "123")]), &params);
        assert_eq!(access.branch.as_deref(), Some("123"));
        let (url, token) = access.credentials.clone().unwrap();
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("https://param.example.com", "param-token-1")
        );

        // A parameter token without its URL borrows the forwarded URL.
        let token_only = config(r##"{"parameters": {"#storage_token": "param-token-2"}}"##);
        let access =
            StorageAccess::from_env(&env(&[("KBC_URL", "http://127.0.0.1:9")]), &token_only);
        assert_eq!(access.credentials.unwrap().0, "http://127.0.0.1:9");
    }

    #[test]
    fn no_token_is_a_user_error_naming_every_way_to_give_one() {
        let access = StorageAccess::from_env(&env(&[]), &config("{}"));
        let err = access.client("the export step").unwrap_err();
        assert_eq!(crate::error::classify(&err), crate::error::ErrorClass::User);
        let text = err.to_string();
        for name in [
            "KBC_TOKEN",
            "KBC_URL",
            "KEBOOLA_TOKEN",
            "KEBOOLA_STACK_URL",
            "#storage_token",
            "storage_url",
        ] {
            assert!(text.contains(name), "{name} missing in: {text}");
        }
    }
}
