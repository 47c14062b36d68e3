//! File Storage endpoints: `files/prepare`, file detail with federation credentials, and the upload flow.

use super::retry::Idempotency;
use super::transport::Call;
use super::types::{FileInfo, UploadOptions};
use super::{Client, Error, providers, upload};
use reqwest::Method;
use std::path::Path;

impl Client {
    /// `GET files/{id}?federationToken=1`: the file and the credentials to read it.
    pub async fn file_detail(&self, file_id: u64) -> Result<FileInfo, Error> {
        self.inner
            .transport
            .json(&Call::get(format!("files/{file_id}")).query("federationToken", "1"))
            .await
            .map_err(|e| e.with_subject(format!("file {file_id}")))
    }

    /// `POST files/prepare`: registers a file and returns where to upload it.
    pub async fn prepare_file(
        &self,
        name: &str,
        size_bytes: u64,
        sliced: bool,
        tags: &[String],
    ) -> Result<FileInfo, Error> {
        // Preparing creates only an empty file record; repeating it is harmless.
        let call = Call::new(Method::POST, "files/prepare", Idempotency::Idempotent).json(
            serde_json::json!({
                "name": name,
                "sizeBytes": size_bytes,
                "federationToken": true,
                "isEncrypted": true,
                "isSliced": sliced,
                "tags": tags,
            }),
        );
        self.inner.transport.json(&call).await
    }

    /// Uploads a CSV file (gzipped on the fly unless it is gzipped already; multipart when big) or a
    /// folder of slices (a sliced file with a manifest). Returns the file id.
    pub async fn upload_file(&self, path: &Path, options: &UploadOptions) -> Result<u64, Error> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::io("reading", path, e))?;
        let base_name = if options.name.is_empty() {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data.csv".into())
        } else {
            options.name.clone()
        };
        let progress = self.progress();
        if meta.is_dir() {
            let slices = upload::list_slices(path).await?;
            let mut total = 0u64;
            for s in &slices {
                total += tokio::fs::metadata(s)
                    .await
                    .map_err(|e| Error::io("reading", s, e))?
                    .len();
            }
            progress.reset(total);
            let prepared = self
                .prepare_file(&base_name, total, true, &options.tags)
                .await?;
            let location = providers::for_upload(&prepared, &self.inner.endpoints)?;
            tracing::debug!("uploading {} slices to file {}", slices.len(), prepared.id);
            // Slices in flight: the shared bound, and at most 4 from one upload to keep part buffers small.
            let parallel = self.inner.max_connections.min(4);
            upload::put_sliced(
                &location,
                &slices,
                options.gzip,
                self.inner.slots.clone(),
                parallel,
                progress,
            )
            .await?;
            Ok(prepared.id)
        } else {
            let already = upload::is_gzipped(path).await?;
            let compress = options.gzip && !already;
            let name = if (compress || already) && !base_name.ends_with(".gz") {
                format!("{base_name}.gz")
            } else {
                base_name
            };
            progress.reset(meta.len());
            let prepared = self
                .prepare_file(&name, meta.len(), false, &options.tags)
                .await?;
            let location = providers::for_upload(&prepared, &self.inner.endpoints)?;
            let _permit = self.transfer_permit().await?;
            let parts = self.inner.max_connections.clamp(1, 4);
            upload::put_file(
                &location,
                &location.key.clone(),
                path,
                compress,
                parts,
                &progress,
            )
            .await?;
            Ok(prepared.id)
        }
    }
}
