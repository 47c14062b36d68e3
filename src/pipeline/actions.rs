//! Sync actions: when `config.json` has an `action` other than `run`, print exactly one JSON document on
//! stdout and nothing else there (logs go to stderr, errors only). The platform gives an action 30 s, so
//! every action runs under a shorter deadline and fails with a clear message instead of being killed.

use super::Context;
use crate::error::UserError;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// The sync actions this component knows, in the order the error message lists them.
pub(crate) const ACTIONS: &[&str] = &["testConnection", "listTables", "listColumns"];

/// The platform's limit is 30 s; leave room for start-up and output.
const DEADLINE: Duration = Duration::from_secs(25);

/// How long one Storage job may take inside an action.
pub(crate) const JOB_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the named action and prints its result.
pub(crate) async fn dispatch(ctx: &Context) -> anyhow::Result<()> {
    let name = ctx.config.action.as_str();
    if !ACTIONS.contains(&name) {
        return Err(UserError::new(format!(
            "unknown sync action `{name}`; known actions: run, {}",
            ACTIONS.join(", ")
        ))
        .into());
    }
    let result = tokio::time::timeout(DEADLINE, run_action(ctx, name))
        .await
        .map_err(|_| {
            UserError::new(format!(
                "sync action `{name}` did not finish within {} s: Storage did not answer in time",
                DEADLINE.as_secs()
            ))
        })??;
    print_result(&result)
}

async fn run_action(ctx: &Context, name: &str) -> anyhow::Result<Value> {
    let client = ctx.storage.client(&format!("the sync action `{name}`"))?;
    match name {
        "testConnection" => {
            client.verify_token().await?;
            Ok(json!({"status": "success"}))
        }
        "listTables" => {
            let mut tables = client.list_tables(None).await?;
            tables.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Value::Array(
                tables
                    .iter()
                    .map(|t| json!({"value": t.id, "label": t.id}))
                    .collect(),
            ))
        }
        "listColumns" => {
            let Some(table_id) = ctx
                .config
                .parameters
                .table
                .as_deref()
                .filter(|t| !t.is_empty())
            else {
                return Err(UserError::new(
                    "listColumns needs parameters.table: the id of the table whose columns to list",
                )
                .into());
            };
            let table_id: kbc_storage::TableId = table_id.parse()?;
            let table = client.get_table(&table_id).await?.ok_or_else(|| {
                UserError::new(format!(
                    "listColumns: table `{table_id}` does not exist in Storage"
                ))
            })?;
            Ok(Value::Array(
                table
                    .columns
                    .iter()
                    .map(|c| json!({"value": c, "label": c}))
                    .collect(),
            ))
        }
        other => Err(UserError::new(format!("unknown sync action `{other}`")).into()),
    }
}

/// Writes the one JSON document of an action's result on stdout.
pub(crate) fn print_result(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    let mut out = std::io::stdout().lock();
    out.write_all(crate::secrets::redact(&text).as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
