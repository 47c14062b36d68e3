//! The job: export (input mapping), transform (DuckDB SQL), import (output mapping), state, sync actions.
//!
//! [`run`] takes a [`Context`] (the Common Interface files read by `cli`, and where Storage is) and the
//! process's [`Shutdown`], picks the steps ([`plan::Steps`]) and runs them in order. Storage is only
//! contacted when a step needs it, so a run with nothing to export or import works without a token.
//! `out/state.json` is always written: updated when the whole job succeeded, the previous state unchanged
//! otherwise.
//!
//! - [`context`]: the run's inputs and the lazily made Storage client;
//! - [`plan`]: steps, output mapping + manifest merge, destination resolution (pure);
//! - [`export`], [`transform`], [`import`]: the three steps;
//! - [`workspace`]: the workspace engine (`parameters.engine: workspace`), the same three steps run by
//!   the project's backend through Storage workspaces and the Query Service;
//! - [`actions`]: sync actions (`testConnection`, `listTables`, `listColumns`);
//! - [`report`]: per-table numbers and the final summary.

pub(crate) mod actions;
mod context;
mod export;
pub mod import;
pub(crate) mod plan;
pub(crate) mod report;
mod sql_plan;
mod transform;
mod workspace;

pub(crate) use context::{Context, StorageAccess};

use crate::error::UserError;
use crate::interface::config::{Engine, Step};
use crate::interface::manifest::uses_schema_form;
use crate::interface::state::State;
use crate::shutdown::Shutdown;
use plan::Steps;
use report::TableReport;

/// A whole run. The state is written whatever happens: unchanged on failure, updated on success.
pub(crate) async fn run(ctx: &Context, shutdown: &Shutdown) -> anyhow::Result<()> {
    let state = State::load(&ctx.data.in_state())?;
    ctx.data.ensure_layout()?;
    let steps = Steps::decide(&ctx.config, &ctx.env);
    for warning in &ctx.config.warnings {
        tracing::warn!("config.json: {warning}");
    }
    let engine = ctx.config.parameters.engine;
    if engine == Engine::Duckdb && steps.contains(Step::Import) && ctx.env.in_keboola() {
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
        "data folder {}; steps: {}{}{}",
        ctx.data.root().display(),
        steps.describe(),
        if engine == Engine::Workspace {
            " in a Storage workspace"
        } else {
            ""
        },
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
    // The workspace engine watches the shutdown itself: it cancels its query job and deletes its
    // workspace before it returns.
    let result = match engine {
        Engine::Duckdb => {
            shutdown
                .unless_requested(run_steps(ctx, steps, &state, &mut reports))
                .await
        }
        Engine::Workspace => workspace::run(ctx, steps, &state, &mut reports, shutdown).await,
    };
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
        if steps.contains(Step::Export) && !inputs.is_empty() {
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
        if steps.contains(Step::Transform) {
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

    if steps.contains(Step::Import) {
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
