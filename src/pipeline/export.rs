//! The export step (input mapping): every `storage.input.tables[]` item through the client's
//! `export_table` (an `export-async` job, then the streamed, slice-parallel download), at most
//! `concurrency` tables at once. Each table lands as `in/tables/<destination>` (the client writes it
//! atomically) followed by its input manifest, written last so a manifest always describes a whole file.

use super::StorageAccess;
use super::report::{TableReport, join};
use crate::error::UserError;
use crate::interface::config::InputTableMapping;
use crate::interface::config::Step;
use crate::interface::manifest::{InputManifest, manifest_path};
use crate::interface::state::State;
use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use kbc_storage::{DownloadMode, ExportOptions, Table, TableId};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Instant;

/// The result of exporting one table.
#[derive(Debug)]
pub(super) struct Exported {
    pub report: TableReport,
    /// `(table id, last import date)` to remember for `adaptive`; `None` when skipped.
    pub last_import: Option<(String, String)>,
}

/// Exports all input tables. `in_keboola`: the platform may already have placed some of them.
pub(super) async fn run(
    storage: &StorageAccess,
    mappings: &[InputTableMapping],
    in_tables: &Path,
    state: &State,
    in_keboola: bool,
    concurrency: usize,
) -> anyhow::Result<Vec<Exported>> {
    tokio::fs::create_dir_all(in_tables)
        .await
        .with_context(|| format!("creating {}", in_tables.display()))?;
    // `buffered` keeps the config's order in the reports; the first failure stops the rest.
    futures::stream::iter(mappings.iter())
        .map(|m| export_one(storage, m, in_tables, state, in_keboola))
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

async fn export_one(
    storage: &StorageAccess,
    mapping: &InputTableMapping,
    in_tables: &Path,
    state: &State,
    in_keboola: bool,
) -> anyhow::Result<Exported> {
    let started = Instant::now();
    let source = mapping.source.as_str();
    let dest = in_tables.join(mapping.destination());
    let manifest_file = manifest_path(&dest);
    if manifest_file.is_file() {
        let existing = InputManifest::load(&manifest_file).ok();
        if existing.as_ref().is_some_and(|m| m.id == source) {
            if in_keboola {
                tracing::info!(
                    "export {source}: skipped, the platform already placed it as {}",
                    dest.display()
                );
                return Ok(Exported {
                    report: TableReport {
                        step: Step::Export,
                        table: source.to_owned(),
                        rows: None,
                        bytes: 0,
                        duration: started.elapsed(),
                        note: "skipped: placed by the platform".into(),
                    },
                    last_import: None,
                });
            }
            tracing::debug!(
                "export {source}: replacing {} from an earlier run",
                dest.display()
            );
        }
    }

    let table_id: TableId = source.parse().with_context(|| format!("export {source}"))?;
    // Only now is Storage needed: a run whose tables were all placed by the platform needs no token.
    let client = storage.client("the export step (storage.input.tables)")?;
    let table = source_table(client, &table_id, &mapping.columns).await?;
    let changed_since = resolve_changed_since(mapping, state, "exporting");
    let options = ExportOptions {
        columns: mapping.columns.clone(),
        changed_since,
        where_column: mapping.where_column.clone().filter(|c| !c.is_empty()),
        where_values: mapping.where_values.clone(),
        where_operator: mapping
            .where_column
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|_| mapping.where_operator),
        limit: mapping.limit,
        ..Default::default()
    };
    let outcome = client
        .export_table(&table_id, &options, &dest, DownloadMode::Merged)
        .await
        .with_context(|| format!("export {source} to {}", dest.display()))?;
    let manifest = input_manifest(&table, &outcome.columns);
    manifest.write(&manifest_file)?;
    let report = TableReport {
        step: Step::Export,
        table: source.to_owned(),
        rows: Some(outcome.rows),
        bytes: outcome.bytes,
        duration: started.elapsed(),
        note: if outcome.cache_hit {
            "cache hit".into()
        } else {
            String::new()
        },
    };
    tracing::info!("{}", report.line());
    Ok(Exported {
        report,
        last_import: table
            .last_import_date
            .clone()
            .map(|d| (source.to_owned(), d)),
    })
}

