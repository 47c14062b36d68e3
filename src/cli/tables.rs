//! `kbc-runner tables ...`: Storage tables for humans (list, detail, preview, export, import), the table
//! id always first. Data goes to stdout; logs, progress and the one-line summary go to stderr.
//!
//! The stack and token: `--url`/`--token` win for their half; otherwise the environment in pairs,
//! `KBC_URL`+`KBC_TOKEN`, else `KEBOOLA_STACK_URL`+`KEBOOLA_TOKEN` (the rule of [`kbc_storage::stack`],
//! the same for `run`).

use crate::error::UserError;
use anyhow::Context;
use clap::{Args, Subcommand};
use kbc_storage::local_csv::{self, HeaderError};
use kbc_storage::{
    BucketId, Client, ClientConfig, Credentials, Delimiter, Dialect, DownloadMode, Enclosure,
    ExportOptions, ImportOptions, LoadSpec, MissingCredentials, NewTable, Operator, Table, TableId,
    TransferProgress, UploadOptions, human_bytes,
};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Clone, Args)]
pub struct TablesArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: TablesCommand,
}

impl std::fmt::Debug for TablesArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of debug output.
        f.debug_struct("TablesArgs")
            .field("url", &self.connection.url)
            .field("branch", &self.connection.branch)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Args)]
