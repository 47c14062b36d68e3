//! `kbc-runner run --local-stack DIR`: an in-process Storage API emulator standing in for Keboola, so the
//! example job runs offline.
//!
//! Layout of `DIR`: `storage/` is the emulator's store (buckets, tables, files, jobs); `state.json` is the
//! component state the platform would keep between runs; `seeded` marks that the seed tables were loaded.
//! On first use the emulator is seeded from `<data>/local-stack/tables/<table_id>.csv` (with an optional
//! `<table_id>.csv.manifest` holding `{"primary_key": [...]}`).
//!
//! On the second use, `<data>/local-stack/changes/<table_id>.csv` is loaded incrementally, once: the source
//! system's new and changed rows, so that the second run has something for `adaptive` to pick up.
//!
//! Like the platform, the local stack owns `in/state.json`: before the run it writes the kept state there
//! (or `{}` for a fresh stack), and after a successful run it keeps `out/state.json`. That is what makes
//! `changed_since: adaptive` work when the example runs twice.

use crate::interface::DataDir;
use anyhow::Context as _;
use kbc_emulator::{Emulator, EmulatorConfig, EmulatorOptions, TlsFiles};
use kbc_storage::{Client, ClientConfig, ImportOptions, Secret, TableId, UploadOptions};
use std::path::{Path, PathBuf};

/// The running local stack.
pub(crate) struct LocalStack {
    emulator: Emulator,
    token: Secret,
    dir: PathBuf,
}

impl LocalStack {
    /// Starts the emulator on a free loopback port with its store in `dir/storage`, seeding it on first use
    /// from `data_root/local-stack`; it serves HTTPS when `tls` is given (`--tls-cert`/`--tls-key`), and the
    /// run's client then needs the certificate's CA among its roots (`SSL_CERT_FILE`).
    pub(crate) async fn start(
        dir: &Path,
        data_root: &Path,
        tls: Option<TlsFiles>,
    ) -> anyhow::Result<LocalStack> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the local stack folder {}", dir.display()))?;
        // A fresh token per run: the emulator only has to accept it for this process's lifetime.
        let token = Secret::new(format!("local-{}", uuid::Uuid::new_v4().simple()));
        let emulator = Emulator::start_with_options(
            EmulatorConfig {
                listen: "127.0.0.1:0".parse().expect("a valid socket address"),
                store: dir.join("storage"),
                tokens: vec![token.expose().to_owned()],
            },
            EmulatorOptions {
                tls,
                ..EmulatorOptions::default()
            },
        )
        .await
        .context("starting the local Storage API emulator")?;
        let stack = LocalStack {
            emulator,
            token,
            dir: dir.to_owned(),
        };
        tracing::info!(
            "local stack: Storage API emulator at {} (store {})",
            stack.url(),
            dir.display()
        );
        let marker = dir.join("seeded");
        let first_use = !marker.exists();
        if first_use {
            let seed = data_root.join("local-stack");
            if seed.join("tables").is_dir() {
                stack
                    .emulator
                    .seed_dir(&seed)
                    .await
                    .with_context(|| format!("seeding the local stack from {}", seed.display()))?;
                tracing::info!("local stack: seeded Storage from {}", seed.display());
            }
            std::fs::write(&marker, "seeded by kbc-runner --local-stack\n")
                .with_context(|| format!("writing {}", marker.display()))?;
        } else {
            stack
                .apply_changes_once(&data_root.join("local-stack"))
                .await?;
        }
        // The platform writes in/state.json from the state it keeps; so do we.
        let data = DataDir::new(data_root);
        data.ensure_layout()?;
        let kept = dir.join("state.json");
        let state = std::fs::read(&kept).unwrap_or_else(|_| b"{}\n".to_vec());
        crate::interface::write_atomic(&data.in_state(), &state)?;
        Ok(stack)
    }

    /// On the second use, loads `changes/<table_id>.csv` incrementally into the seeded tables, once: it
    /// stands for the source system delivering new and changed rows between two runs of the job, so the
    /// second run shows what `adaptive` export and incremental import do.
    async fn apply_changes_once(&self, seed: &Path) -> anyhow::Result<()> {
        let changes = seed.join("changes");
        let marker = self.dir.join("changes-applied");
        if marker.exists() || !changes.is_dir() {
            return Ok(());
        }
        let mut config = ClientConfig::new(self.url(), self.token.clone());
        config.endpoints.s3 = Some(self.url());
        let client = Client::new(config).context("connecting to the local stack")?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&changes)
            .with_context(|| format!("listing {}", changes.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let table_id: TableId = name
                .trim_end_matches(".csv")
                .parse()
                .with_context(|| format!("{}: the file name is not a table id", file.display()))?;
            let file_id = client
                .upload_file(
                    &file,
                    &UploadOptions {
                        name: name.clone(),
                        tags: vec!["kbc-runner-local-stack".to_owned()],
                        gzip: true,
                    },
                )
                .await
                .with_context(|| format!("uploading {}", file.display()))?;
            let outcome = client
                .import_table(
                    &table_id,
                    file_id,
                    &ImportOptions {
                        incremental: true,
                        ..Default::default()
                    },
                )
                .await
                .with_context(|| format!("loading {} into {table_id}", file.display()))?;
            tracing::info!(
                "local stack: the source system changed {table_id} (incremental load of {}; the table now has \
                 {} rows)",
                file.display(),
                outcome.total_rows_count
            );
        }
        std::fs::write(&marker, "changes loaded by kbc-runner --local-stack\n")
            .with_context(|| format!("writing {}", marker.display()))?;
        Ok(())
    }

    pub(crate) fn url(&self) -> String {
        self.emulator.url()
    }

    pub(crate) fn token(&self) -> &str {
        self.token.expose()
    }

    /// Keeps `out/state.json` for the next run, as the platform does after a successful job.
    pub(crate) async fn keep_state(&self, data: &DataDir) -> anyhow::Result<()> {
        let bytes = std::fs::read(data.out_state())
            .with_context(|| format!("reading {}", data.out_state().display()))?;
        crate::interface::write_atomic(&self.dir.join("state.json"), &bytes)?;
        Ok(())
    }

    pub(crate) async fn shutdown(self) {
        self.emulator.shutdown().await;
    }
}
