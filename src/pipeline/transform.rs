//! The transform step, as Keboola's DuckDB transformation runs it: DuckDB in-process over `in/tables`, the
//! queries of `parameters.blocks` ordered by their table dependencies (see [`super::sql_plan`]), then every
//! output-mapping `source` written to `out/tables` as RFC CSV with its manifest, and a manifest for every
//! `storage.output.files` item the SQL wrote to `out/files`.
//!
//! Inputs are views (nothing is loaded up front), named after the input-mapping `destination` verbatim
//! (`days.csv`) and, when that name is free, also without `.csv` (`days`), so both naming styles work.
//! CSV inputs are typed from the manifest's native `schema`, else from the legacy `KBC.datatype.basetype`
//! column metadata, else text; with `dtypes_infer` DuckDB detects the types. `file_type: parquet` inputs
//! are views over the Parquet files. DuckDB's JSON and Parquet extensions are linked in; nothing is ever
//! installed or loaded from the network, and DuckDB's home, extension and temp folders are under
//! `$TMPDIR`. The SQL runs with the data folder as working directory, so `COPY ... TO 'out/files/x.csv'`
//! works as in the real component.

use super::report::TableReport;
use super::sql_plan::{self, Query};
use crate::error::UserError;
use crate::interface::config::Step;
use crate::interface::config::{Block, InputTableMapping, OutputTableMapping};
use crate::interface::manifest::{InputManifest, OutputTableSpec, manifest_path};
use anyhow::Context as _;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything the transform needs, owned so it can move to a blocking thread.
#[derive(Debug, Clone, Default)]
pub(super) struct TransformJob {
    pub in_tables: PathBuf,
    pub out_tables: PathBuf,
    pub out_files: PathBuf,
    /// The SQL runs with this as the process's working directory (the data folder); `None` keeps it.
    pub working_dir: Option<PathBuf>,
    pub blocks: Vec<Block>,
    /// The input mapping: view names and `file_type` per table.
    pub inputs: Vec<InputTableMapping>,
    pub outputs: Vec<OutputTableMapping>,
    /// `storage.output.files`: files the SQL writes to `out/files` that get a manifest.
    pub output_files: Vec<Value>,
    /// Let DuckDB detect input types instead of taking them from the manifests.
    pub dtypes_infer: bool,
    pub threads: Option<usize>,
    pub memory_limit: Option<String>,
    /// Write output manifests in the native-types (`schema`) form.
    pub schema_form: bool,
}

/// How an input is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum InputFormat {
    #[default]
    Csv,
    Parquet,
}

/// One input table as DuckDB sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct InputView {
    /// The view name: the mapping's `destination` (= the file name in `in/tables`).
    pub name: String,
    pub path: PathBuf,
    pub sliced: bool,
    /// Column names with DuckDB types; empty = read the header, all VARCHAR.
    pub columns: Vec<(String, String)>,
    pub format: InputFormat,
    /// Let DuckDB detect the types (`dtypes_infer`); `columns` then only names a sliced table's columns.
    pub infer: bool,
}

/// Runs the whole transform on a blocking thread.
pub(super) async fn run(job: TransformJob) -> anyhow::Result<Vec<TableReport>> {
    tokio::task::spawn_blocking(move || run_blocking(&job))
        .await
        .context("the DuckDB thread stopped unexpectedly")?
}

/// Restores the previous working directory when the transform ends, however it ends (later steps and
/// the caller may use relative paths).
struct WorkingDir(Option<PathBuf>);

impl WorkingDir {
    fn enter(dir: Option<&Path>) -> anyhow::Result<WorkingDir> {
        let Some(dir) = dir else {
            return Ok(WorkingDir(None));
        };
        let previous = std::env::current_dir().context("reading the working directory")?;
        std::env::set_current_dir(dir)
            .with_context(|| format!("changing the working directory to {}", dir.display()))?;
        Ok(WorkingDir(Some(previous)))
    }
}

impl Drop for WorkingDir {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take()
            && let Err(e) = std::env::set_current_dir(&previous)
        {
            tracing::warn!(
                "could not return to the working directory {}: {e}",
                previous.display()
            );
        }
    }
}

