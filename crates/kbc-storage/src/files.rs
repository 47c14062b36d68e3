//! File Storage endpoints: `files/prepare`, file detail with federation credentials, and the upload flow.

use super::branch::ReadScope;
use super::retry::Idempotency;
use super::transport::Call;
use super::types::{FileInfo, UploadOptions};
use super::{Client, Error, providers, upload};
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use std::path::{Path, PathBuf};

impl Client {
    /// `GET files/{id}?federationToken=1`: the file and the credentials to read it.
    pub async fn file_detail(&self, file_id: u64) -> Result<FileInfo, Error> {
        self.file_detail_in(file_id, ReadScope::Own).await
    }

    /// The file detail in a read scope (an export made on the default branch is read there).
    pub(crate) async fn file_detail_in(
        &self,
        file_id: u64,
        scope: ReadScope,
    ) -> Result<FileInfo, Error> {
        self.branch_mode().await?;
        let mut call = Call::get(format!("files/{file_id}")).query("federationToken", "1");
        if scope == ReadScope::DefaultBranch {
            call = call.global();
        }
        self.inner
            .transport
            .json(&call)
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
        self.branch_mode().await?;
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

    /// Uploads a CSV file (gzipped unless it is gzipped already; multipart when big) or a folder of slices
    /// (a sliced file with a manifest). Returns the file id.
    ///
    /// Every gzipped object gets a `.gz` name (the API: "Gzipped files must have the extension .gz").
    /// Data to compress is gzipped into a temporary folder first, so that `files/prepare` declares the size
    /// of what is uploaded, as the official clients do (PHP `uploadFile` takes the size after gzip), except
    /// a single file above [`STREAM_GZIP_ABOVE`]: it is gzipped while it uploads, and prepare declares its
    /// uncompressed size (an upper bound), because prepare has to come before the first byte. Compressing
    /// first and uploading after made a 1.8 GB import 3.5 s slower on a 1 Gbit/s link (README benchmarks);
    /// the size is the file resource's metadata, which nothing in the load reads.
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
        let scratch = tempfile::tempdir()
            .map_err(|e| Error::io("creating a temporary folder in", std::env::temp_dir(), e))?;
        if meta.is_dir() {
            let slices = upload::list_slices(path).await?;
            // Slices in flight: the shared bound, and at most 4 from one upload to keep part buffers small.
            // Compression runs as many at once: one small slice keeps only one core busy.
            let parallel = self.inner.max_connections.min(4);
            let gzipped: Vec<(PathBuf, bool)> = futures::stream::iter(&slices)
                .map(|slice| gzip_if_needed(slice, options.gzip, scratch.path()))
                .buffered(parallel.max(1))
                .try_collect()
                .await?;
            let any_gzip = gzipped.iter().any(|(_, gz)| *gz);
            let ready: Vec<PathBuf> = gzipped.into_iter().map(|(local, _)| local).collect();
            let total = total_size(&ready).await?;
            progress.reset(total);
            let name = if any_gzip {
                gz_name(&base_name)
            } else {
                base_name
            };
            let prepared = self.prepare_file(&name, total, true, &options.tags).await?;
            let location = providers::for_upload(
                &prepared,
                &self.inner.endpoints,
                Some(self.refresher(prepared.id, providers::Purpose::Upload, false)),
            )?;
            tracing::debug!("uploading {} slices to file {}", ready.len(), prepared.id);
            upload::put_sliced(
                &location,
                &ready,
                false,
                self.inner.slots.clone(),
                parallel,
                progress,
            )
            .await?;
            Ok(prepared.id)
        } else {
            // A big file is gzipped while it uploads (see above); others first, into the scratch folder.
            let stream =
                options.gzip && meta.len() > STREAM_GZIP_ABOVE && !upload::is_gzipped(path).await?;
            let (local, gzipped) = if stream {
                (path.to_owned(), true)
            } else {
                gzip_if_needed(path, options.gzip, scratch.path()).await?
            };
            let name = if gzipped {
                gz_name(&base_name)
            } else {
                base_name
            };
            let size = total_size(std::slice::from_ref(&local)).await?;
            progress.reset(size);
            let prepared = self.prepare_file(&name, size, false, &options.tags).await?;
            let location = providers::for_upload(
                &prepared,
                &self.inner.endpoints,
                Some(self.refresher(prepared.id, providers::Purpose::Upload, false)),
            )?;
            let _permit = self.transfer_permit().await?;
            // While gzipping, compression rather than the link limits the upload (two cores give about
            // 200 MB/s of gzip), so two parts in flight keep it busy; each holds PART_SIZE of memory.
            let parts = self
                .inner
                .max_connections
                .clamp(1, if stream { 2 } else { 4 });
            upload::put_file(
                &location,
                &location.key.clone(),
                &local,
                stream,
                parts,
                &progress,
            )
            .await?;
            Ok(prepared.id)
        }
    }
}

/// Single files above this size are gzipped while they upload instead of before (see
/// [`Client::upload_file`](crate::Client::upload_file)).
pub const STREAM_GZIP_ABOVE: u64 = 64 * 1024 * 1024;

fn gz_name(name: &str) -> String {
    if name.ends_with(".gz") {
        name.to_owned()
    } else {
        format!("{name}.gz")
    }
}

/// The file to upload for `source` and whether it is gzipped: the source itself when it is gzipped
/// already or compression is off, else a gzipped copy named `<name>.gz` in `scratch`.
async fn gzip_if_needed(
    source: &Path,
    compress: bool,
    scratch: &Path,
) -> Result<(PathBuf, bool), Error> {
    if upload::is_gzipped(source).await? {
        return Ok((source.to_owned(), true));
    }
    if !compress {
        return Ok((source.to_owned(), false));
    }
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data.csv".into());
    let target = scratch.join(gz_name(&name));
    upload::gzip_file(source, &target).await?;
    Ok((target, true))
}

async fn total_size(files: &[PathBuf]) -> Result<u64, Error> {
    let mut total = 0u64;
    for f in files {
        total += tokio::fs::metadata(f)
            .await
            .map_err(|e| Error::io("reading", f, e))?
            .len();
    }
    Ok(total)
}
