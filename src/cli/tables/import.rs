//! `tables import TABLE_ID FILE`: a CSV file or a folder of slices uploaded, then loaded by the client's
//! load workflow (the job's too): a missing table is created with `--create`, and dropped again when its
//! first load fails.

use super::ImportArgs;
use super::progress::Ticker;
use crate::error::UserError;
use anyhow::Context;
use kbc_storage::{
    Client, Dialect, ImportOptions, LoadSpec, NewTable, TableId, UploadOptions, human_bytes,
};
use std::time::Instant;

pub(super) async fn import(client: &Client, args: ImportArgs) -> anyhow::Result<()> {
    let table_id: TableId = args.table_id.parse()?;
    let meta = std::fs::metadata(&args.file)
        .map_err(|e| UserError::new(format!("cannot read {}: {e}", args.file.display())))?;
    let columns: Vec<String> = args
        .columns
        .iter()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    if meta.is_dir() && columns.is_empty() {
        crate::user_bail!(
            "{} is a folder of slices; slices have no header, so pass --columns",
            args.file.display()
        );
    }
    let started = Instant::now();
    // In a development branch, the table the import goes to (never production's).
    let existing = client.get_table_for_write(&table_id).await?;
    if existing.is_none() && !args.create {
        crate::user_bail!(
            "table {} does not exist; pass --create to create it",
            args.table_id
        );
    }
    if let Some(t) = &existing
        && !args.primary_key.is_empty()
        && t.primary_key != args.primary_key
    {
        tracing::warn!(
            "--primary-key applies only to new tables; {} keeps its primary key [{}]",
            t.id,
            t.primary_key.join(", ")
        );
    }
    let columns = (!columns.is_empty()).then_some(columns);
    // A new table is created from its column names, known before anything is uploaded.
    let create = match &existing {
        Some(_) => None,
        None => Some(NewTable {
            columns: match &columns {
                Some(c) => c.clone(),
                None => header_of(&args)?,
            },
            primary_key: args.primary_key.clone(),
        }),
    };
    let ticker = Ticker::start(client.progress(), "uploaded");
    let file_id = client
        .upload_file(
            &args.file,
            &UploadOptions {
                name: String::new(),
                tags: vec!["kbc-runner".into()],
                gzip: true,
            },
        )
        .await;
    ticker.stop().await;
    let file_id = file_id
        .with_context(|| format!("uploading {} for {}", args.file.display(), args.table_id))?;
    let spec = LoadSpec {
        import: ImportOptions {
            incremental: args.incremental,
            columns,
            delimiter: args.delimiter,
            enclosure: args.enclosure,
        },
        create,
        delete_first: Vec::new(),
    };
    let outcome = client
        .load_table(&table_id, &kbc_storage::DataSource::File(file_id), &spec)
        .await
        .with_context(|| format!("importing into {}", args.table_id))?;
    let import = &outcome.import;
    let summary = match &outcome.created {
        Some(table) => format!(
            "created {} with {} rows, columns [{}], primary key [{}]",
            table.id,
            import.total_rows_count,
            table.columns.join(", "),
            table.primary_key.join(", ")
        ),
        None => format!(
            "{} import into {}: table has {} rows ({}), job {}{}",
            if args.incremental {
                "incremental"
            } else {
                "full"
            },
            args.table_id,
            import.total_rows_count,
            human_bytes(import.total_data_size_bytes),
            import.job_id,
            if import.warnings.is_empty() {
                String::new()
            } else {
                format!(", warnings: {}", import.warnings.join("; "))
            }
        ),
    };
    tracing::info!("{summary} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The header of the file to import, in its dialect (gzipped or not), for a table to create from it.
fn header_of(args: &ImportArgs) -> anyhow::Result<Vec<String>> {
    let dialect = Dialect {
        delimiter: args.delimiter.unwrap_or_default(),
        enclosure: args.enclosure.unwrap_or_default(),
    };
    crate::pipeline::import::header_or_user_error(
        &args.file,
        dialect,
        "a new table needs a header row (or --columns)",
    )
}