/// The table an input mapping reads, checked: it exists, and has the mapping's `columns`. Read before
/// the data, so its lastImportDate never covers rows the export (or workspace load) missed: the next
/// adaptive run may repeat rows but never loses any.
pub(super) async fn source_table(
    client: &kbc_storage::Client,
    table_id: &TableId,
    columns: &[String],
) -> anyhow::Result<Table> {
    let source = table_id.as_str();
    let table = client
        .get_table(table_id)
        .await
        .with_context(|| format!("export {source}"))?
        .ok_or_else(|| {
            UserError::new(format!(
                "export {source}: the table does not exist in Storage (storage.input.tables source)"
            ))
        })?;
    let unknown: Vec<&String> = columns
        .iter()
        .filter(|c| !table.columns.contains(c))
        .collect();
    if !unknown.is_empty() {
        return Err(UserError::new(format!(
            "export {source}: columns not in the table: {}; the table has: {}",
            join(&unknown),
            table.columns.join(", ")
        ))
        .into());
    }
    Ok(table)
}

/// `changed_since` with `adaptive` resolved from the state: the last import date of the previous
/// successful run, or none (the whole table) on the first. `doing` names the step in the log.
pub(super) fn resolve_changed_since(
    mapping: &InputTableMapping,
    state: &State,
    doing: &str,
) -> Option<String> {
    let source = mapping.source.as_str();
    match mapping.changed_since().as_deref() {
        Some("adaptive") => match state.last_import_date(source) {
            Some(date) => {
                tracing::info!("export {source}: adaptive, rows changed since {date}");
                Some(date.to_owned())
            }
            None => {
                tracing::info!("export {source}: adaptive, no state yet, {doing} the whole table");
                None
            }
        },
        other => other.map(str::to_owned),
    }
}

/// The input manifest as the platform writes it: `id`, `uri`, `name`, `primary_key`, dates, the exported
/// columns in file order, and (empty) metadata.
pub(super) fn input_manifest(table: &Table, columns: &[String]) -> InputManifest {
    let columns: Vec<String> = if columns.is_empty() {
        table.columns.clone()
    } else {
        columns.to_vec()
    };
    let column_metadata: Map<String, Value> = columns
        .iter()
        .map(|c| (c.clone(), Value::Array(Vec::new())))
        .collect();
    InputManifest {
        id: table.id.clone(),
        uri: table.uri.clone(),
        name: Some(table.name.clone()),
        primary_key: table.primary_key.clone(),
        distribution_key: None,
        created: table.created.clone(),
        last_change_date: table.last_change_date.clone(),
        last_import_date: table.last_import_date.clone(),
        description: None,
        columns,
        metadata: Vec::new(),
        column_metadata,
        schema: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_manifest_has_the_platform_fields_and_the_exported_columns() {
        let table = Table {
            id: "in.c-shop.orders".into(),
            name: "orders".into(),
            columns: vec!["id".into(), "amount".into(), "note".into()],
            primary_key: vec!["id".into()],
            created: Some("2026-01-01T00:00:00+0000".into()),
            last_import_date: Some("2026-01-02T00:00:00+0000".into()),
            uri: Some("https://connection.keboola.com/v2/storage/tables/in.c-shop.orders".into()),
            ..Default::default()
        };
        // Only the exported columns, in file order.
        let m = input_manifest(&table, &["amount".to_owned(), "id".to_owned()]);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["id"], "in.c-shop.orders");
        assert_eq!(json["name"], "orders");
        assert_eq!(json["primary_key"], serde_json::json!(["id"]));
        assert_eq!(json["columns"], serde_json::json!(["amount", "id"]));
        assert_eq!(json["last_import_date"], "2026-01-02T00:00:00+0000");
        assert_eq!(json["metadata"], serde_json::json!([]));
        assert_eq!(
            json["column_metadata"],
            serde_json::json!({"amount": [], "id": []})
        );
        // No columns reported: the table's.
        assert_eq!(input_manifest(&table, &[]).columns, table.columns);
    }
}
