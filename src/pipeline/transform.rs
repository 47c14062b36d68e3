//! The transform step: DuckDB in-process over `in/tables`, running `parameters.blocks[].codes[].script[]` in
//! order (the shape of Keboola's DuckDB transformation), then writing every output-mapping `source` to
//! `out/tables` as RFC CSV with its manifest.
//!
//! Inputs are views over the CSV files (nothing is loaded into memory up front): named after the file
//! without `.csv`, typed from the manifest `schema` when there is one, else all text. Sliced folders are
//! read through a glob, with the column names from the manifest (slices have no header). DuckDB runs on a
//! blocking thread; its memory and threads are bounded and it spills to a temp folder under the system temp
//! dir (`/tmp` on the platform, a volume outside the container overlay).

use super::report::{Step, TableReport};
use crate::error::UserError;
use crate::interface::config::{Block, OutputTableMapping};
use crate::interface::manifest::{InputManifest, OutputTableSpec, manifest_path};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything the transform needs, owned so it can move to a blocking thread.
#[derive(Debug, Clone)]
pub struct TransformJob {
    pub in_tables: PathBuf,
    pub out_tables: PathBuf,
    pub blocks: Vec<Block>,
    pub outputs: Vec<OutputTableMapping>,
    pub threads: Option<usize>,
    pub memory_limit: Option<String>,
    /// Write output manifests in the native-types (`schema`) form.
    pub schema_form: bool,
}

/// One input table as DuckDB sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputView {
    pub name: String,
    pub path: PathBuf,
    pub sliced: bool,
    /// Column names with DuckDB types; empty = read the header, all VARCHAR.
    pub columns: Vec<(String, String)>,
}

/// Runs the whole transform on a blocking thread.
pub async fn run(job: TransformJob) -> anyhow::Result<Vec<TableReport>> {
    tokio::task::spawn_blocking(move || run_blocking(&job))
        .await
        .context("the DuckDB thread stopped unexpectedly")?
}

/// The transform, synchronously (DuckDB's connection is not async).
pub fn run_blocking(job: &TransformJob) -> anyhow::Result<Vec<TableReport>> {
    let tmp = tempfile::Builder::new()
        .prefix("kbc-runner-duckdb-")
        .tempdir()
        .context("creating the DuckDB temp folder")?;
    let conn = duckdb::Connection::open_in_memory().context("starting DuckDB")?;
    let mut settings = vec![format!(
        "SET temp_directory = {}",
        sql_string(&tmp.path().to_string_lossy())
    )];
    // Parameters win; otherwise the container's limits, which DuckDB may not see on its own.
    if let Some(t) = job.threads.or_else(cgroup_cpus) {
        settings.push(format!("SET threads = {t}"));
    }
    let memory = job
        .memory_limit
        .clone()
        .or_else(|| cgroup_memory_bytes().map(|b| format!("{}MB", duckdb_memory_mb(b))));
    if let Some(m) = &memory {
        settings.push(format!("SET memory_limit = {}", sql_string(m)));
    }
    for s in &settings {
        conn.execute_batch(s)
            .map_err(|e| UserError::new(format!("DuckDB setting `{s}` failed: {e}")))?;
    }

    let views = discover_inputs(&job.in_tables)?;
    for view in &views {
        // DuckDB reads an empty file as one column named `column0`, which would then be loaded into
        // Storage; a CSV without even a header row is a broken input (tests/bad_input.rs).
        if !view.sliced && std::fs::metadata(&view.path).is_ok_and(|m| m.len() == 0) {
            return Err(UserError::new(format!(
                "input table {} is empty: a CSV needs at least a header row",
                view.path.display()
            ))
            .into());
        }
        let sql = view_sql(view);
        conn.execute_batch(&sql).map_err(|e| {
            UserError::new(format!(
                "cannot read input table {} as view \"{}\": {}",
                view.path.display(),
                view.name,
                first_paragraph(&e.to_string())
            ))
        })?;
        tracing::info!(
            "input table \"{}\" ready ({})",
            view.name,
            view.path.display()
        );
    }

    std::fs::create_dir_all(&job.out_tables)
        .with_context(|| format!("creating {}", job.out_tables.display()))?;
    if let Err(err) = run_blocks(&conn, &job.blocks) {
        write_always_outputs(&conn, job);
        return Err(err);
    }

    // Check every output first: a missing one fails the job before anything is written.
    let mut outputs = Vec::new();
    for mapping in &job.outputs {
        let table = table_name(&mapping.source);
        let columns = table_columns(&conn, &table)?;
        if columns.is_empty() {
            let existing = list_tables(&conn).unwrap_or_default();
            return Err(UserError::new(format!(
                "output table `{}` (storage.output.tables source `{}`) was not created by the SQL; \
                 tables and views that exist: {}",
                table,
                mapping.source,
                if existing.is_empty() {
                    "none".to_owned()
                } else {
                    existing.join(", ")
                }
            ))
            .into());
        }
        // Names Storage would reject fail here too, before any output is written.
        storage_column_names(&table, &columns)?;
        outputs.push((mapping, table, columns));
    }
    let mut reports = Vec::new();
    for (mapping, table, columns) in outputs {
        reports.push(write_output(&conn, job, mapping, &table, &columns)?);
    }
    Ok(reports)
}