pub struct ConnectionArgs {
    /// Storage API stack URL (default: $KBC_URL with $KBC_TOKEN, else $KEBOOLA_STACK_URL with
    /// $KEBOOLA_TOKEN). A bare host gets https://.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Storage API token (default: $KBC_TOKEN with $KBC_URL, else $KEBOOLA_TOKEN with
    /// $KEBOOLA_STACK_URL). Prefer the environment: arguments show in process lists.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Development branch id (default: $KBC_BRANCHID).
    #[arg(long, global = true, value_name = "ID")]
    pub branch: Option<String>,
    /// Longest wait for one Storage job, in seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 3600)]
    pub job_timeout: u64,
    /// Parallel slice transfers.
    #[arg(long, global = true, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TablesCommand {
    /// List tables, of one bucket or of the whole project.
    List {
        /// Only this bucket, e.g. in.c-main.
        bucket_id: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a table's columns, primary key, size and dates.
    Detail {
        table_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the first rows of a table as CSV.
    Preview {
        table_id: String,
        /// Rows to show (1-1000; the API default is 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Export a table as one CSV file with a header (or keep its slices).
    Export(ExportArgs),
    /// Load a CSV file (or a folder of slices) into a table.
    Import(ImportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    pub table_id: String,
    /// Output file; `-` or none = stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<String>,
    /// Columns to export, in this order (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Only rows changed since (unix time or e.g. "-2 days").
    #[arg(long)]
    pub changed_since: Option<String>,
    /// Only rows changed until.
    #[arg(long)]
    pub changed_until: Option<String>,
    /// Row filter `COL=V1,V2` or `COL!=V` (repeatable; filters are ANDed).
    #[arg(long = "where", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Gzip the output.
    #[arg(long)]
    pub gzip: bool,
    /// Keep the header-less slices in DIR instead of writing one CSV.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "gzip"])]
    pub keep_slices: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    pub table_id: String,
    /// A CSV file (plain or gzipped) or a folder of header-less slices (needs --columns).
    pub file: PathBuf,
    /// Add to the table (upsert by primary key) instead of replacing its contents.
    #[arg(long)]
    pub incremental: bool,
    /// Primary key for a table created by --create (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub primary_key: Vec<String>,
    /// Create the table (and its bucket) when missing.
    #[arg(long)]
    pub create: bool,
    /// Column names of a header-less file (comma-separated); the first line is then data.
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Field delimiter of the file (one ASCII character).
    #[arg(long)]
    pub delimiter: Option<Delimiter>,
    /// Field enclosure of the file (one ASCII character, or empty for none).
    #[arg(long)]
    pub enclosure: Option<Enclosure>,
}

/// Runs a `tables` command.
pub fn run_command(args: TablesArgs) -> anyhow::Result<()> {
    crate::logging::init(crate::logging::Target::Stderr, None);
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let credentials = credentials(&args.connection, env)?;
    let mut config = ClientConfig::new(credentials.url, credentials.token);
    config.branch = args
        .connection
        .branch
        .clone()
        .or_else(|| env("KBC_BRANCHID"));
    config.job_timeout = Duration::from_secs(args.connection.job_timeout.max(1));
    config.max_connections = usize::from(args.connection.connections);
    let client = Client::new(config)?;
    super::process::run(super::process::Workload::Job, |shutdown| async move {
        shutdown.unless_requested(run(client, args.command)).await
    })
}

/// The URL and token: the flags, completed from the environment by the rule of [`kbc_storage::stack`].
fn credentials(
    connection: &ConnectionArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, UserError> {
    Credentials::resolve(connection.url.as_deref(), connection.token.as_deref(), env)
        .map_err(|missing| UserError::new(missing_credentials(connection, &missing)))
}

/// What to do when no URL and token could be put together.
fn missing_credentials(connection: &ConnectionArgs, missing: &MissingCredentials) -> String {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
    let what = if given(&connection.url) {
        "no Storage API token: pass --token or set KBC_TOKEN (or KEBOOLA_TOKEN)"
    } else if given(&connection.token) {
        "no Storage API URL: pass --url or set KBC_URL (or KEBOOLA_STACK_URL)"
    } else {
        "no Storage API URL and token: pass --url and --token, or set KBC_URL and KBC_TOKEN (or \
         KEBOOLA_STACK_URL and KEBOOLA_TOKEN)"
    };
    format!("{what}{}", missing.unpaired_note())
}

async fn run(client: Client, command: TablesCommand) -> anyhow::Result<()> {
    match command {
        TablesCommand::List { bucket_id, json } => {
            let bucket_id: Option<BucketId> = bucket_id.map(|b| b.parse()).transpose()?;
            list(&client, bucket_id.as_ref(), json).await
        }
        TablesCommand::Detail { table_id, json } => detail(&client, &table_id.parse()?, json).await,
        TablesCommand::Preview { table_id, limit } => {
            let csv = client.preview(&table_id.parse()?, limit).await?;
            write_stdout(csv.as_bytes())
        }
        TablesCommand::Export(args) => export(&client, args).await,
        TablesCommand::Import(args) => import(&client, args).await,
    }
}

fn write_stdout(data: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)
        .and_then(|_| out.flush())
        .context("writing to stdout")
}

async fn list(client: &Client, bucket_id: Option<&BucketId>, json: bool) -> anyhow::Result<()> {
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

async fn detail(client: &Client, table_id: &TableId, json: bool) -> anyhow::Result<()> {
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

/// Parses `COL=V1,V2` (eq) or `COL!=V1,V2` (ne).
pub fn parse_where(filter: &str) -> Result<kbc_storage::WhereFilter, UserError> {
    let (column, operator, values) = if let Some((c, v)) = filter.split_once("!=") {
        (c, Operator::Ne, v)
    } else if let Some((c, v)) = filter.split_once('=') {
        (c, Operator::Eq, v)
    } else {
        return Err(UserError::new(format!(
            "--where {filter:?}: expected COLUMN=VALUE[,VALUE...] or COLUMN!=VALUE[,VALUE...]"
        )));
    };
    let column = column.trim();
    if column.is_empty() {
        return Err(UserError::new(format!(
            "--where {filter:?}: the column name is empty"
        )));
    }
    Ok(kbc_storage::WhereFilter {
        column: column.to_owned(),
        operator,
        values: values.split(',').map(str::to_owned).collect(),
        data_type: None,
    })
}

async fn export(client: &Client, args: ExportArgs) -> anyhow::Result<()> {
    let table_id: TableId = args.table_id.parse()?;
    // A destination in a folder that does not exist is the user's to fix; say so before any job runs.
    let target = match (&args.keep_slices, args.output.as_deref()) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(file)) if file != "-" => Some(PathBuf::from(file)),
        _ => None,
    };
    if let Some(parent) = target
        .as_deref()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        crate::user_bail!(
            "cannot write the export: folder {} does not exist",
            parent.display()
        );
    }
    let options = ExportOptions {
        columns: args
            .columns
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
        changed_since: args.changed_since.clone(),
        changed_until: args.changed_until.clone(),
        where_filters: args
            .filters
            .iter()
            .map(|f| parse_where(f))
            .collect::<Result<_, _>>()?,
        limit: args.limit,
        ..Default::default()
    };
    let started = Instant::now();
    let ticker = Ticker::start(client.progress(), "downloaded");
    let (outcome, target) = if let Some(dir) = &args.keep_slices {
        let outcome = client
            .export_table(&table_id, &options, dir, DownloadMode::Sliced)
            .await
            .map_err(anyhow::Error::from);
        (outcome, dir.display().to_string())
    } else {
        match args.output.as_deref() {
            Some(file) if file != "-" => {
                let path = PathBuf::from(file);
                let outcome = if args.gzip {
                    export_gzipped(client, &table_id, &options, &path).await
                } else {
                    client
                        .export_table(&table_id, &options, &path, DownloadMode::Merged)
                        .await
                        .map_err(anyhow::Error::from)
                };
                (outcome, file.to_owned())
            }
            _ => {
                // Stdout: export to a temporary file first, so a failed export never leaves half a
                // CSV on stdout, then stream it out.
                let dir = tempfile::tempdir().context("creating a temporary folder")?;
                let path = dir.path().join("export.csv");
                let outcome = client
                    .export_table(&table_id, &options, &path, DownloadMode::Merged)
                    .await
                    .map_err(anyhow::Error::from);
                if outcome.is_ok() {
                    copy_to_stdout(&path, args.gzip).await?;
                }
                (outcome, "stdout".to_owned())
            }
        }
    };
    ticker.stop().await;
    let outcome = outcome.with_context(|| format!("exporting {}", args.table_id))?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "exported {} to {target}: {} rows, {} in {:.1} s ({}/s){}, file {}, job {}",
        args.table_id,
        outcome.rows,
        human_bytes(outcome.bytes),
        secs,
        human_bytes((outcome.bytes as f64 / secs.max(0.001)) as u64),
        if outcome.cache_hit { ", cached" } else { "" },
        outcome.file_id,
        outcome.job_id
    );
    Ok(())
}

async fn export_gzipped(
    client: &Client,
    table_id: &TableId,
    options: &ExportOptions,
    dest: &Path,
) -> anyhow::Result<kbc_storage::ExportOutcome> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = tempfile::tempdir_in(parent)
        .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
    let plain = dir.path().join("export.csv");
    let outcome = client
        .export_table(table_id, options, &plain, DownloadMode::Merged)
        .await?;
    let gz = dir.path().join("export.csv.gz");
    let input = tokio::fs::File::open(&plain).await?;
    let output = tokio::fs::File::create(&gz).await?;
    let mut encoder =
        async_compression::tokio::write::GzipEncoder::new(tokio::io::BufWriter::new(output));
    let mut reader = tokio::io::BufReader::new(input);
    tokio::io::copy(&mut reader, &mut encoder).await?;
    tokio::io::AsyncWriteExt::shutdown(&mut encoder).await?;
    tokio::fs::rename(&gz, dest)
        .await
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(outcome)
}

async fn copy_to_stdout(path: &Path, gzip: bool) -> anyhow::Result<()> {
    let path = path.to_owned();
    // Blocking std I/O on a blocking thread: stdout is not async.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut input = std::io::BufReader::new(std::fs::File::open(&path)?);
        let stdout = std::io::stdout();
        let out = stdout.lock();
        let result = if gzip {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            std::io::copy(&mut input, &mut enc)
                .and_then(|_| enc.finish())
                .map(|mut o| o.flush())
        } else {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
            std::io::copy(&mut input, &mut out).map(|_| out.flush())
        };
        match result {
            Ok(Ok(())) => Ok(()),
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            Ok(Err(e)) | Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Ok(Err(e)) | Err(e) => Err(anyhow::Error::from(e).context("writing to stdout")),
        }
    })
    .await?
}

