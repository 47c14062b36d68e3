//! `tables detail TABLE_ID`: a table's columns, primary key, size and dates, as text or as JSON.

use super::write_stdout;
use crate::error::UserError;
use kbc_storage::{Client, Table, TableId, human_bytes};

pub(super) async fn detail(client: &Client, table_id: &TableId, json: bool) -> anyhow::Result<()> {
    let table = client
        .get_table(table_id)
        .await?
        .ok_or_else(|| UserError::new(format!("table {table_id} does not exist")))?;
    if json {
        let text = serde_json::to_string_pretty(&table)?;
        return write_stdout(format!("{text}\n").as_bytes());
    }
    write_stdout(render_detail(&table).as_bytes())
}

fn render_detail(t: &Table) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    format!(
        "id:            {}\nbucket:        {}\nname:          {}\ncolumns:       {}\nprimary key:   {}\nrows:          {}\nsize:          {}\ntyped:         {}\ncreated:       {}\nlast import:   {}\nlast change:   {}\n",
        t.id,
        t.bucket_id,
        t.name,
        t.columns.join(", "),
        if t.primary_key.is_empty() {
            "-".into()
        } else {
            t.primary_key.join(", ")
        },
        t.rows_count,
        human_bytes(t.data_size_bytes),
        t.is_typed,
        opt(&t.created),
        opt(&t.last_import_date),
        opt(&t.last_change_date),
    )
}