/// After a failed statement: the `write_always` outputs that exist are still written, so the import can
/// load them as the platform does for a failed job. Failures here are logged; the SQL error is what counts.
fn write_always_outputs(conn: &duckdb::Connection, job: &TransformJob) {
    for mapping in job
        .outputs
        .iter()
        .filter(|m| m.options.write_always == Some(true))
    {
        let table = table_name(&mapping.source);
        match table_columns(conn, &table) {
            Ok(columns) if !columns.is_empty() => {
                if let Err(e) = write_output(conn, job, mapping, &table, &columns) {
                    tracing::warn!("write_always table `{table}` could not be written: {e:#}");
                }
            }
            _ => {
                tracing::info!("write_always table `{table}` does not exist yet, nothing to write")
            }
        }
    }
}

/// The container's memory limit (cgroup v2, then v1); `None` when unlimited or unknown.
fn cgroup_memory_bytes() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let value = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    let bytes = value.trim().parse::<u64>().ok()?;
    // "max" does not parse; v1 writes a huge number for "no limit".
    (bytes < 1 << 50).then_some(bytes)
}

/// DuckDB's share of a memory limit: leave 256 MB to the rest of the process (the Storage client's
/// buffers, the runtime), but never less than half of the limit.
fn duckdb_memory_mb(limit_bytes: u64) -> u64 {
    let mb = limit_bytes / (1024 * 1024);
    mb.saturating_sub(256).max(mb / 2).max(64)
}

/// The container's CPU quota in whole CPUs (cgroup v2 `cpu.max`, then v1); `None` when unlimited.
fn cgroup_cpus() -> Option<usize> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let (quota, period) = match read("/sys/fs/cgroup/cpu.max") {
        Some(v2) => {
            let mut parts = v2.split_whitespace();
            (
                parts.next()?.parse::<f64>().ok()?,
                parts.next()?.parse::<f64>().ok()?,
            )
        }
        None => (
            read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?
                .trim()
                .parse::<f64>()
                .ok()?,
            read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?
                .trim()
                .parse::<f64>()
                .ok()?,
        ),
    };
    (quota > 0.0 && period > 0.0).then(|| ((quota / period).ceil() as usize).max(1))
}

