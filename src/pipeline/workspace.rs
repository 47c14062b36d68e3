//! The workspace engine (`parameters.engine: workspace`): the job runs where the data lives. A Storage
//! workspace (a schema in the project's Snowflake or BigQuery) is created, filled server-side by
//! `input-mapping-load` (or read in place with `storage.input.read_only_storage_access`), each code's SQL
//! runs there as a Query Service job, and each output is imported from the workspace by the backend. No
//! table data passes through this process. The workspace is deleted at the end, on failure and on
//! SIGTERM, unless `parameters.workspace.keep`; workspaces of this runner left by a killed run are swept
//! at the next start.
//!
//! The SQL is the backend's dialect, as in Keboola's Snowflake and BigQuery transformations: inputs are
//! workspace tables named after their mapping's destination (`orders.csv` → `orders`), outputs are the
//! workspace tables named after their mapping's source.

use super::Context;
use super::export::{resolve_changed_since, source_table};
use super::import::{align_primary_key, loaded};
use super::plan::{OutputPlan, Steps, plan_mapped_outputs};
use super::report::TableReport;
use super::transform::table_name;
use crate::error::UserError;
use crate::interface::config::{InputTableMapping, Step};
use crate::interface::state::State;
use crate::shutdown::{Shutdown, Terminated};
use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use kbc_storage::{
    Client, DataSource, ImportOptions, LoadSpec, NewTable, NewWorkspace, QueryError, QueryService,
    TableId, Workspace, WorkspaceObject,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Names of the workspaces this runner creates start with this, so a later run can sweep its own leftovers.
const NAME_PREFIX: &str = "kbc-runner-";
/// How long cleanup may take after a failure or SIGTERM (the platform kills the container soon after).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A whole run on the workspace engine; returns the state to save.
pub(super) async fn run(
    ctx: &Context,
    steps: Steps,
    state: &State,
    reports: &mut Vec<TableReport>,
    shutdown: &Shutdown,
) -> anyhow::Result<State> {
    check_config(ctx, steps)?;
    let client = ctx
        .storage
        .client("the workspace engine (parameters.engine)")?;
    let settings = &ctx.config.parameters.workspace;
    let (query_url, branch_id) = shutdown
        .unless_requested(async {
            let url = client.query_service_url().await?;
            let branch = client.numeric_branch_id().await?;
            anyhow::Ok((url, branch))
        })
        .await
        .context("workspace engine: finding the Query Service")?;
    sweep_stale(client, ctx.storage.job_timeout()).await;
    let backend = match settings.backend() {
        Some(b) => b.to_owned(),
        None => client
            .verify_token()
            .await?
            .owner
            .default_backend
            .unwrap_or_else(|| "snowflake".into()),
    };
    let new = NewWorkspace {
        backend: Some(backend.clone()),
        size: settings.size.clone().filter(|s| !s.is_empty()),
        read_only_storage_access: ctx
            .config
            .storage
            .input
            .read_only_storage_access
            .unwrap_or(false),
        // No direct credentials: the runner reaches it through the Query Service only. BigQuery's
        // support of `none` is unconfirmed, so it gets the default there (as Keboola's MCP server does).
        login_type: (backend == "snowflake").then(|| "none".to_owned()),
        name: workspace_name(ctx.env.run_id.as_deref()),
        configuration: ctx.env.configuration.clone(),
    };
    let started = Instant::now();
    let workspace = shutdown
        .unless_requested(async { Ok(client.create_workspace(&new).await?) })
        .await
        .with_context(|| format!("workspace engine: creating a {backend} workspace"))?;
    tracing::info!(
        "workspace {} ({backend}, schema {}) created in {:.1} s{}",
        workspace.id,
        workspace.connection.schema,
        started.elapsed().as_secs_f64(),
        match &new.configuration {
            Some((component, config)) => format!(" for configuration {component}/{config}"),
            None => String::new(),
        }
    );
    let job = Job {
        ctx,
        client,
        queries: client.query_service(&query_url, &branch_id, workspace.id),
        workspace: &workspace,
        shutdown,
    };
    let result = job.run(state, reports).await;
    if settings.keep == Some(true) {
        tracing::info!(
            "workspace {} kept (parameters.workspace.keep); delete it when done",
            workspace.id
        );
    } else {
        match tokio::time::timeout(CLEANUP_TIMEOUT, client.delete_workspace(workspace.id)).await {
            Ok(Ok(())) => tracing::info!("workspace {} deleted", workspace.id),
            Ok(Err(e)) => tracing::warn!(
                "could not delete workspace {}: {e}; the next run removes it once it is older than \
                 the job timeout",
                workspace.id
            ),
            Err(_) => tracing::warn!(
                "deleting workspace {} took longer than {CLEANUP_TIMEOUT:?}; the next run removes it",
                workspace.id
            ),
        }
    }
    result
}

/// What the engine cannot do, refused before anything is created.
fn check_config(ctx: &Context, steps: Steps) -> anyhow::Result<()> {
    if ctx.env.in_keboola() {
        return Err(UserError::new(
            "parameters.engine is `workspace`, but inside Keboola the platform runs this configuration's \
             storage mappings itself (downloading and uploading the data this engine avoids); run the \
             workspace engine outside Keboola's job runner (docker or cargo, with KBC_URL and KBC_TOKEN), \
             or use engine `duckdb` here",
        )
        .into());
    }
    if !Step::ALL.iter().all(|s| steps.contains(*s)) {
        return Err(UserError::new(format!(
            "parameters.engine `workspace` runs export, transform and import together in one workspace, \
             but parameters.steps is `{}`: remove parameters.steps",
            steps.describe()
        ))
        .into());
    }
    for (i, input) in ctx.config.storage.input.tables.iter().enumerate() {
        if input.days.is_some_and(|d| d > 0) {
            return Err(UserError::new(format!(
                "storage.input.tables[{i}] ({}): `days` is not supported by workspace input mapping (as \
                 on the platform); use `changed_since`, e.g. \"-{} days\"",
                input.source,
                input.days.unwrap_or(0)
            ))
            .into());
        }
    }
    Ok(())
}

/// `kbc-runner-<run id>-<random>`: unique, tells which run made it, and marks it as this runner's.
fn workspace_name(run_id: Option<&str>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    match run_id {
        Some(id) => format!(
            "{NAME_PREFIX}{}-{}",
            id.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            &suffix[..8]
        ),
        None => format!("{NAME_PREFIX}{}", &suffix[..12]),
    }
}

/// Deletes this runner's workspaces older than the job timeout: left behind by a run that was killed.
async fn sweep_stale(client: &Client, older_than: Duration) {
    let workspaces = match client.list_workspaces().await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("could not list workspaces to remove stale ones: {e}");
            return;
        }
    };
    let now = chrono::Utc::now();
    for w in workspaces
        .iter()
        .filter(|w| w.name.starts_with(NAME_PREFIX))
    {
        let age = w
            .created
            .as_deref()
            .and_then(parse_time)
            .map(|t| (now - t).to_std().unwrap_or_default());
        if age.is_some_and(|a| a > older_than) {
            match client.delete_workspace(w.id).await {
                Ok(()) => tracing::info!(
                    "removed stale workspace {} ({}), left by an earlier run",
                    w.id,
                    w.name
                ),
                Err(e) => tracing::warn!("could not remove stale workspace {}: {e}", w.id),
            }
        }
    }
}

fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z"))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// One run inside one workspace.
struct Job<'a> {
    ctx: &'a Context,
    client: &'a Client,
    queries: QueryService,
    workspace: &'a Workspace,
    shutdown: &'a Shutdown,
}

impl Job<'_> {
    async fn run(&self, state: &State, reports: &mut Vec<TableReport>) -> anyhow::Result<State> {
        let mut new_state = state.clone();
        let before_import: anyhow::Result<()> = async {
            let loaded = self
                .shutdown
                .unless_requested(self.load_inputs(state))
                .await?;
            for (report, last_import) in loaded {
                if let Some((table, date)) = last_import {
                    new_state.set_last_import_date(&table, &date);
                }
                reports.push(report);
            }
            reports.extend(self.run_sql().await?);
            Ok(())
        }
        .await;
        let terminated = before_import
            .as_ref()
            .is_err_and(|e| e.downcast_ref::<Terminated>().is_some());
        if !terminated {
            let only_write_always = before_import.is_err();
            let imported = self
                .shutdown
                .unless_requested(self.import_outputs(only_write_always))
                .await;
            match imported {
                Ok(done) => reports.extend(done),
                Err(e) if only_write_always => {
                    tracing::error!("importing write_always tables failed: {e:#}")
                }
                Err(e) => return Err(e),
            }
        }
        before_import?;
        Ok(new_state)
    }

    /// The input mapping, as one `input-mapping-load` job: the backend copies, clones or views the tables.
    async fn load_inputs(
        &self,
        state: &State,
    ) -> anyhow::Result<Vec<(TableReport, Option<(String, String)>)>> {
        let inputs = &self.ctx.config.storage.input.tables;
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let mut items = Vec::new();
        let mut done = Vec::new();
        for input in inputs {
            let (item, last_import) = self.input_item(input, state).await?;
            done.push((
                input.source.clone(),
                item["destination"].clone(),
                last_import,
            ));
            items.push(item);
        }
        self.client
            .load_workspace(self.workspace.id, items, false)
            .await
            .context("workspace engine: input mapping (input-mapping-load)")?;
        let duration = started.elapsed();
        Ok(done
            .into_iter()
            .map(|(source, destination, last_import)| {
                let report = TableReport {
                    step: Step::Export,
                    table: source,
                    rows: None,
                    bytes: 0,
                    duration,
                    note: format!(
                        "server-side into workspace table {}",
                        destination.as_str().unwrap_or("")
                    ),
                };
                tracing::info!("{}", report.line());
                (report, last_import)
            })
            .collect())
    }

    /// One `input-mapping-load` item, in the platform's snake_case; `adaptive` is resolved here from the
    /// state, as the platform's input mapping does for workspaces.
    async fn input_item(
        &self,
        input: &InputTableMapping,
        state: &State,
    ) -> anyhow::Result<(Value, Option<(String, String)>)> {
        let source = input.source.as_str();
        let table_id: TableId = source.parse().with_context(|| format!("export {source}"))?;
        let table = source_table(self.client, &table_id, &input.columns).await?;
        // The platform hands the backend a unix timestamp for `adaptive`; the same instant either way.
        let changed_since = resolve_changed_since(input, state, "loading")
            .map(|since| parse_time(&since).map_or(since, |t| t.timestamp().to_string()));
        let mut item = json!({
            "source": source,
            "destination": table_name(input.destination()),
            "overwrite": false,
        });
        if !input.columns.is_empty() {
            item["columns"] = json!(input.columns);
        }
        if let Some(since) = changed_since {
            item["changed_since"] = since.into();
        }
        if let Some(column) = input.where_column.as_deref().filter(|c| !c.is_empty()) {
            item["where_column"] = column.into();
            item["where_values"] = json!(input.where_values);
            item["where_operator"] = input.where_operator.as_str().into();
        }
        if let Some(limit) = input.limit {
            item["limit"] = limit.into();
        }
        let last_import = table
            .last_import_date
            .clone()
            .map(|d| (source.to_owned(), d));
        Ok((item, last_import))
    }

    /// Each code's statements as one Query Service job, in order; the first failure stops the run.
    async fn run_sql(&self) -> anyhow::Result<Vec<TableReport>> {
        let timeout = self.ctx.config.parameters.workspace.query_timeout();
        let mut reports = Vec::new();
        for (b, block) in self.ctx.config.parameters.blocks.iter().enumerate() {
            for (c, code) in block.codes.iter().enumerate() {
                let statements: Vec<String> = code
                    .script
                    .iter()
                    .map(|s| s.trim().trim_end_matches(';').trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if statements.is_empty() {
                    continue;
                }
                let started = Instant::now();
                let stop = async { self.shutdown.requested().await.to_owned() };
                let job = self
                    .queries
                    .run(&statements, timeout, stop)
                    .await
                    .map_err(|e| {
                        let at = format!(
                            "block #{} `{}`, code #{} `{}`",
                            b + 1,
                            block.name,
                            c + 1,
                            code.name
                        );
                        self.sql_error(e, &at)
                    })?;
                let affected: i64 = job
                    .statements
                    .iter()
                    .filter_map(|s| s.rows_affected)
                    .filter(|n| *n > 0)
                    .sum();
                let report = TableReport {
                    step: Step::Transform,
                    table: format!("{} / {}", block.name, code.name),
                    rows: u64::try_from(affected).ok(),
                    bytes: 0,
                    duration: started.elapsed(),
                    note: format!(
                        "{} statements in workspace {}",
                        statements.len(),
                        self.workspace.id
                    ),
                };
                tracing::info!("{}", report.line());
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// A failed code as the user sees it; `at` names the block and code as the DuckDB engine does.
    fn sql_error(&self, err: QueryError, at: &str) -> anyhow::Error {
        match err {
            QueryError::Statement {
                index,
                total,
                query,
                message,
            } => UserError::new(format!(
                "SQL failed in {at}, statement {} of {total} (workspace {}): {message}\n  statement: {}",
                index + 1,
                self.workspace.id,
                shorten(&query, 300)
            ))
            .into(),
            QueryError::Timeout { timeout, .. } => UserError::new(format!(
                "{at} did not finish within {}s and was cancelled; raise \
                 parameters.workspace.query_timeout_seconds if it needs longer",
                timeout.as_secs()
            ))
            .into(),
            QueryError::Cancelled { reason, .. } if self.shutdown_cause().is_some() => {
                tracing::info!("{at}: query cancelled ({reason})");
                Terminated(self.shutdown_cause().unwrap_or("a shutdown request")).into()
            }
            other => anyhow::Error::new(other)
                .context(format!("{at}: running the SQL")),
        }
    }

    /// The shutdown's cause, when one was requested.
    fn shutdown_cause(&self) -> Option<&'static str> {
        use futures::FutureExt;
        self.shutdown.requested().now_or_never()
    }

    /// Imports each output from its workspace table (or only the `write_always` ones after a failure).
    async fn import_outputs(&self, only_write_always: bool) -> anyhow::Result<Vec<TableReport>> {
        let plans = plan_mapped_outputs(&self.ctx.config, only_write_always)?;
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        let objects = self.workspace_tables().await?;
        let mut ready = Vec::new();
        let mut missing = Vec::new();
        for plan in plans {
            let wanted = table_name(&plan.source);
            match find_object(&objects, &wanted) {
                Some((name, columns)) => ready.push((plan, name.clone(), columns.clone())),
                None if only_write_always => {}
                None => missing.push(wanted),
            }
        }
        if !missing.is_empty() {
            let mut have: Vec<&str> = objects.keys().map(String::as_str).collect();
            have.sort_unstable();
            return Err(UserError::new(format!(
                "output tables not found in workspace {}: {} (storage.output.tables[].source must name a \
                 table the SQL created; the workspace has: {})",
                self.workspace.id,
                missing.join(", "),
                if have.is_empty() {
                    "no tables".to_owned()
                } else {
                    have.join(", ")
                }
            ))
            .into());
        }
        let concurrency = self.ctx.config.parameters.concurrency();
        futures::stream::iter(ready)
            .map(|(plan, object, columns)| self.import_one(plan, object, columns))
            .buffer_unordered(concurrency)
            .try_collect()
            .await
    }

    /// The workspace's tables and their columns in order, from its `INFORMATION_SCHEMA` through the Query
    /// Service (one query for all outputs).
    async fn workspace_tables(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let schema = &self.workspace.connection.schema;
        let sql = format!(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = '{}' \
             ORDER BY table_name, ordinal_position",
            schema.replace('\'', "''")
        );
        let (_, rows) = self
            .queries
            .select(&sql, self.ctx.config.parameters.workspace.query_timeout())
            .await
            .context("workspace engine: reading the workspace's tables")?;
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in rows {
            if let [Some(table), Some(column), ..] = row.as_slice() {
                tables
                    .entry(table.clone())
                    .or_default()
                    .push(column.clone());
            }
        }
        Ok(tables)
    }

    async fn import_one(
        &self,
        plan: OutputPlan,
        object: String,
        columns: Vec<String>,
    ) -> anyhow::Result<TableReport> {
        let started = Instant::now();
        let dest = &plan.destination;
        let context = || format!("import workspace table {object} → {dest}");
        let missing_key: Vec<&String> = plan
            .primary_key
            .iter()
            .filter(|k| !columns.contains(k))
            .collect();
        if !missing_key.is_empty() {
            return Err(UserError::new(format!(
                "output table {}: primary key columns not in workspace table {object}: {}; it has: {}",
                plan.source,
                super::report::join(&missing_key),
                columns.join(", ")
            ))
            .into());
        }
        let existing = self
            .client
            .get_table_for_write(dest)
            .await
            .with_context(context)?;
        if let Some(t) = &existing {
            align_primary_key(self.client, dest, t, &plan.primary_key)
                .await
                .with_context(context)?;
        }
        let spec = LoadSpec {
            import: ImportOptions {
                incremental: plan.incremental,
                columns: Some(columns.clone()),
                ..Default::default()
            },
            create: existing.is_none().then(|| NewTable {
                columns: columns.clone(),
                primary_key: plan.primary_key.clone(),
            }),
            delete_first: if plan.incremental {
                plan.delete_where.clone()
            } else {
                Vec::new()
            },
        };
        let source = DataSource::Workspace(WorkspaceObject {
            workspace_id: self.workspace.id,
            object: object.clone(),
        });
        let outcome = self
            .client
            .load_table(dest, &source, &spec)
            .await
            .with_context(context)?;
        let how = format!("server-side from workspace table {object}; ");
        let (table, note) = loaded(&outcome, existing.as_ref(), dest, plan.incremental, &how);
        let report = TableReport {
            step: Step::Import,
            table,
            rows: None,
            bytes: 0,
            duration: started.elapsed(),
            note,
        };
        tracing::info!("{}", report.line());
        Ok(report)
    }
}

/// The workspace table an output names: exactly, else ignoring case (Snowflake stores unquoted names in
/// upper case, so `CREATE TABLE out ...` makes `OUT`).
fn find_object<'a>(
    objects: &'a BTreeMap<String, Vec<String>>,
    wanted: &str,
) -> Option<(&'a String, &'a Vec<String>)> {
    objects.get_key_value(wanted).or_else(|| {
        let mut same: Vec<_> = objects
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .collect();
        (same.len() == 1).then(|| same.remove(0))
    })
}

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_mark_the_runner_and_the_run() {
        let name = workspace_name(Some("123.456"));
        assert!(name.starts_with("kbc-runner-123-456-"), "{name}");
        assert_ne!(workspace_name(None), workspace_name(None));
        assert!(workspace_name(None).starts_with(NAME_PREFIX));
    }

    #[test]
    fn outputs_match_workspace_tables_exactly_then_ignoring_case() {
        let mut objects = BTreeMap::new();
        objects.insert("OUT".to_owned(), vec!["A".to_owned()]);
        objects.insert("orders".to_owned(), vec!["id".to_owned()]);
        assert_eq!(find_object(&objects, "orders").unwrap().0, "orders");
        assert_eq!(find_object(&objects, "out").unwrap().0, "OUT");
        assert!(find_object(&objects, "missing").is_none());
        objects.insert("Out".to_owned(), vec![]);
        // Two candidates differing only in case: not guessed.
        assert!(find_object(&objects, "out").is_none());
    }

    #[test]
    fn storage_dates_parse_for_adaptive() {
        let t = parse_time("2026-01-02T03:04:05+0000").unwrap();
        assert_eq!(t.timestamp(), 1_767_323_045);
        assert!(parse_time("2026-01-02T03:04:05Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
