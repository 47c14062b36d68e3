//! `tables list [BUCKET_ID]`: the tables of a bucket or of the project, as a table or as JSON.

use super::write_stdout;
use kbc_storage::{BucketId, Client, human_bytes};

pub(super) async fn list(
    client: &Client,
    bucket_id: Option<&BucketId>,
    json: bool,
) -> anyhow::Result<()> {
    let mut tables = client.list_tables(bucket_id).await?;
    tables.sort_by(|a, b| a.id.cmp(&b.id));
    if json {
        let text = serde_json::to_string_pretty(&tables)?;
        return write_stdout(format!("{text}\n").as_bytes());
    }
    let width = tables.iter().map(|t| t.id.len()).max().unwrap_or(8).max(8);
    let mut out = format!(
        "{:<width$}  {:>12}  {:>10}  {:<25}  PRIMARY KEY\n",
        "TABLE", "ROWS", "SIZE", "LAST IMPORT"
    );
    for t in &tables {
        out.push_str(&format!(
            "{:<width$}  {:>12}  {:>10}  {:<25}  {}\n",
            t.id,
            t.rows_count,
            human_bytes(t.data_size_bytes),
            t.last_import_date.as_deref().unwrap_or("-"),
            t.primary_key.join(",")
        ));
    }
    write_stdout(out.as_bytes())?;
    tracing::info!("{} table(s)", tables.len());
    Ok(())
}