/// Runs blocks, codes and statements in order; the first failure stops the job and names where it was.
fn run_blocks(conn: &duckdb::Connection, blocks: &[Block]) -> anyhow::Result<()> {
    for (b, block) in blocks.iter().enumerate() {
        let block_name = label(&block.name, "block", b);
        tracing::info!("running {block_name}");
        for (c, code) in block.codes.iter().enumerate() {
            let code_name = label(&code.name, "code", c);
            for (s, statement) in code.script.iter().enumerate() {
                if statement.trim().is_empty() {
                    continue;
                }
                let started = Instant::now();
                conn.execute_batch(statement).map_err(|e| {
                    UserError::new(format!(
                        "SQL failed in {block_name}, {code_name}, statement {} of {}: {}\nstatement: {}",
                        s + 1,
                        code.script.len(),
                        one_line(&e.to_string()),
                        shorten(statement, 300)
                    ))
                })?;
                tracing::info!(
                    "  {code_name} statement {}: done in {:.2} s",
                    s + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok(())
}

fn label(name: &str, kind: &str, index: usize) -> String {
    if name.trim().is_empty() {
        format!("{kind} #{}", index + 1)
    } else {
        format!("{kind} #{} `{}`", index + 1, name)
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shorten(text: &str, max: usize) -> String {
    let text = one_line(text);
    if text.chars().count() <= max {
        text
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// `orders.csv` → `orders`; other names stay as they are (`in.c-main.orders`).
pub fn table_name(file_name: &str) -> String {
    file_name
        .strip_suffix(".csv")
        .unwrap_or(file_name)
        .to_owned()
}

/// Finds input tables: each CSV file or sliced folder in `in/tables` (manifests and hidden files aside).
pub fn discover_inputs(in_tables: &Path) -> anyhow::Result<Vec<InputView>> {
    let mut views = Vec::new();
    let entries = match std::fs::read_dir(in_tables) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(views),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("listing {}", in_tables.display())));
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !name.starts_with('.') && !name.ends_with(".manifest")
        })
        .collect();
    paths.sort();
    for path in paths {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = table_name(file_name.strip_suffix(".gz").unwrap_or(&file_name));
        let manifest_file = manifest_path(&path);
        let manifest = if manifest_file.is_file() {
            Some(InputManifest::load(&manifest_file)?)
        } else {
            None
        };
        let sliced = path.is_dir();
        let columns = input_columns(manifest.as_ref());
        if sliced && columns.is_empty() {
            return Err(UserError::new(format!(
                "sliced input {} needs a manifest with `columns` (slices have no header)",
                path.display()
            ))
            .into());
        }
        views.push(InputView {
            name,
            path,
            sliced,
            columns,
        });
    }
    Ok(views)
}

/// Columns and DuckDB types from an input manifest: `schema` when present, else `columns` as VARCHAR.
fn input_columns(manifest: Option<&InputManifest>) -> Vec<(String, String)> {
    let Some(m) = manifest else { return Vec::new() };
    if let Some(schema) = m.schema.as_ref().filter(|s| !s.is_empty()) {
        return schema
            .iter()
            .map(|c| (c.name.clone(), column_type(c)))
            .collect();
    }
    m.columns
        .iter()
        .map(|c| (c.clone(), "VARCHAR".to_owned()))
        .collect()
}

/// The DuckDB type of a schema column: its base type, with the precision of a `NUMERIC` when the
/// manifest gives a valid one (`"10,2"`), so decimals are not rounded to the default scale.
fn column_type(column: &crate::interface::manifest::ColumnSchema) -> String {
    let base = column.base_type();
    if base.is_some_and(|b| b.eq_ignore_ascii_case("NUMERIC")) {
        let length = column
            .data_type
            .as_ref()
            .and_then(|d| d.base.as_ref())
            .and_then(|b| b.length.as_deref());
        let precision = length
            .and_then(|l| l.split_once(','))
            .and_then(|(p, s)| Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<u8>().ok()?)));
        if let Some((p, s)) = precision.filter(|(p, s)| (1..=38).contains(p) && s <= p) {
            return format!("DECIMAL({p},{s})");
        }
    }
    duckdb_type(base).to_owned()
}

/// Keboola base type → DuckDB type (unknown or missing: text, which never rejects a value).
pub fn duckdb_type(base: Option<&str>) -> &'static str {
    match base.map(|b| b.to_ascii_uppercase()).as_deref() {
        Some("INTEGER") => "BIGINT",
        Some("NUMERIC") => "DECIMAL(38,9)",
        Some("FLOAT") => "DOUBLE",
        Some("BOOLEAN") => "BOOLEAN",
        Some("DATE") => "DATE",
        Some("TIMESTAMP") => "TIMESTAMP",
        _ => "VARCHAR",
    }
}

/// DuckDB column type → Keboola base type, for output manifests.
pub fn base_type(duckdb: &str) -> &'static str {
    let t = duckdb.to_ascii_uppercase();
    let t = t.split('(').next().unwrap_or("").trim();
    match t {
        "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "HUGEINT" | "UTINYINT" | "USMALLINT"
        | "UINTEGER" | "UBIGINT" | "UHUGEINT" => "INTEGER",
        "DECIMAL" => "NUMERIC",
        "FLOAT" | "DOUBLE" | "REAL" => "FLOAT",
        "BOOLEAN" => "BOOLEAN",
        "DATE" => "DATE",
        _ if t.starts_with("TIMESTAMP") => "TIMESTAMP",
        _ => "STRING",
    }
}

