//! A local Keboola Storage API emulator (placeholder until the real one lands: the signatures are the
//! contract the test harness and `--local-stack` use).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub store: PathBuf,
    pub tokens: Vec<String>,
}

pub struct Emulator {
    addr: SocketAddr,
}

impl Emulator {
    pub async fn start(_config: EmulatorConfig) -> anyhow::Result<Emulator> {
        anyhow::bail!("the Storage API emulator is not built yet")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn seed_table(
        &self,
        _table_id: &str,
        _csv: &[u8],
        _primary_key: &[String],
    ) -> anyhow::Result<()> {
        anyhow::bail!("the Storage API emulator is not built yet")
    }

    pub async fn seed_dir(&self, _dir: &Path) -> anyhow::Result<()> {
        anyhow::bail!("the Storage API emulator is not built yet")
    }

    pub async fn dump_table(&self, _table_id: &str) -> anyhow::Result<Option<String>> {
        anyhow::bail!("the Storage API emulator is not built yet")
    }

    pub async fn shutdown(self) {}
}

pub fn run_command(_args: crate::cli::EmulatorArgs) -> anyhow::Result<()> {
    crate::user_bail!("`emulator` is not implemented yet")
}
