//! Sync actions: when `config.json` has an `action` other than `run`, print exactly one JSON document on
//! stdout and nothing else there.

use super::Context;
use crate::error::UserError;
use serde_json::Value;
use std::io::Write;

/// The sync actions this component knows, in the order the error message lists them.
pub const ACTIONS: &[&str] = &["testConnection", "listTables", "listColumns"];

/// Runs the named action and prints its result.
pub fn dispatch(ctx: &Context) -> anyhow::Result<()> {
    let name = ctx.config.action.as_str();
    if !ACTIONS.contains(&name) {
        return Err(UserError::new(format!(
            "unknown sync action `{name}`; known actions: run, {}",
            ACTIONS.join(", ")
        ))
        .into());
    }
    Err(UserError::new(format!(
        "sync action `{name}` needs a Storage API token: set KBC_TOKEN and KBC_URL, or \
         parameters.#storage_token and parameters.storage_url"
    ))
    .into())
}

/// Writes the one JSON document of an action's result on stdout.
pub fn print_result(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    let mut out = std::io::stdout().lock();
    out.write_all(crate::secrets::redact(&text).as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