/// Opens DuckDB so that it never reaches the network or `$HOME`: JSON and Parquet are linked into the
/// binary; autoinstall and autoload are off (the platform's arbitrary uid cannot write `$HOME`, and there
/// may be no network); home, extension and temp folders live under the run's temp folder; an explicit
/// `INSTALL` looks in an empty local repository and fails at once.
fn open_duckdb(tmp: &Path) -> anyhow::Result<duckdb::Connection> {
    let dir = |name: &str| -> anyhow::Result<String> {
        let path = tmp.join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path.to_string_lossy().into_owned())
    };
    let config = duckdb::Config::default()
        .with("autoinstall_known_extensions", "false")?
        .with("autoload_known_extensions", "false")?
        .with("home_directory", dir("home")?)?
        .with("extension_directory", dir("extensions")?)?
        .with("temp_directory", dir("spill")?)?
        .with(
            "custom_extension_repository",
            dir("no-extension-repository")?,
        )?;
    duckdb::Connection::open_in_memory_with_flags(config).context("starting DuckDB")
}

/// The transform, synchronously (DuckDB's connection is not async).
pub(super) fn run_blocking(job: &TransformJob) -> anyhow::Result<Vec<TableReport>> {
    // Absolute paths first: the working directory changes below.
    let in_tables = std::path::absolute(&job.in_tables).context("resolving in/tables")?;
    let out_tables = std::path::absolute(&job.out_tables).context("resolving out/tables")?;
    let out_files = std::path::absolute(&job.out_files).context("resolving out/files")?;
    let tmp = tempfile::Builder::new()
        .prefix("kbc-runner-duckdb-")
        .tempdir()
        .context("creating the DuckDB temp folder")?;
    // Parameters win; otherwise the container's limits, which DuckDB may not see on its own.
    let threads = job.threads.or_else(cgroup_cpus);
    let memory = job
        .memory_limit
        .clone()
        .or_else(|| cgroup_memory_bytes().map(|b| format!("{}MB", duckdb_memory_mb(b))));
    // From here to the last output written: user views may read relative paths lazily.
    let _cwd = WorkingDir::enter(job.working_dir.as_deref())?;
    let conn = open_duckdb(tmp.path())?;
    let mut settings = Vec::new();
    if let Some(t) = threads {
        settings.push(format!("SET threads = {t}"));
    }
    if let Some(m) = &memory {
        settings.push(format!("SET memory_limit = {}", sql_string(m)));
    }
    for s in &settings {
        conn.execute_batch(s)
            .map_err(|e| UserError::new(format!("DuckDB setting `{s}` failed: {e}")))?;
    }

    let views = discover_inputs(&in_tables, &job.inputs, job.dtypes_infer)?;
    for view in &views {
        // DuckDB reads an empty file as one column named `column0`, which would then be loaded into
        // Storage; a CSV without even a header row is a broken input (tests/bad_input.rs).
        if view.format == InputFormat::Csv
            && !view.sliced
            && std::fs::metadata(&view.path).is_ok_and(|m| m.len() == 0)
        {
            return Err(UserError::new(format!(
                "input table {} is empty: a CSV needs at least a header row",
                view.path.display()
            ))
            .into());
        }
        let sql = match view.format {
            InputFormat::Csv => view_sql(view),
            InputFormat::Parquet => parquet_view_sql(&conn, view)?,
        };
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
    create_aliases(&conn, &views)?;

    std::fs::create_dir_all(&out_tables)
        .with_context(|| format!("creating {}", out_tables.display()))?;
    let job = &TransformJob {
        in_tables,
        out_tables,
        out_files,
        ..job.clone()
    };
    let workers = threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    if let Err(err) = run_blocks(&conn, &job.blocks, workers) {
        write_always_outputs(&conn, job);
        return Err(err);
    }

    // Check every output first: a missing one fails the job before anything is written.
    let mut outputs = Vec::new();
    for mapping in &job.outputs {
        let Some((table, columns)) = find_output(&conn, &mapping.source)? else {
            let existing = list_tables(&conn).unwrap_or_default();
            return Err(UserError::new(format!(
                "output table `{}` (storage.output.tables source `{}`) was not created by the SQL; \
                 tables and views that exist: {}",
                table_name(&mapping.source),
                mapping.source,
                if existing.is_empty() {
                    "none".to_owned()
                } else {
                    existing.join(", ")
                }
            ))
            .into());
        };
        // Names Storage would reject fail here too, before any output is written.
        storage_column_names(&table, &columns)?;
        outputs.push((mapping, table, columns));
    }
    let mut reports = Vec::new();
    for (mapping, table, columns) in outputs {
        reports.push(write_output(&conn, job, mapping, &table, &columns)?);
    }
    write_file_manifests(job)?;
    Ok(reports)
}

/// A table's columns with their DuckDB types.
type Columns = Vec<(String, String)>;

/// An output table: `source` verbatim (`week.csv`), else without `.csv` (`week`); with its columns.
fn find_output(
    conn: &duckdb::Connection,
    source: &str,
) -> anyhow::Result<Option<(String, Columns)>> {
    for candidate in [source.to_owned(), table_name(source)] {
        let columns = table_columns(conn, &candidate)?;
        if !columns.is_empty() {
            return Ok(Some((candidate, columns)));
        }
    }
    Ok(None)
}

/// Second names for inputs: `days.csv` is also `days` when no other input or alias has that name, so
/// SQL written for either naming style runs.
fn create_aliases(conn: &duckdb::Connection, views: &[InputView]) -> anyhow::Result<()> {
    let mut taken: std::collections::BTreeSet<String> =
        views.iter().map(|v| v.name.to_lowercase()).collect();
    for view in views {
        let alias = table_name(view.name.strip_suffix(".gz").unwrap_or(&view.name));
        if alias.is_empty() || !taken.insert(alias.to_lowercase()) {
            continue;
        }
        conn.execute_batch(&format!(
            "CREATE VIEW {} AS SELECT * FROM {}",
            ident(&alias),
            ident(&view.name)
        ))
        .with_context(|| format!("creating the view \"{alias}\" for \"{}\"", view.name))?;
        tracing::debug!("input table \"{}\" is also \"{alias}\"", view.name);
    }
    Ok(())
}

/// A manifest for each `storage.output.files` item whose file the SQL wrote to `out/files`, with the
/// mapping's flags as the real component writes them (the platform merges mapping and manifest anyway).
fn write_file_manifests(job: &TransformJob) -> anyhow::Result<()> {
    for (i, item) in job.output_files.iter().enumerate() {
        let Some(source) = item
            .get("source")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Err(UserError::new(format!(
                "storage.output.files[{i}] has no `source` (the file name in out/files)"
            ))
            .into());
        };
        let path = job.out_files.join(source);
        if !path.is_file() {
            tracing::warn!(
                "storage.output.files[{i}]: out/files/{source} was not written by the SQL; no manifest"
            );
            continue;
        }
        let flag = |key: &str| Value::from(item.get(key).and_then(Value::as_bool).unwrap_or(false));
        let mut manifest = Map::new();
        for key in ["is_public", "is_permanent", "is_encrypted", "notify"] {
            manifest.insert(key.into(), flag(key));
        }
        if let Some(tags) = item
            .get("tags")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
        {
            manifest.insert("tags".into(), Value::Array(tags.clone()));
        }
        crate::interface::write_json(&manifest_path(&path), &Value::Object(manifest))?;
        tracing::info!("output file out/files/{source}: manifest written");
    }
    Ok(())
}