/// The longest CSV line (one row) the transform reads: Keboola's largest value is 16 MiB.
const MAX_LINE_BYTES: usize = 16 << 20;

/// DuckDB's CSV errors go on for 25 lines (its reader options, "possible solutions" naming options
/// the user cannot set here); the first paragraph says what is wrong and where. Its `Original Line:`
/// quotes the whole offending row (megabytes for a huge value, and data in a log), so every line is cut
/// to 200 characters.
fn first_paragraph(message: &str) -> String {
    let end = [
        "\n\n",
        "\nThe search space",
        "\nPossible fix",
        "\nPossible Solution",
    ]
    .iter()
    .filter_map(|m| message.find(m))
    .min()
    .unwrap_or(message.len());
    message[..end]
        .trim_end()
        .lines()
        .map(|line| match line.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `CREATE VIEW` for one input: RFC CSV (`,`, `"` doubled inside values), as the platform writes it.
pub fn view_sql(view: &InputView) -> String {
    if view.sliced && is_empty_dir(&view.path) {
        // No slices is an empty table; a glob over nothing would fail.
        let cols: Vec<String> = view
            .columns
            .iter()
            .map(|(n, t)| format!("CAST(NULL AS {t}) AS {}", ident(n)))
            .collect();
        return format!(
            "CREATE VIEW {} AS SELECT {} WHERE false",
            ident(&view.name),
            cols.join(", ")
        );
    }
    let source = if view.sliced {
        format!("{}/*", view.path.to_string_lossy())
    } else {
        view.path.to_string_lossy().into_owned()
    };
    let mut options = vec![
        "delim = ','".to_owned(),
        "quote = '\"'".to_owned(),
        "escape = '\"'".to_owned(),
        format!("header = {}", !view.sliced),
        // Storage values go up to 16 MB; DuckDB's default line limit (2 MB) rejected valid tables. The
        // buffer holds one such line and stays under glibc's 32 MiB mmap ceiling, so freed buffers are
        // reused: DuckDB's default (32 MiB) was mapped afresh for every read, and its page faults cost
        // 0.4 s per 1.8 GB input in the profile. Memory stays bounded (tests/bad_input.rs).
        format!("max_line_size = {MAX_LINE_BYTES}"),
        format!("buffer_size = {}", MAX_LINE_BYTES + (1 << 20)),
    ];
    if view.columns.is_empty() {
        options.push("all_varchar = true".to_owned());
    } else {
        let cols: Vec<String> = view
            .columns
            .iter()
            .map(|(n, t)| format!("{}: {}", sql_string(n), sql_string(t)))
            .collect();
        options.push(format!("columns = {{{}}}", cols.join(", ")));
    }
    format!(
        "CREATE VIEW {} AS SELECT * FROM read_csv({}, {})",
        ident(&view.name),
        sql_string(&source),
        options.join(", ")
    )
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut it| it.next().is_none())
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The columns of a table or view with their DuckDB types; empty when it does not exist.
fn table_columns(conn: &duckdb::Connection, table: &str) -> anyhow::Result<Vec<(String, String)>> {
    // DuckDB resolves names case-insensitively, temporary tables first; the lookup does the same, so
    // `Summary.csv` finds a table created as `summary` and one table's columns are never mixed with
    // another's of the same name.
    let mut stmt = conn.prepare(
        "WITH t AS (SELECT table_catalog AS c, table_schema AS s, table_name AS n \
                    FROM information_schema.tables WHERE lower(table_name) = lower(?) \
                    ORDER BY (table_catalog = 'temp') DESC, table_schema = 'main' DESC LIMIT 1) \
         SELECT column_name, data_type FROM information_schema.columns, t \
         WHERE table_catalog = t.c AND table_schema = t.s AND table_name = t.n ORDER BY ordinal_position",
    )?;
    let rows = stmt.query_map([table], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn list_tables(conn: &duckdb::Connection) -> anyhow::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT DISTINCT table_name FROM information_schema.tables ORDER BY 1")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Storage column names: `[A-Za-z0-9_]` only, as the platform sanitizes them (`count_star()` →
/// `count_star`). Names that collide after sanitizing, or that are left empty, are a user error asking
/// for an alias.
fn storage_column_names(table: &str, columns: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::with_capacity(columns.len());
    for (original, _) in columns {
        let replaced: String = original
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = replaced.trim_matches('_').to_owned();
        if name.is_empty() {
            return Err(UserError::new(format!(
                "output table `{table}`: column `{original}` has no usable characters for a Storage column \
                 name; give it an alias in the SQL (AS some_name)"
            ))
            .into());
        }
        if names.contains(&name) {
            return Err(UserError::new(format!(
                "output table `{table}`: two columns become `{name}` in Storage (which allows only \
                 A-Z, a-z, 0-9 and _); give them distinct aliases in the SQL"
            ))
            .into());
        }
        names.push(name);
    }
    Ok(names)
}

/// Writes one output table: `COPY` to a hidden temp name in `out/tables`, rename, then the manifest.
fn write_output(
    conn: &duckdb::Connection,
    job: &TransformJob,
    mapping: &OutputTableMapping,
    table: &str,
    columns: &[(String, String)],
) -> anyhow::Result<TableReport> {
    let started = Instant::now();
    let target = job.out_tables.join(&mapping.source);
    let tmp = job.out_tables.join(format!(
        ".{}.{}.tmp",
        mapping.source,
        uuid::Uuid::new_v4().simple()
    ));
    let names = storage_column_names(table, columns)?;
    for ((original, _), name) in columns.iter().zip(&names) {
        if name != original {
            tracing::warn!(
                "output table `{table}`: column `{original}` is written as `{name}` (Storage column names \
                 allow only A-Z, a-z, 0-9 and _)"
            );
        }
    }
    let select: Vec<String> = columns
        .iter()
        .zip(&names)
        .map(|((original, _), name)| format!("{} AS {}", ident(original), ident(name)))
        .collect();
    let copy = format!(
        "COPY (SELECT {} FROM {}) TO {} (FORMAT CSV, HEADER, DELIMITER ',', QUOTE '\"', ESCAPE '\"', FORCE_QUOTE *)",
        select.join(", "),
        ident(table),
        sql_string(&tmp.to_string_lossy())
    );
    let rows = conn.execute(&copy, []).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        UserError::new(format!(
            "writing output table `{table}` to {}: {e}",
            target.display()
        ))
    })?;
    if target.is_dir() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("replacing {}", target.display()))?;
    }
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("renaming into {}", target.display()))?;
    let options = &mapping.options;
    let spec = OutputTableSpec {
        destination: options.destination.clone().filter(|d| !d.is_empty()),
        incremental: options.incremental.unwrap_or(false),
        primary_key: options.primary_key.clone().unwrap_or_default(),
        columns: names
            .iter()
            .zip(columns)
            .map(|(n, (_, t))| (n.clone(), Some(base_type(t).to_owned())))
            .collect(),
        sliced: false,
        write_always: options.write_always.unwrap_or(false),
        description: options.description.clone(),
    };
    spec.write(&target, job.schema_form)?;
    let bytes = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        "output table `{table}` → {} ({rows} rows)",
        target.display()
    );
    Ok(TableReport {
        step: Step::Transform,
        table: mapping.source.clone(),
        rows: Some(rows as u64),
        bytes,
        duration: started.elapsed(),
        note: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::config::Code;

    fn job(dir: &Path, sql: &[&str], outputs: &[&str]) -> TransformJob {
        TransformJob {
            in_tables: dir.join("in/tables"),
            out_tables: dir.join("out/tables"),
            blocks: vec![Block {
                name: "B".into(),
                codes: vec![Code {
                    name: "C".into(),
                    script: sql.iter().map(|s| s.to_string()).collect(),
                }],
            }],
            outputs: outputs
                .iter()
                .map(|s| OutputTableMapping {
                    source: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            threads: Some(1),
            memory_limit: Some("256MB".into()),
            schema_form: false,
        }
    }

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("in/tables");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(
            t.join("orders.csv"),
            "id,amount\n\"1\",\"10\"\n\"2\",\"5,5\"\n\"3\",\"say \"\"hi\"\"\"\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn views_statements_and_rfc_output() {
        let dir = setup();
        let reports = run_blocking(&job(
            dir.path(),
            &["CREATE TABLE out AS SELECT id, amount, length(amount) AS len FROM orders ORDER BY id"],
            &["out.csv"],
        ))
        .unwrap();
        assert_eq!(reports[0].rows, Some(3));
        let csv = std::fs::read_to_string(dir.path().join("out/tables/out.csv")).unwrap();
        assert_eq!(
            csv,
            "\"id\",\"amount\",\"len\"\n\"1\",\"10\",\"2\"\n\"2\",\"5,5\",\"3\"\n\"3\",\"say \"\"hi\"\"\",\"8\"\n"
        );
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/tables/out.csv.manifest")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["column_metadata"]["len"][0]["value"], "INTEGER");
        assert_eq!(manifest["column_metadata"]["id"][0]["value"], "STRING");
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("out/tables"))
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn failing_statement_names_block_code_and_number() {
        let dir = setup();
        let err = run_blocking(&job(dir.path(), &["SELECT 1", "SELEC oops"], &[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("block #1 `B`, code #1 `C`, statement 2 of 2"),
            "{text}"
        );
        assert!(text.contains("syntax error"), "{text}");
        assert_eq!(crate::error::classify(&err), crate::error::ErrorClass::User);
    }

    #[test]
    fn missing_output_is_named_and_nothing_written() {
        let dir = setup();
        let err = run_blocking(&job(
            dir.path(),
            &["CREATE TABLE a AS SELECT 1 AS x"],
            &["a.csv", "nope.csv"],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        assert!(!dir.path().join("out/tables/a.csv").exists());
    }

    #[test]
    fn sliced_typed_input_uses_manifest() {
        let dir = setup();
        let sliced = dir.path().join("in/tables/items.csv");
        std::fs::create_dir_all(&sliced).unwrap();
        std::fs::write(sliced.join("part1"), "\"1\",\"2.5\"\n").unwrap();
        std::fs::write(sliced.join("part2"), "\"2\",\"4\"\n").unwrap();
        std::fs::write(
            dir.path().join("in/tables/items.csv.manifest"),
            r#"{"id": "in.c-a.items", "columns": ["id", "price"],
                "schema": [{"name": "id", "data_type": {"base": {"type": "INTEGER"}}},
                           {"name": "price", "data_type": {"base": {"type": "FLOAT"}}}]}"#,
        )
        .unwrap();
        run_blocking(&job(
            dir.path(),
            &["CREATE TABLE s AS SELECT sum(price) AS total, max(id) AS m FROM items"],
            &["s.csv"],
        ))
        .unwrap();
        let csv = std::fs::read_to_string(dir.path().join("out/tables/s.csv")).unwrap();
        assert_eq!(csv, "\"total\",\"m\"\n\"6.5\",\"2\"\n");
    }

    #[test]
    fn header_only_and_empty_sliced_inputs_are_empty_tables() {
        let dir = setup();
        let t = dir.path().join("in/tables");
        std::fs::write(t.join("none.csv"), "\"a\",\"b\"\n").unwrap();
        std::fs::write(
            t.join("none.csv.manifest"),
            r#"{"id": "in.c-a.none", "columns": ["a", "b"]}"#,
        )
        .unwrap();
        std::fs::create_dir_all(t.join("empty.csv")).unwrap();
        std::fs::write(
            t.join("empty.csv.manifest"),
            r#"{"id": "in.c-a.empty", "columns": ["x"]}"#,
        )
        .unwrap();
        run_blocking(&job(
            dir.path(),
            &["CREATE TABLE r AS SELECT (SELECT count(*) FROM none) AS n, (SELECT count(*) FROM empty) AS e, \
               (SELECT count(b) FROM none) AS nb"],
            &["r.csv"],
        ))
        .unwrap();
        let csv = std::fs::read_to_string(dir.path().join("out/tables/r.csv")).unwrap();
        assert_eq!(csv, "\"n\",\"e\",\"nb\"\n\"0\",\"0\",\"0\"\n");
    }

    #[test]
    fn numeric_keeps_the_manifest_precision() {
        let col: crate::interface::manifest::ColumnSchema = serde_json::from_str(
            r#"{"name": "p", "data_type": {"base": {"type": "NUMERIC", "length": "12,4"}}}"#,
        )
        .unwrap();
        assert_eq!(column_type(&col), "DECIMAL(12,4)");
        let col: crate::interface::manifest::ColumnSchema = serde_json::from_str(
            r#"{"name": "p", "data_type": {"base": {"type": "NUMERIC", "length": "99,x"}}}"#,
        )
        .unwrap();
        assert_eq!(column_type(&col), "DECIMAL(38,9)");
    }

    #[test]
    fn duckdb_gets_most_of_the_container_memory() {
        assert_eq!(duckdb_memory_mb(4096 * 1024 * 1024), 3840);
        assert_eq!(duckdb_memory_mb(256 * 1024 * 1024), 128);
        assert_eq!(duckdb_memory_mb(16 * 1024 * 1024), 64);
    }

    #[test]
    fn column_names_are_sanitized_for_storage() {
        let dir = setup();
        run_blocking(&job(
            dir.path(),
            &["CREATE TABLE s AS SELECT count(*), id AS \"order id\" FROM orders GROUP BY id ORDER BY id LIMIT 1"],
            &["s.csv"],
        ))
        .unwrap();
        let csv = std::fs::read_to_string(dir.path().join("out/tables/s.csv")).unwrap();
        assert_eq!(csv, "\"count_star\",\"order_id\"\n\"1\",\"1\"\n");
        let manifest =
            std::fs::read_to_string(dir.path().join("out/tables/s.csv.manifest")).unwrap();
        assert!(manifest.contains("\"order_id\""), "{manifest}");
        let err = run_blocking(&job(
            dir.path(),
            &["CREATE TABLE d AS SELECT 1 AS \"a b\", 2 AS \"a-b\""],
            &["d.csv"],
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("two columns become `a_b`"),
            "{err}"
        );
    }

    #[test]
    fn output_lookup_ignores_case_and_prefers_temp_tables() {
        let dir = setup();
        run_blocking(&job(
            dir.path(),
            &[
                "CREATE TABLE Summary AS SELECT 1 AS a",
                "CREATE TEMP TABLE summary2 AS SELECT 2 AS b",
                "CREATE TABLE main.summary2 AS SELECT 3 AS c, 4 AS d",
            ],
            &["summary.csv", "SUMMARY2.csv"],
        ))
        .unwrap();
        let read =
            |f: &str| std::fs::read_to_string(dir.path().join("out/tables").join(f)).unwrap();
        assert_eq!(read("summary.csv"), "\"a\"\n\"1\"\n");
        assert_eq!(read("SUMMARY2.csv"), "\"b\"\n\"2\"\n");
    }

    #[test]
    fn type_mapping_round_trips() {
        for base in [
            "INTEGER",
            "NUMERIC",
            "FLOAT",
            "BOOLEAN",
            "DATE",
            "TIMESTAMP",
            "STRING",
        ] {
            assert_eq!(base_type(duckdb_type(Some(base))), base);
        }
        assert_eq!(base_type("TIMESTAMP WITH TIME ZONE"), "TIMESTAMP");
    }
}
