//! The import step (output mapping): each planned output table is checked against Storage first (for all
//! tables, before anything is uploaded), then loaded, at most `concurrency` at once: a differing primary
//! key changed the way the platform does it (warn, change, roll back on failure), the file uploaded (gzip;
//! a sliced folder as a sliced file), then the client's [`Client::load_table`]: bucket and table created
//! when missing (with the primary key), `delete_where` rules applied before an incremental load, the file
//! imported, and a table this run created that is still empty after a failed load dropped again.

use super::plan::OutputPlan;
use super::report::{TableReport, join};
use crate::error::UserError;
use crate::interface::config::Step;
use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use kbc_storage::local_csv::{self, HeaderError};
use kbc_storage::{
    Client, Dialect, ImportOptions, LoadOutcome, LoadSpec, NewTable, Table, TableId, UploadOptions,
};
use std::path::Path;
use std::time::Instant;

/// An output table that passed the checks, with what Storage already has.
#[derive(Debug)]
pub struct Checked {
    pub plan: OutputPlan,
    pub columns: Vec<String>,
    /// Data rows in the file (header excluded), for the report.
    pub rows: u64,
    pub existing: Option<Table>,
}

/// Checks every table, then loads them. Files in out/tables are left as they are.
pub async fn run(
    client: &Client,
    plans: Vec<OutputPlan>,
    concurrency: usize,
) -> anyhow::Result<Vec<TableReport>> {
    let checked: Vec<Checked> = futures::stream::iter(plans)
        .map(|plan| check(client, plan))
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    futures::stream::iter(checked)
        .map(|c| async move { load(client, &c).await })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// The columns of the file: the header line, or the declared columns of a header-less file.
pub fn file_columns(plan: &OutputPlan) -> anyhow::Result<Vec<String>> {
    if let Some(cols) = &plan.headless_columns {
        return Ok(cols.clone());
    }
    read_header(&plan.path, plan.dialect)
}

/// Counts the data rows of a file or of all slices, streaming (quoted newlines are part of a value).
pub fn count_rows(plan: &OutputPlan) -> anyhow::Result<u64> {
    let files: Vec<std::path::PathBuf> = if plan.sliced {
        let mut f: Vec<_> = std::fs::read_dir(&plan.path)
            .with_context(|| format!("listing {}", plan.path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        f.sort();
        f
    } else {
        vec![plan.path.clone()]
    };
    let mut rows: u64 = 0;
    for file in files {
        let mut csv = local_csv::reader(&file, plan.dialect)
            .with_context(|| format!("opening {}", file.display()))?;
        let mut record = csv::ByteRecord::new();
        while csv
            .read_byte_record(&mut record)
            .map_err(|e| UserError::new(format!("{}: invalid CSV: {e}", file.display())))?
        {
            rows += 1;
        }
    }
    if plan.headless_columns.is_none() {
        rows = rows.saturating_sub(1);
    }
    Ok(rows)
}

/// Reads only the first record of an output CSV, gzipped or not (told by its content).
pub fn read_header(path: &Path, dialect: Dialect) -> anyhow::Result<Vec<String>> {
    header_or_user_error(
        path,
        dialect,
        "an output CSV needs a header row (or `columns` in its manifest)",
    )
}

/// The header of a local CSV; an empty or unreadable file is the user's to fix (`when_empty` says what
/// the caller needs instead), a file that cannot be opened is not.
pub(crate) fn header_or_user_error(
    path: &Path,
    dialect: Dialect,
    when_empty: &str,
) -> anyhow::Result<Vec<String>> {
    match local_csv::read_header(path, dialect) {
        Ok(Some(header)) => Ok(header),
        Ok(None) => {
            Err(UserError::new(format!("{} is empty: {when_empty}", path.display())).into())
        }
        Err(HeaderError::Open(e)) => {
            Err(anyhow::Error::new(e).context(format!("opening {}", path.display())))
        }
        Err(HeaderError::Read(e)) => Err(UserError::new(format!(
            "{}: cannot read the CSV header: {e}",
            path.display()
        ))
        .into()),
    }
}

/// The pre-upload checks: header against manifest, primary key, and the existing table's columns.
async fn check(client: &Client, plan: OutputPlan) -> anyhow::Result<Checked> {
    let dest = plan.destination.clone();
    let source = plan.source.clone();
    let (columns, rows) = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<String>, u64)> {
            Ok((file_columns(&plan)?, count_rows(&plan)?))
        })
        .await
        .context("reading a CSV header")??
    };
    if let Some(c) = columns
        .iter()
        .find(|c| c.eq_ignore_ascii_case("_timestamp"))
    {
        return Err(UserError::new(format!(
            "output table {source}: the column name `{c}` is reserved by Storage; rename it in the SQL"
        ))
        .into());
    }
    if let Some(expected) = plan.expected_header.as_ref().filter(|e| **e != columns) {
        return Err(UserError::new(format!(
            "output table {source}: the header ({}) differs from the manifest's schema ({}); the \
             header must list the schema's columns in the same order",
            columns.join(", "),
            expected.join(", ")
        ))
        .into());
    }
    let missing_pk: Vec<&String> = plan
        .primary_key
        .iter()
        .filter(|k| !columns.contains(k))
        .collect();
    if !missing_pk.is_empty() {
        return Err(UserError::new(format!(
            "output table {source} → {dest}: primary key columns missing in the file: {}; the file has: {}",
            join(&missing_pk),
            columns.join(", ")
        ))
        .into());
    }
    // The table a write goes to: in a development branch, the branch's, never production's.
    let existing = client
        .get_table_for_write(&dest)
        .await
        .with_context(|| format!("import {source} → {dest}"))?;
    if let Some(table) = &existing {
        let missing: Vec<&String> = table
            .columns
            .iter()
            .filter(|c| !columns.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(UserError::new(format!(
                "output table {source} → {dest}: columns missing in the file: {}; the table has: {}; the file \
                 has: {}. Nothing was loaded",
                join(&missing),
                table.columns.join(", "),
                columns.join(", ")
            ))
            .into());
        }
    }
    Ok(Checked {
        plan,
        columns,
        rows,
        existing,
    })
}