/// After a failed statement: the `write_always` outputs that exist are still written, so the import can
/// load them as the platform does for a failed job. Failures here are logged; the SQL error is what counts.
fn write_always_outputs(conn: &duckdb::Connection, job: &TransformJob) {
    for mapping in job
        .outputs
        .iter()
        .filter(|m| m.options.write_always == Some(true))
    {
        match find_output(conn, &mapping.source) {
            Ok(Some((table, columns))) => {
                if let Err(e) = write_output(conn, job, mapping, &table, &columns) {
                    tracing::warn!("write_always table `{table}` could not be written: {e:#}");
                }
            }
            _ => tracing::info!(
                "write_always table `{}` does not exist yet, nothing to write",
                table_name(&mapping.source)
            ),
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

/// Runs the planned blocks: batch after batch; the queries of a batch on up to `threads` connections
/// at once (one database, so they see each other's tables). The first failing batch stops the job and
/// names every query of it that failed.
fn run_blocks(conn: &duckdb::Connection, blocks: &[Block], threads: usize) -> anyhow::Result<()> {
    let plan = sql_plan::plan(blocks).map_err(|e| UserError::new(e.to_string()))?;
    for block in &plan {
        let queries: usize = block.batches.iter().map(Vec::len).sum();
        tracing::info!(
            "running {} ({queries} queries in {} batches)",
            block.label,
            block.batches.len()
        );
        for batch in &block.batches {
            let workers = threads.min(batch.len());
            if workers <= 1 {
                // One at a time on the main connection, so session state (temporary tables, SET) is
                // kept as when the statements ran strictly in order.
                for query in batch {
                    run_query(conn, query).map_err(|e| UserError::new(failure(query, &e)))?;
                }
            } else {
                run_parallel(conn, batch, workers)?;
            }
        }
    }
    Ok(())
}

/// Runs one query; the error is DuckDB's message, with a hint when an extension is missing.
fn run_query(conn: &duckdb::Connection, query: &Query) -> Result<(), String> {
    let started = Instant::now();
    conn.execute_batch(&query.sql)
        .map_err(|e| explain_missing_extension(&e.to_string()))?;
    tracing::info!(
        "  {} statement {}: done in {:.2} s",
        query.code_label(),
        query.statement_index + 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the queries of one batch on `workers` connections; every failure is collected.
fn run_parallel(conn: &duckdb::Connection, batch: &[Query], workers: usize) -> anyhow::Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    let connections = (0..workers)
        .map(|_| conn.try_clone())
        .collect::<Result<Vec<_>, _>>()
        .context("opening DuckDB connections for a parallel batch")?;
    tracing::info!("  {} independent queries, {workers} at a time", batch.len());
    std::thread::scope(|scope| {
        for worker in connections {
            let (next, failures) = (&next, &failures);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(query) = batch.get(i) else { break };
                    if let Err(e) = run_query(&worker, query) {
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, failure(query, &e)));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort();
    match failures.len() {
        0 => Ok(()),
        1 => Err(UserError::new(failures.remove(0).1).into()),
        n => Err(UserError::new(format!(
            "{n} of {} queries run in parallel failed:\n{}",
            batch.len(),
            failures
                .into_iter()
                .map(|(_, f)| format!("- {f}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
        .into()),
    }
}

/// `SQL failed in block #1 `B`, code #1 `C`, statement 2 of 2: <error>` plus the statement, shortened.
fn failure(query: &Query, error: &str) -> String {
    format!(
        "SQL failed in {}, {}: {}\nstatement: {}",
        query.block_label(),
        query.label(),
        one_line(error),
        shorten(&query.sql, 300)
    )
}

/// DuckDB suggests `INSTALL`/`LOAD` or turning autoloading on when SQL needs an extension that is not
/// linked in; neither can work here, so the advice is replaced. Time zones need ICU, which this build
/// does not include.
fn explain_missing_extension(message: &str) -> String {
    let lower = message.to_lowercase();
    if !(lower.contains("extension") && (lower.contains("install") || lower.contains("load"))) {
        return message.to_owned();
    }
    if lower.contains("icu") {
        // DuckDB's own wording ("trying to automatically install") is wrong here: nothing is installed.
        return "time zones (AT TIME ZONE, TIMESTAMPTZ arithmetic, timezone(), strftime with %Z) need \
                DuckDB's ICU extension, which this build of kbc-runner does not include and never \
                downloads; convert with explicit offsets (ts + INTERVAL 2 HOUR) or keep timestamps in UTC"
            .to_owned();
    }
    let first = message.lines().next().unwrap_or(message).trim();
    format!(
        "{first} (this build of kbc-runner includes DuckDB's JSON and Parquet extensions only and never \
         installs or loads others: no network, no writable home in Keboola)"
    )
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
pub(super) fn table_name(file_name: &str) -> String {
    file_name
        .strip_suffix(".csv")
        .unwrap_or(file_name)
        .to_owned()
}

/// Finds input tables: each file or folder in `in/tables` (manifests and hidden files aside). The view
/// is named after the input mapping's `destination` (as the real component does), else after the file
/// name; the mapping's `file_type` says whether it is CSV or Parquet.
pub(super) fn discover_inputs(
    in_tables: &Path,
    mappings: &[InputTableMapping],
    dtypes_infer: bool,
) -> anyhow::Result<Vec<InputView>> {
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
        let manifest_file = manifest_path(&path);
        let manifest = if manifest_file.is_file() {
            Some(InputManifest::load(&manifest_file)?)
        } else {
            None
        };
        let id = manifest.as_ref().map(|m| m.id.as_str()).unwrap_or("");
        // The platform writes each table at its destination; matching the table id as well covers a
        // file named otherwise (the real component's parquet fixture), and the destination first keeps
        // one table mapped twice apart.
        let mapping = mappings
            .iter()
            .find(|m| m.destination() == file_name)
            .or_else(|| mappings.iter().find(|m| !id.is_empty() && m.source == id));
        let name = mapping
            .and_then(|m| m.destination.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| file_name.clone());
        let parquet = mapping
            .and_then(|m| m.file_type.as_deref())
            .is_some_and(|t| t.eq_ignore_ascii_case("parquet"));
        let sliced = path.is_dir();
        let columns = input_columns(manifest.as_ref());
        if sliced && !parquet && columns.is_empty() {
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
            format: if parquet {
                InputFormat::Parquet
            } else {
                InputFormat::Csv
            },
            infer: dtypes_infer,
        });
    }
    Ok(views)
}

/// Columns and DuckDB types from an input manifest: the native `schema` when present, else `columns`
/// typed by their legacy `KBC.datatype.basetype` metadata (text without one), as the real component
/// builds its `dtype` (keboola.component reads either).
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
        .map(|c| (c.clone(), legacy_column_type(m.column_metadata.get(c))))
        .collect()
}

/// The DuckDB type from legacy column metadata (`[{"key": "KBC.datatype.basetype", "value": "INTEGER"},
/// {"key": "KBC.datatype.length", "value": "10,2"}]`).
fn legacy_column_type(metadata: Option<&Value>) -> String {
    let entries = metadata
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let value = |key: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e.get("key").and_then(Value::as_str) == Some(key))
            .and_then(|e| match e.get("value") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
    };
    let base = value("KBC.datatype.basetype");
    if base
        .as_deref()
        .is_some_and(|b| b.eq_ignore_ascii_case("NUMERIC"))
        && let Some(decimal) = value("KBC.datatype.length").and_then(|l| decimal_type(&l))
    {
        return decimal;
    }
    duckdb_type(base.as_deref()).to_owned()
}

/// `"10,2"` → `DECIMAL(10,2)` when it is a precision DuckDB accepts.
fn decimal_type(length: &str) -> Option<String> {
    let (p, s) = length.split_once(',')?;
    let (p, s) = (p.trim().parse::<u8>().ok()?, s.trim().parse::<u8>().ok()?);
    ((1..=38).contains(&p) && s <= p).then(|| format!("DECIMAL({p},{s})"))
}

/// The DuckDB type of a schema column: its base type, with the precision of a `NUMERIC` when the
/// manifest gives a valid one (`"10,2"`), so decimals are not rounded to the default scale.
fn column_type(column: &crate::interface::schema::ColumnSchema) -> String {
    let base = column.base_type();
    if base.is_some_and(|b| b.eq_ignore_ascii_case("NUMERIC"))
        && let Some(decimal) = column
            .data_type
            .as_ref()
            .and_then(|d| d.base.as_ref())
            .and_then(|b| b.length.as_deref())
            .and_then(decimal_type)
    {
        return decimal;
    }
    duckdb_type(base).to_owned()
}

/// Keboola base type → DuckDB type (unknown or missing: text, which never rejects a value).
///
/// The real component hands the base type names to DuckDB as they are, so `INTEGER` is 32-bit,
/// `NUMERIC` is DECIMAL(18,3) and `FLOAT` is the 32-bit REAL. We read Storage's values without loss
/// instead: Storage integers are 64-bit (an id past 2^31 fails the real component's view), NUMERIC keeps
/// 9 decimals (or the manifest's precision) where 18,3 rounds, and FLOAT keeps a double's digits. Any
/// value the real component reads, this reads as the same number; only wide results differ (more
/// decimal places in text, no 32-bit overflow).
pub(super) fn duckdb_type(base: Option<&str>) -> &'static str {
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

/// DuckDB column type → Keboola base type for output manifests, as the real component derives it
/// (`component.py` `convert_base_types`): DECIMAL and the 32-bit float are NUMERIC, DOUBLE is FLOAT,
/// only `TIMESTAMP` and `TIMESTAMP WITH TIME ZONE` are TIMESTAMP (`TIMESTAMP_NS` & co. are text). DuckDB
/// names the 32-bit float `FLOAT` in its catalog, which the real list (`REAL`) misses and so writes
/// STRING; we follow its evident intent and write NUMERIC for both names.
pub(super) fn base_type(duckdb: &str) -> &'static str {
    let t = duckdb.trim().to_ascii_uppercase();
    let t = t.split('(').next().unwrap_or("").trim();
    match t {
        "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "HUGEINT" | "UTINYINT" | "USMALLINT"
        | "UINTEGER" | "UBIGINT" | "UHUGEINT" => "INTEGER",
        "DECIMAL" | "REAL" | "FLOAT" => "NUMERIC",
        "DOUBLE" => "FLOAT",
        "BOOLEAN" => "BOOLEAN",
        "DATE" => "DATE",
        "TIMESTAMP" | "TIMESTAMP WITH TIME ZONE" => "TIMESTAMP",
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
pub(super) fn view_sql(view: &InputView) -> String {
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
    if view.infer {
        // `dtypes_infer`: DuckDB detects the types; slices have no header, so the manifest names them.
        if view.sliced {
            let names: Vec<String> = view.columns.iter().map(|(n, _)| sql_string(n)).collect();
            options.push(format!("names = [{}]", names.join(", ")));
        }
    } else if view.columns.is_empty() {
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

/// The `CREATE VIEW` for a Parquet input (`file_type: parquet`): a folder of `*.parquet` files or one
/// file. Columns typed INTEGER by the manifest are cast to BIGINT, as the real component does: Snowflake
/// exports integers as DECIMAL(38,0), which is slow in DuckDB and would become NUMERIC in the output.
fn parquet_view_sql(conn: &duckdb::Connection, view: &InputView) -> anyhow::Result<String> {
    let source = if view.sliced {
        let has_parquet = std::fs::read_dir(&view.path)
            .with_context(|| format!("listing {}", view.path.display()))?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".parquet"));
        if !has_parquet {
            return Err(UserError::new(format!(
                "input table {} has `file_type: parquet` but its folder holds no *.parquet file",
                view.path.display()
            ))
            .into());
        }
        format!("{}/*.parquet", view.path.to_string_lossy())
    } else {
        view.path.to_string_lossy().into_owned()
    };
    let read = format!("read_parquet({})", sql_string(&source));
    let present: Vec<String> = conn
        .prepare(&format!(
            "SELECT column_name FROM (DESCRIBE SELECT * FROM {read})"
        ))
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| {
            UserError::new(format!(
                "cannot read input table {} as Parquet: {}",
                view.path.display(),
                first_paragraph(&e.to_string())
            ))
        })?;
    let casts: Vec<String> = view
        .columns
        .iter()
        .filter(|(name, t)| t == "BIGINT" && present.contains(name))
        .map(|(name, _)| format!("CAST({0} AS BIGINT) AS {0}", ident(name)))
        .collect();
    let replace = if casts.is_empty() {
        String::new()
    } else {
        format!(" REPLACE ({})", casts.join(", "))
    };
    Ok(format!(
        "CREATE VIEW {} AS SELECT *{replace} FROM {read}",
        ident(&view.name)
    ))
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut it| it.next().is_none())
}

/// A quoted SQL identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub(super) fn sql_string(value: &str) -> String {
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
            out_files: dir.join("out/files"),
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
            ..Default::default()
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
        let col: crate::interface::schema::ColumnSchema = serde_json::from_str(
            r#"{"name": "p", "data_type": {"base": {"type": "NUMERIC", "length": "12,4"}}}"#,
        )
        .unwrap();
        assert_eq!(column_type(&col), "DECIMAL(12,4)");
        let col: crate::interface::schema::ColumnSchema = serde_json::from_str(
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
    }

    #[test]
    fn output_base_types_follow_the_real_component() {
        for (duckdb, base) in [
            ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP"),
            ("TIMESTAMP_NS", "STRING"),
            ("TIMESTAMP_MS", "STRING"),
            ("REAL", "NUMERIC"),
            ("FLOAT", "NUMERIC"),
            ("DECIMAL(18,3)", "NUMERIC"),
            ("DOUBLE", "FLOAT"),
            ("HUGEINT", "INTEGER"),
            ("TIME", "STRING"),
            ("INTERVAL", "STRING"),
            ("VARCHAR[]", "STRING"),
        ] {
            assert_eq!(base_type(duckdb), base, "{duckdb}");
        }
    }

    #[test]
    fn legacy_metadata_types_inputs() {
        let manifest: InputManifest = serde_json::from_str(
            r#"{"columns": ["id", "price", "amount", "name"],
                "column_metadata": {
                  "id": [{"key": "KBC.datatype.basetype", "value": "INTEGER"},
                         {"key": "KBC.datatype.nullable", "value": false}],
                  "price": [{"key": "KBC.datatype.basetype", "value": "NUMERIC"},
                            {"key": "KBC.datatype.length", "value": "12,2"}],
                  "amount": [{"key": "KBC.datatype.basetype", "value": "NUMERIC"}]}}"#,
        )
        .unwrap();
        assert_eq!(manifest.id, "");
        assert_eq!(
            input_columns(Some(&manifest)),
            vec![
                ("id".into(), "BIGINT".into()),
                ("price".into(), "DECIMAL(12,2)".into()),
                ("amount".into(), "DECIMAL(38,9)".into()),
                ("name".into(), "VARCHAR".into()),
            ]
        );
    }

    #[test]
    fn suffixed_and_plain_names_both_work() {
        let dir = setup();
        let t = dir.path().join("in/tables");
        std::fs::write(t.join("days.csv"), "id,name\n1,Mon\n2,Tue\n").unwrap();
        // `days.csv` is read by its destination (`'days.csv'`) and by its name without `.csv`.
        run_blocking(&job(
            dir.path(),
            &[
                "CREATE VIEW 'both.csv' AS SELECT d.id, o.amount FROM 'days.csv' d JOIN orders o USING (id)",
                "CREATE TABLE plain AS SELECT count(*) AS n FROM days",
            ],
            &["both.csv", "plain.csv"],
        ))
        .unwrap();
        let read =
            |f: &str| std::fs::read_to_string(dir.path().join("out/tables").join(f)).unwrap();
        assert_eq!(
            read("both.csv"),
            "\"id\",\"amount\"\n\"1\",\"10\"\n\"2\",\"5,5\"\n"
        );
        assert_eq!(read("plain.csv"), "\"n\"\n\"2\"\n");
    }

    #[test]
    fn parallel_batch_failures_name_every_query() {
        let dir = setup();
        let mut j = job(
            dir.path(),
            &[
                "CREATE TABLE a AS SELECT * FROM missing_one",
                "CREATE TABLE b AS SELECT 1 AS x",
                "CREATE TABLE c AS SELECT * FROM missing_two",
            ],
            &[],
        );
        j.threads = Some(2);
        let err = run_blocking(&j).unwrap_err().to_string();
        assert!(
            err.starts_with("2 of 3 queries run in parallel failed"),
            "{err}"
        );
        assert!(
            err.contains("statement 1 of 3") && err.contains("missing_one"),
            "{err}"
        );
        assert!(
            err.contains("statement 3 of 3") && err.contains("missing_two"),
            "{err}"
        );
    }

    #[test]
    fn parallel_queries_share_one_database() {
        let dir = setup();
        let mut j = job(
            dir.path(),
            &[
                "CREATE TABLE a AS SELECT range AS x FROM range(1000)",
                "CREATE TABLE b AS SELECT range AS y FROM range(10)",
                "CREATE TABLE c AS SELECT (SELECT count(*) FROM a) AS na, (SELECT count(*) FROM b) AS nb",
            ],
            &["c.csv"],
        );
        j.threads = Some(2);
        run_blocking(&j).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("out/tables/c.csv")).unwrap();
        assert_eq!(csv, "\"na\",\"nb\"\n\"1000\",\"10\"\n");
    }

    #[test]
    fn extensions_are_linked_and_icu_fails_clearly() {
        let dir = setup();
        let out = dir.path().join("out/files/x.parquet");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let copy = format!(
            "COPY (SELECT 1 AS id, '{{\"a\": \"b\"}}' AS doc) TO {} (FORMAT parquet)",
            sql_string(&out.to_string_lossy())
        );
        let read = format!(
            "CREATE TABLE j AS SELECT id, json_extract_string(doc, '$.a') AS a FROM read_parquet({})",
            sql_string(&out.to_string_lossy())
        );
        run_blocking(&job(dir.path(), &[&copy, &read], &["j.csv"])).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("out/tables/j.csv")).unwrap();
        assert_eq!(csv, "\"id\",\"a\"\n\"1\",\"b\"\n");
        let err = run_blocking(&job(
            dir.path(),
            &["CREATE TABLE z AS SELECT TIMESTAMP '2024-01-01 12:00' AT TIME ZONE 'Europe/Prague' AS t"],
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ICU"), "{err}");
    }
}
