//! `kbc-runner tables ...`: Storage tables for humans (list, detail, preview, export, import), the table
//! id always first. Data goes to stdout; logs, progress and the one-line summary go to stderr.
//!
//! One module per command ([`list`], [`detail`], [`export`], [`import`]; `preview` is one call), and
//! [`progress`] for the transfer line on stderr.
//!
//! The stack and token: `--url`/`--token` win for their half; otherwise the environment in pairs,
//! `KBC_URL`+`KBC_TOKEN`, else `KEBOOLA_STACK_URL`+`KEBOOLA_TOKEN` (the rule of [`kbc_storage::stack`],
//! the same for `run`).

mod detail;
mod export;
mod import;
mod list;
mod progress;

use crate::error::UserError;
use anyhow::Context;
use clap::{Args, Subcommand};
use kbc_storage::{
    BucketId, Client, ClientConfig, Credentials, Delimiter, Enclosure, MissingCredentials,
};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

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
pub(crate) fn run_command(args: TablesArgs) -> anyhow::Result<()> {
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
            list::list(&client, bucket_id.as_ref(), json).await
        }
        TablesCommand::Detail { table_id, json } => {
            detail::detail(&client, &table_id.parse()?, json).await
        }
        TablesCommand::Preview { table_id, limit } => {
            let csv = client.preview(&table_id.parse()?, limit).await?;
            write_stdout(csv.as_bytes())
        }
        TablesCommand::Export(args) => export::export(&client, args).await,
        TablesCommand::Import(args) => import::import(&client, args).await,
    }
}

pub(super) fn write_stdout(data: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)
        .and_then(|_| out.flush())
        .context("writing to stdout")
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
}