/// Loads one checked table: the primary key aligned on an existing table, the file uploaded, then the
/// client's load (table created when missing, `delete_where` rows deleted, import; a table it created
/// is dropped again when the load fails).
async fn load(client: &Client, c: &Checked) -> anyhow::Result<TableReport> {
    let started = Instant::now();
    let plan = &c.plan;
    let dest = &plan.destination;
    let context = || format!("import {} → {dest}", plan.source);
    if let Some(t) = &c.existing {
        align_primary_key(client, dest, t, &plan.primary_key)
            .await
            .with_context(context)?;
    }
    let bytes = size_of(&plan.path);
    let file_id = client
        .upload_file(
            &plan.path,
            &UploadOptions {
                name: upload_name(&plan.source),
                tags: vec!["kbc-runner".to_owned()],
                // Sent as it is when it is gzipped already.
                gzip: true,
            },
        )
        .await
        .with_context(|| format!("uploading {}", plan.path.display()))
        .with_context(context)?;
    let spec = LoadSpec {
        import: ImportOptions {
            incremental: plan.incremental,
            columns: plan.headless_columns.clone(),
            delimiter: Some(plan.dialect.delimiter),
            enclosure: Some(plan.dialect.enclosure),
        },
        create: c.existing.is_none().then(|| NewTable {
            columns: c.columns.clone(),
            primary_key: plan.primary_key.clone(),
        }),
        // Only after the upload: a failed upload deletes nothing.
        delete_first: if plan.incremental {
            plan.delete_where.clone()
        } else {
            Vec::new()
        },
    };
    let outcome = client
        .load_table(dest, &kbc_storage::DataSource::File(file_id), &spec)
        .await
        .with_context(context)?;
    let (table, note) = loaded(&outcome, c.existing.as_ref(), dest, plan.incremental, "");
    let report = TableReport {
        step: Step::Import,
        table,
        rows: Some(c.rows),
        bytes,
        duration: started.elapsed(),
        note,
    };
    tracing::info!("{}", report.line());
    Ok(report)
}