async fn import(client: &Client, args: ImportArgs) -> anyhow::Result<()> {
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
        .load_table(&table_id, file_id, &spec)
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
    let path = &args.file;
    match local_csv::read_header(path, dialect) {
        Ok(Some(header)) => Ok(header),
        Ok(None) => Err(UserError::new(format!(
            "{} is empty: a new table needs a header row (or --columns)",
            path.display()
        ))
        .into()),
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

/// Prints transfer progress on stderr: a refreshed line on a terminal, a plain line every 10 s otherwise
/// (job logs), so long transfers show they are alive without flooding the log.
struct Ticker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Ticker {
    fn start(progress: Arc<TransferProgress>, verb: &'static str) -> Ticker {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        let handle = tokio::spawn(async move {
            let start = Instant::now();
            let mut printed = false;
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let line = progress_line(&progress, start.elapsed(), verb);
                if tty {
                    eprint!("\r\x1b[2K{line}");
                    printed = true;
                } else {
                    eprintln!("{line}");
                }
            }
            if printed {
                eprint!("\r\x1b[2K");
            }
        });
        Ticker {
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the ticker and waits for it, so a terminal's progress line is cleared before the summary.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// `downloaded 12.3 MB of 40.0 MB (31%), 120000 rows, 5.1 MB/s, ETA 6 s`.
fn progress_line(p: &TransferProgress, elapsed: Duration, verb: &str) -> String {
    let done = p.transferred.load(Ordering::Relaxed);
    let total = p.expected.load(Ordering::Relaxed);
    let rows = p.rows.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let mut line = format!("{verb} {}", human_bytes(done));
    if total > 0 {
        let pct = (done as f64 / total as f64 * 100.0).min(100.0);
        line.push_str(&format!(" of {} ({pct:.0}%)", human_bytes(total)));
    }
    if rows > 0 {
        line.push_str(&format!(", {rows} rows"));
    }
    line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
    if total > done && rate > 0.0 {
        line.push_str(&format!(", ETA {:.0} s", (total - done) as f64 / rate));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> TablesArgs {
        let mut argv = vec!["kbc-runner", "tables"];
        argv.extend_from_slice(args);
        match Cli::try_parse_args(argv).unwrap().command {
            Some(Command::Tables(t)) => t,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn export_flags_parse_with_the_table_id_first() {
        let a = parse(&[
            "export",
            "in.c-main.t",
            "-o",
            "x.csv",
            "--columns",
            "a,b",
            "--where",
            "a=1,2",
            "--where",
            "b!=x",
            "--limit",
            "5",
            "--url",
            "c.keboola.com",
        ]);
        assert_eq!(a.connection.url.as_deref(), Some("c.keboola.com"));
        match a.command {
            TablesCommand::Export(e) => {
                assert_eq!(e.table_id, "in.c-main.t");
                assert_eq!(e.columns, vec!["a", "b"]);
                assert_eq!(e.filters, vec!["a=1,2", "b!=x"]);
                assert_eq!(e.limit, Some(5));
            }
            other => panic!("{other:?}"),
        }
        let a = parse(&[
            "import",
            "in.c-main.t",
            "data.csv",
            "--incremental",
            "--primary-key",
            "id,day",
            "--create",
        ]);
        match a.command {
            TablesCommand::Import(i) => {
                assert!(i.incremental && i.create);
                assert_eq!(i.primary_key, vec!["id", "day"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_multi_byte_delimiter_is_refused_with_the_reason() {
        let import = |delimiter: &str| {
            let argv = ["kbc-runner", "tables", "import", "in.c-a.t", "f.csv"];
            Cli::try_parse_args(argv.into_iter().chain(["--delimiter", delimiter]))
        };
        let err = import("§").unwrap_err().to_string();
        assert!(err.contains("delimiter `§` is 2 bytes in UTF-8"), "{err}");
        match import(";").unwrap().command {
            Some(Command::Tables(TablesArgs {
                command: TablesCommand::Import(i),
                ..
            })) => assert_eq!(i.delimiter, Some(";".parse().unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The environment means what it means for `run` (pairs only); a flag completes its half from it.
    #[test]
    fn credentials_pair_the_environment_and_flags_win() {
        let crossed = |name: &str| match name {
            "KBC_URL" => Some("http://127.0.0.1:9".to_owned()),
            "KEBOOLA_TOKEN" => Some("kb-token-crossed".to_owned()),
            _ => None,
        };
        let err = credentials(&parse(&["list"]).connection, crossed)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no Storage API URL and token: pass --url and --token")
                && err.contains("KBC_URL is set without KBC_TOKEN"),
            "{err}"
        );
        let with_token = parse(&["list", "--token", "flag-token-1"]).connection;
        let c = credentials(&with_token, crossed).unwrap();
        assert_eq!(
            (c.url.as_str(), c.token.expose()),
            ("http://127.0.0.1:9", "flag-token-1")
        );
        let with_url = parse(&["list", "--url", "x.example.com"]).connection;
        let c = credentials(&with_url, crossed).unwrap();
        assert_eq!(
            (c.url.as_str(), c.token.expose()),
            ("x.example.com", "kb-token-crossed")
        );
        let err = credentials(&with_url, |_| None).unwrap_err().to_string();
        assert_eq!(
            err,
            "no Storage API token: pass --token or set KBC_TOKEN (or KEBOOLA_TOKEN)"
        );
    }

    #[test]
    fn where_filters_parse() {
        let f = parse_where("status!=done,failed").unwrap();
        assert_eq!((f.column.as_str(), f.operator.as_str()), ("status", "ne"));
        assert_eq!(f.values, vec!["done", "failed"]);
        let f = parse_where("id=1").unwrap();
        assert_eq!(
            (f.column.as_str(), f.operator.as_str(), f.values.len()),
            ("id", "eq", 1)
        );
        assert!(parse_where("nope").is_err());
        assert_eq!(f.operator, Operator::Eq);
        assert!(parse_where("=1").is_err());
    }

    #[test]
    fn progress_lines_show_rate_and_eta() {
        let p = TransferProgress::default();
        p.expected.store(10_000_000, Ordering::Relaxed);
        p.transferred.store(5_000_000, Ordering::Relaxed);
        p.rows.store(42, Ordering::Relaxed);
        let line = progress_line(&p, Duration::from_secs(5), "downloaded");
        assert_eq!(
            line,
            "downloaded 5.0 MB of 10.0 MB (50%), 42 rows, 1.0 MB/s, ETA 5 s"
        );
        assert_eq!(human_bytes(999), "999 B");
    }
}
