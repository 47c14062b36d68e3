//! `kbc-runner tables ...`: Storage tables for humans (list, detail, preview, export, import).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct TablesArgs {
    /// Not implemented yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run_command(_args: TablesArgs) -> anyhow::Result<()> {
    crate::user_bail!("`tables` is not implemented yet")
}
