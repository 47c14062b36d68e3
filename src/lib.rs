//! kbc-runner: a Keboola component that exports tables from Keboola Storage, transforms them with SQL
//! (DuckDB) and imports the results back, plus a local Storage API emulator and a `tables` CLI.
//!
//! The modules follow the data flow of one run:
//! - [`interface`]: the Keboola Common Interface (environment, data folder, `config.json`, manifests, state).
//!   Pure: never touches the network.
//! - [`storage`]: the Storage API client (transport with the retry policy, jobs, files, cloud providers).
//!   Knows nothing of the pipeline or the CLI.
//! - [`pipeline`]: the job itself (export, transform, import, state, sync actions).
//! - [`emulator`]: a local Keboola Storage API with its own S3-compatible file storage. It stands for
//!   Keboola, so it shares nothing with the runner but the wire format.
//! - [`cli`]: command-line parsing and dispatch; `main.rs` maps outcomes to exit codes.
//!
//! Cross-cutting: [`error`] (user vs application errors), [`secrets`] (redaction of tokens and `#` values),
//! [`logging`] (line-flushed stdout and GELF).

pub mod cli;
pub mod error;
pub mod interface;
pub mod logging;
pub mod pipeline;
pub mod secrets;
mod shutdown;
