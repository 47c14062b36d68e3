//! Command-line interface and the owner of the process: `run` (the default, what the Docker image
//! executes), `emulator` (a local Storage API) and `tables` (Storage tables for humans). Parsing lives here;
//! each command is one module that builds its runtime and shutdown through [`process`], sets up logging,
//! and hands plain values to the library parts (`pipeline`, `kbc_storage`, `kbc_emulator`).

mod emulator;
mod local_stack;
mod process;
mod run;
pub(crate) mod tables;

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Keboola job runner: export tables from Storage, transform them with SQL, import the results back.
#[derive(Debug, Parser)]
#[command(
    name = "kbc-runner",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of `run`, accepted without the subcommand name too.
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// Parses the command line; an error carries clap's message (help and version are "errors" too).
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Cli::try_parse_from(args)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the job described by config.json in the data folder (the default command).
    Run(RunArgs),
    /// Serve a local Keboola Storage API (with S3-compatible file storage) on loopback.
    Emulator(EmulatorArgs),
    /// Work with Storage tables: list, detail, preview, export, import.
    Tables(tables::TablesArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// The data folder (config.json, in/, out/). Default: $KBC_DATADIR, else /data when it exists, else ./data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Start a local Storage API emulator with its store in DIR, seed it with the example's source tables on
    /// first use, and run the job against it (no token or network needed).
    #[arg(long, value_name = "DIR")]
    pub local_stack: Option<PathBuf>,

    /// With --local-stack: serve the emulator over HTTPS with this PEM certificate (chain, leaf first). The
    /// run's own client must trust it: set SSL_CERT_FILE to its CA.
    #[arg(
        long,
        value_name = "FILE",
        requires = "local_stack",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// With --local-stack: the PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl RunArgs {
    /// The local stack's TLS files, when given.
    pub fn tls(&self) -> Option<kbc_emulator::TlsFiles> {
        tls_files(&self.tls_cert, &self.tls_key)
    }
}

fn tls_files(cert: &Option<PathBuf>, key: &Option<PathBuf>) -> Option<kbc_emulator::TlsFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some(kbc_emulator::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    }
}

#[derive(Debug, Clone, Args)]
pub struct EmulatorArgs {
    /// Address to listen on; port 0 picks a free port (the first stdout line says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Folder where buckets, tables, files and jobs are kept across restarts.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,

    /// A Storage API token the emulator accepts (repeatable).
    #[arg(long = "token", value_name = "TOKEN", required = true)]
    pub tokens: Vec<String>,

    /// Serve HTTPS with this PEM certificate (chain, leaf first) instead of plain HTTP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The base URL to advertise in every absolute URL the emulator returns (resource uris, file URLs,
    /// upload parameters, the index), e.g. https://storage.example.com behind a proxy. Default: the
    /// listening address.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

impl EmulatorArgs {
    /// The TLS files, when given.
    pub fn tls(&self) -> Option<kbc_emulator::TlsFiles> {
        tls_files(&self.tls_cert, &self.tls_key)
    }
}

/// Runs the parsed command. Errors are classified by the caller (`main`).
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(args)) => run::run(args),
        Some(Command::Emulator(args)) => emulator::run(args),
        Some(Command::Tables(args)) => tables::run_command(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_run() {
        let cli = Cli::try_parse_args(["kbc-runner", "--data-dir", "x"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.data_dir, Some(PathBuf::from("x")));
    }

    #[test]
    fn emulator_needs_a_token() {
        assert!(Cli::try_parse_args(["kbc-runner", "emulator", "--store", "s"]).is_err());
        let cli = Cli::try_parse_args([
            "kbc-runner",
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "s",
            "--token",
            "a",
            "--token",
            "b",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Emulator(args)) => assert_eq!(args.tokens, ["a", "b"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tls_needs_both_files_and_run_needs_the_local_stack() {
        let emu = ["kbc-runner", "emulator", "--store", "s", "--token", "t"];
        let with = |extra: &[&str]| {
            Cli::try_parse_args(emu.iter().chain(extra).copied().collect::<Vec<_>>())
        };
        assert!(with(&["--tls-cert", "c.pem"]).is_err());
        assert!(with(&["--tls-key", "k.pem"]).is_err());
        match with(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--public-url",
            "https://x",
        ])
        .unwrap()
        .command
        {
            Some(Command::Emulator(args)) => {
                let tls = args.tls().unwrap();
                assert_eq!(
                    (tls.cert, tls.key),
                    (PathBuf::from("c.pem"), PathBuf::from("k.pem"))
                );
                assert_eq!(args.public_url.as_deref(), Some("https://x"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            Cli::try_parse_args(["kbc-runner", "run", "--tls-cert", "c", "--tls-key", "k"])
                .is_err()
        );
        let cli = Cli::try_parse_args([
            "kbc-runner",
            "run",
            "--local-stack",
            "d",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Run(args)) => assert!(args.tls().is_some()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
