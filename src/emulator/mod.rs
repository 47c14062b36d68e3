//! A local Keboola Storage API emulator (not implemented yet).

pub fn run_command(_args: crate::cli::EmulatorArgs) -> anyhow::Result<()> {
    crate::user_bail!("`emulator` is not implemented yet")
}