/// What a load wrote, for its report: the table (in a development branch, the branch's) and a note
/// (`created; incremental, table has N rows`, after `how`). Storage's warnings are logged.
pub(super) fn loaded(
    outcome: &LoadOutcome,
    existing: Option<&Table>,
    dest: &TableId,
    incremental: bool,
    how: &str,
) -> (String, String) {
    let table_id = match outcome.created.as_ref().or(existing) {
        Some(t) => t.id.clone(),
        None => dest.to_string(),
    };
    for w in &outcome.import.warnings {
        tracing::warn!("{table_id}: Storage warning: {w}");
    }
    let kind = if incremental { "incremental" } else { "full" };
    let created = if outcome.created.is_some() {
        "created; "
    } else {
        ""
    };
    let rows_now = outcome.import.total_rows_count;
    let note = format!("{created}{how}{kind}, table has {rows_now} rows");
    (table_id, note)
}

fn upload_name(source: &str) -> String {
    let base = source.strip_suffix(".gz").unwrap_or(source);
    let base = base.strip_suffix(".csv").unwrap_or(base);
    format!("{base}.csv")
}

fn size_of(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|it| {
                it.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Changes a differing primary key to the configured one, as the platform's output mapping does; when the
/// new key cannot be set (duplicates, say), the old key is put back and the load fails.
pub(super) async fn align_primary_key(
    client: &Client,
    table_id: &TableId,
    table: &Table,
    wanted: &[String],
) -> anyhow::Result<()> {
    let mut current = table.primary_key.clone();
    let mut sorted_wanted = wanted.to_vec();
    current.sort();
    sorted_wanted.sort();
    if current == sorted_wanted {
        return Ok(());
    }
    // A key over a column the table does not have yet needs that column first (the load would add it,
    // but only after the key change).
    for column in wanted.iter().filter(|c| !table.columns.contains(c)) {
        client
            .add_column(table_id, column)
            .await
            .with_context(|| format!("adding the primary key column `{column}` to {}", table.id))?;
        tracing::info!(
            "{}: added column `{column}` for the new primary key",
            table.id
        );
    }
    tracing::warn!(
        "{}: changing the primary key from [{}] to [{}] as the output mapping asks",
        table.id,
        table.primary_key.join(", "),
        wanted.join(", ")
    );
    if !table.primary_key.is_empty() {
        client
            .remove_primary_key(table_id)
            .await
            .context("removing the old primary key")?;
    }
    if wanted.is_empty() {
        return Ok(());
    }
    if let Err(err) = client.add_primary_key(table_id, wanted).await {
        if !table.primary_key.is_empty() {
            if let Err(rollback) = client.add_primary_key(table_id, &table.primary_key).await {
                tracing::error!(
                    "{}: could not restore the old primary key [{}]: {rollback}",
                    table.id,
                    table.primary_key.join(", ")
                );
            } else {
                tracing::warn!("{}: restored the old primary key", table.id);
            }
        }
        return Err(anyhow::Error::new(err).context(format!(
            "setting the primary key [{}] on {}",
            wanted.join(", "),
            table.id
        )));
    }
    Ok(())
}

#[cfg(test)]
fn dialect(delimiter: &str, enclosure: &str) -> Dialect {
    Dialect {
        delimiter: delimiter.parse().unwrap(),
        enclosure: enclosure.parse().unwrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_read_with_the_declared_dialect() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        std::fs::write(&p, "\u{feff}\"id\";\"na;me\"\n\"1\";\"x\"\n").unwrap();
        assert_eq!(
            read_header(&p, dialect(";", "\"")).unwrap(),
            ["id", "na;me"]
        );
        std::fs::write(&p, "").unwrap();
        assert!(
            read_header(&p, Dialect::default())
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let gz = dir.path().join("b.csv.gz");
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        std::io::Write::write_all(&mut enc, b"a,b\n1,2\n").unwrap();
        enc.finish().unwrap();
        assert_eq!(read_header(&gz, Dialect::default()).unwrap(), ["a", "b"]);
        // Gzip is told by the content: a gzipped `x.csv` reads like its plain text, and so do its rows.
        let hidden = dir.path().join("x.csv");
        std::fs::rename(&gz, &hidden).unwrap();
        assert_eq!(
            read_header(&hidden, Dialect::default()).unwrap(),
            ["a", "b"]
        );
        let plan = OutputPlan {
            source: "x.csv".into(),
            path: hidden,
            sliced: false,
            destination: "out.c-a.x".parse().unwrap(),
            incremental: false,
            primary_key: vec![],
            headless_columns: None,
            expected_header: None,
            dialect: Dialect::default(),
            delete_where: vec![],
            write_always: false,
        };
        assert_eq!(count_rows(&plan).unwrap(), 1);
        assert_eq!(upload_name("x.csv.gz"), "x.csv");
    }

    #[test]
    fn rows_are_counted_across_slices_and_quoted_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "\"id\",\"t\"\n\"1\",\"two\nlines\"\n\"2\",\"x\"\n").unwrap();
        let mut plan = OutputPlan {
            source: "a.csv".into(),
            path: file,
            sliced: false,
            destination: "out.c-a.a".parse().unwrap(),
            incremental: false,
            primary_key: vec![],
            headless_columns: None,
            expected_header: None,
            dialect: Dialect::default(),
            delete_where: vec![],
            write_always: false,
        };
        assert_eq!(count_rows(&plan).unwrap(), 2);
        let sliced = dir.path().join("s.csv");
        std::fs::create_dir_all(&sliced).unwrap();
        std::fs::write(sliced.join("p1"), "1,a\n2,b\n").unwrap();
        std::fs::write(sliced.join("p2"), "3,c\n").unwrap();
        plan.path = sliced;
        plan.sliced = true;
        plan.headless_columns = Some(vec!["id".into(), "t".into()]);
        assert_eq!(count_rows(&plan).unwrap(), 3);
        assert_eq!(file_columns(&plan).unwrap(), ["id", "t"]);
    }
}

/// Property tests (issue 7): reading an output CSV's header never panics, whatever the bytes, and gives
/// back exactly the names a CSV writer wrote (a UTF-8 BOM is not part of the first name).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_give_a_header_or_an_error(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            delimiter in prop_oneof![Just(","), Just(";"), Just("\t"), Just("|")],
            enclosure in prop_oneof![Just("\""), Just("'"), Just("")],
            gz in any::<bool>(),
        ) {
            let d = tempfile::tempdir().unwrap();
            // Random bytes behind the gzip magic exercise the decoder's error path too.
            let bytes = if gz { [&[0x1f, 0x8b][..], &bytes].concat() } else { bytes };
            let path = d.path().join("t.csv");
            std::fs::write(&path, &bytes).unwrap();
            let _ = read_header(&path, dialect(delimiter, enclosure));
        }

        #[test]
        fn written_header_reads_back(
            names in prop::collection::vec("[^\u{0}\u{feff}]{1,10}", 1..8),
            bom in any::<bool>(),
        ) {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("t.csv");
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&names).unwrap();
            w.write_record(names.iter().map(|_| "v")).unwrap();
            let mut bytes = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
            bytes.extend(w.into_inner().unwrap());
            std::fs::write(&path, &bytes).unwrap();
            prop_assert_eq!(read_header(&path, Dialect::default()).unwrap(), names);
        }
    }
}
