//! Table endpoints and the export and import flows built on them.
//!
//! Export: table detail (for the header and a clear "does not exist") → `export-async` (always gzipped:
//! smaller transfers; we gunzip locally) → job → file detail with credentials → download (sliced files in
//! parallel). Import: `import-async` or `tables-async` from an uploaded file → job.

use super::branch::{BranchMode, ReadScope, branch_table_id};
use super::download;
use super::ids::{BucketId, TableId};
use super::retry::Idempotency;
use super::transport::Call;
use super::types::{
    CreateTableOptions, DeleteRowsOptions, DownloadMode, ExportJobResult, ExportOptions,
    ExportOutcome, ImportOptions, ImportOutcome, Job, Table, UploadOptions,
};
use super::{ApiError, Client, Error, providers};
use reqwest::Method;
use std::path::Path;

impl Client {
    /// `GET tables` (or `buckets/{id}/tables`) with columns.
    pub async fn list_tables(&self, bucket_id: Option<&BucketId>) -> Result<Vec<Table>, Error> {
        self.branch_mode().await?;
        let call = match bucket_id {
            Some(b) => Call::get(format!("buckets/{b}/tables")),
            None => Call::get("tables"),
        }
        .query("include", "columns,buckets");
        let tables: Vec<Table> =
            self.inner
                .transport
                .json(&call)
                .await
                .map_err(|e| match bucket_id {
                    Some(b) => e.with_subject(format!("bucket {b}")),
                    None => e,
                })?;
        Ok(tables.into_iter().map(Table::normalized).collect())
    }

    /// The table a read of `table_id` uses; `None` when it does not exist. In a development branch this
    /// is the branch's table when there is one, else production's (see [`super::branch`]); the returned
    /// table's `id` says which.
    pub async fn get_table(&self, table_id: &TableId) -> Result<Option<Table>, Error> {
        Ok(self.find_table(table_id).await?.map(|(t, _)| t))
    }

    /// The table a write of `table_id` goes to (see [`Client::table_id_for_write`]), without falling back
    /// to production or the default branch; `None` when it does not exist there yet.
    pub async fn get_table_for_write(&self, table_id: &TableId) -> Result<Option<Table>, Error> {
        let id = self.table_id_for_write(table_id).await?;
        self.table_at(&id, ReadScope::Own).await
    }

    /// The table a read uses and where it was found.
    pub(crate) async fn find_table(
        &self,
        table_id: &TableId,
    ) -> Result<Option<(Table, ReadScope)>, Error> {
        match self.branch_mode().await? {
            BranchMode::Production => {}
            BranchMode::Prefixed { id } => {
                let dev = branch_table_id(table_id, id)?;
                if dev != *table_id
                    && let Some(t) = self.table_at(&dev, ReadScope::Own).await?
                {
                    tracing::info!("using dev input {dev} instead of {table_id}");
                    return Ok(Some((t, ReadScope::Own)));
                }
            }
            BranchMode::BranchStorage { id } => {
                if let Some(t) = self.table_at(table_id, ReadScope::Own).await? {
                    return Ok(Some((t, ReadScope::Own)));
                }
                let found = self.table_at(table_id, ReadScope::DefaultBranch).await?;
                if found.is_some() {
                    tracing::info!(
                        "{table_id} is not in branch {id}: reading it from the default branch"
                    );
                }
                return Ok(found.map(|t| (t, ReadScope::DefaultBranch)));
            }
        }
        Ok(self
            .table_at(table_id, ReadScope::Own)
            .await?
            .map(|t| (t, ReadScope::Own)))
    }

    /// `GET tables/{id}` in one scope; `None` when it does not exist there.
    async fn table_at(&self, table_id: &TableId, scope: ReadScope) -> Result<Option<Table>, Error> {
        let table: Option<Table> = self
            .inner
            .transport
            .json_opt(&scoped(Call::get(format!("tables/{table_id}")), scope))
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        Ok(table.map(Table::normalized))
    }

    /// The table a read uses, or a user error saying it does not exist.
    async fn require_table(&self, table_id: &TableId) -> Result<(Table, ReadScope), Error> {
        self.find_table(table_id).await?.ok_or_else(|| {
            Error::Api(Box::new(ApiError {
                method: "GET".into(),
                path: format!("/v2/storage/tables/{table_id}"),
                status: 404,
                code: Some("storage.tables.notFound".into()),
                subject: Some(format!("table {table_id}")),
                attempts: 1,
                ..Default::default()
            }))
        })
    }

    /// `GET tables/{id}/data-preview` as RFC CSV text with a header (at most 1000 rows).
    pub async fn preview(&self, table_id: &TableId, limit: Option<u32>) -> Result<String, Error> {
        // Only a development branch has to find out which table a read uses.
        let (id, scope) = match self.branch_mode().await? {
            BranchMode::Production => (table_id.to_string(), ReadScope::Own),
            _ => {
                let (table, scope) = self.require_table(table_id).await?;
                (table.id, scope)
            }
        };
        let mut call =
            scoped(Call::get(format!("tables/{id}/data-preview")), scope).query("format", "rfc");
        if let Some(limit) = limit {
            if limit == 0 || limit > 1000 {
                return Err(Error::Invalid(format!(
                    "preview limit must be 1 to 1000, not {limit}"
                )));
            }
            call = call.query("limit", limit.to_string());
        }
        self.inner
            .transport
            .text(&call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))
    }

    /// Exports a table to `dest`: one CSV with exactly one header row (merged), or a folder of header-less
    /// slices (sliced). The data lands under a temporary name and is renamed on success.
    pub async fn export_table(
        &self,
        table_id: &TableId,
        options: &ExportOptions,
        dest: &Path,
        mode: DownloadMode,
    ) -> Result<ExportOutcome, Error> {
        let (table, scope) = self.require_table(table_id).await?;
        // In a development branch the table read may be the branch's (another id) or the default branch's.
        let table_id = table.id.as_str();
        let columns = if options.columns.is_empty() {
            table.columns.clone()
        } else {
            options.columns.clone()
        };
        // An export job only reads the table: repeating the request after a 5xx or a cut answer at worst
        // leaves a second export job running, so it is retried like a GET (as every official client does).
        let call = scoped(
            Call::new(
                Method::POST,
                format!("tables/{table_id}/export-async"),
                Idempotency::Idempotent,
            ),
            scope,
        )
        .json(export_body(options));
        let job = self
            .run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        let ExportJobResult {
            file: exported,
            cache_hit,
        } = serde_json::from_value(job.results.clone()).map_err(|e| Error::Decode {
            what: format!("export job {}", job.id),
            message: format!("the results have no file.id ({e})"),
        })?;
        let file_id = exported.id;
        let file = self.file_detail_in(file_id, scope).await?;
        let progress = self.progress();
        progress.reset(file.size_bytes);
        tracing::debug!(
            "export of {table_id}: job {}, file {file_id} ({} bytes, sliced: {})",
            job.id,
            file.size_bytes,
            file.is_sliced
        );
        let has_credentials = file.credentials.is_some()
            || file.abs_credentials.is_some()
            || file.gcs_credentials.is_some();
        let located = || {
            providers::for_download(
                &file,
                &self.inner.endpoints,
                Some(self.refresher(
                    file_id,
                    providers::Purpose::Download,
                    scope == ReadScope::DefaultBranch,
                )),
            )
        };
        let (bytes, rows, columns) = if file.is_sliced {
            let location = located()?;
            let slices = download::read_manifest(&location).await?;
            let got = download::download_slices(
                &location,
                slices,
                &columns,
                dest,
                mode,
                self.inner.slots.clone(),
                progress.clone(),
            )
            .await?;
            tracing::debug!(
                "export of {table_id}: {} slices, {} rows",
                got.slices,
                got.rows
            );
            (got.bytes, got.rows, columns)
        } else {
            let _permit = self.transfer_permit().await?;
            let (stream, what) = if has_credentials {
                let location = located()?;
                let path = providers::object_path(&location.key);
                (
                    download::open_object(&location, &path).await?,
                    location.display.clone(),
                )
            } else {
                let url = file.url.as_ref().ok_or_else(|| Error::Decode {
                    what: format!("file {file_id}"),
                    message: "the answer has neither credentials nor a url".into(),
                })?;
                let resp = self.inner.transport.get_presigned(url).await?;
                let stream: download::ByteStream = Box::pin(futures::TryStreamExt::map_err(
                    resp.bytes_stream(),
                    std::io::Error::other,
                ));
                (stream, format!("file {file_id}"))
            };
            let (stats, header) =
                download::download_plain(stream, dest, mode, &progress, &what).await?;
            (
                stats.bytes,
                stats.counter.records(),
                header.unwrap_or(columns),
            )
        };
        progress
            .rows
            .store(rows, std::sync::atomic::Ordering::Relaxed);
        Ok(ExportOutcome {
            file_id,
            cache_hit,
            bytes,
            rows,
            columns,
            sliced: file.is_sliced,
            job_id: job.id,
        })
    }

    /// `POST buckets/{bucket}/tables-async` from an uploaded file; waits for the job. With
    /// `options.columns` (header-less data) the table is created from a header-only file with those
    /// columns and then loaded with an import, as the API takes column names only from a header.
    pub async fn create_table(
        &self,
        table_id: &TableId,
        file_id: u64,
        options: &CreateTableOptions,
    ) -> Result<Table, Error> {
        let name = table_id.name();
        let table_id = self.table_id_for_write(table_id).await?;
        if let Some(columns) = &options.columns {
            let header_file = self.upload_header(columns).await?;
            let plain = CreateTableOptions {
                columns: None,
                delimiter: None,
                enclosure: None,
                ..options.clone()
            };
            let table = Box::pin(self.create_table(&table_id, header_file, &plain)).await?;
            self.import_table(
                &table_id,
                file_id,
                &ImportOptions {
                    incremental: true,
                    columns: Some(columns.clone()),
                    delimiter: options.delimiter,
                    enclosure: options.enclosure,
                },
            )
            .await?;
            return self.get_table_for_write(&table_id).await?.ok_or_else(|| {
                Error::Invalid(format!("table {} was created but cannot be read", table.id))
            });
        }
        let mut body = serde_json::json!({ "name": name, "dataFileId": file_id });
        if !options.primary_key.is_empty() {
            body["primaryKey"] = options.primary_key.join(",").into();
        }
        if let Some(d) = options.delimiter {
            body["delimiter"] = d.to_string().into();
        }
        if let Some(e) = options.enclosure {
            body["enclosure"] = e.to_string().into();
        }
        Ok(self.tables_async(&table_id, body).await?.1)
    }

    /// `POST buckets/{id}/tables-async` with `body` (the data's source, name, primary key); waits for the
    /// job. Returns the job and the table its results describe, as created and loaded.
    pub(crate) async fn tables_async(
        &self,
        table_id: &TableId,
        body: serde_json::Value,
    ) -> Result<(Job, Table), Error> {
        let bucket_id = table_id.bucket();
        let call = Call::new(
            Method::POST,
            format!("buckets/{bucket_id}/tables-async"),
            Idempotency::CreatesJob,
        )
        .json(body)
        .hint(format!(
            "check whether table {table_id} exists before running again"
        ));
        let job = self
            .run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("bucket {bucket_id}")))?;
        let table: Table =
            serde_json::from_value(job.results.clone()).map_err(|e| Error::Decode {
                what: format!("create job {} for {table_id}", job.id),
                message: e.to_string(),
            })?;
        Ok((job, table.normalized()))
    }

    /// Uploads a one-line file holding just the header, to create a table with those columns.
    pub(crate) async fn upload_header(&self, columns: &[String]) -> Result<u64, Error> {
        let dir = tempfile::tempdir()
            .map_err(|e| Error::io("creating a temporary folder in", std::env::temp_dir(), e))?;
        let path = dir.path().join("header.csv");
        tokio::fs::write(&path, download::header_line(columns))
            .await
            .map_err(|e| Error::io("writing", &path, e))?;
        self.upload_file(
            &path,
            &UploadOptions {
                name: "header.csv".into(),
                tags: Vec::new(),
                gzip: false,
            },
        )
        .await
    }

    /// `POST tables/{id}/import-async` from an uploaded file; waits for the job.
    pub async fn import_table(
        &self,
        table_id: &TableId,
        file_id: u64,
        options: &ImportOptions,
    ) -> Result<ImportOutcome, Error> {
        // Writes in a development branch go to the branch's table, never to production's.
        let table_id = self.table_id_for_write(table_id).await?;
        let mut body =
            serde_json::json!({ "dataFileId": file_id, "incremental": options.incremental });
        if let Some(columns) = &options.columns {
            body["columns"] = columns.clone().into();
        }
        if let Some(d) = options.delimiter {
            body["delimiter"] = d.to_string().into();
        }
        if let Some(e) = options.enclosure {
            body["enclosure"] = e.to_string().into();
        }
        let hint = if options.incremental {
            format!(
                "check the last import of {table_id} (lastImportDate, events) before running again: repeating an incremental load into a table without a primary key duplicates rows"
            )
        } else {
            format!(
                "check the last import of {table_id} (lastImportDate, events) before running again"
            )
        };
        let call = Call::new(
            Method::POST,
            format!("tables/{table_id}/import-async"),
            Idempotency::CreatesJob,
        )
        .json(body)
        .hint(hint);
        let job = self
            .run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        Ok(import_outcome(&job))
    }

    /// `POST tables/{id}/primary-key`; waits for the job.
    pub async fn add_primary_key(
        &self,
        table_id: &TableId,
        columns: &[String],
    ) -> Result<(), Error> {
        // Writes in a development branch go to the branch's table, never to production's.
        let table_id = self.table_id_for_write(table_id).await?;
        let call = Call::new(
            Method::POST,
            format!("tables/{table_id}/primary-key"),
            Idempotency::CreatesJob,
        )
        .json(serde_json::json!({ "columns": columns }))
        .hint(format!("check the primary key of {table_id}"));
        self.run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        Ok(())
    }

    /// `DELETE tables/{id}/primary-key`; waits for the job.
    pub async fn remove_primary_key(&self, table_id: &TableId) -> Result<(), Error> {
        // Writes in a development branch go to the branch's table, never to production's.
        let table_id = self.table_id_for_write(table_id).await?;
        let call = Call::new(
            Method::DELETE,
            format!("tables/{table_id}/primary-key"),
            Idempotency::Idempotent,
        );
        self.run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        Ok(())
    }

    /// `POST tables/{id}/columns`; waits for the job.
    pub async fn add_column(&self, table_id: &TableId, name: &str) -> Result<(), Error> {
        // Writes in a development branch go to the branch's table, never to production's.
        let table_id = self.table_id_for_write(table_id).await?;
        let call = Call::new(
            Method::POST,
            format!("tables/{table_id}/columns"),
            Idempotency::CreatesJob,
        )
        .json(serde_json::json!({ "name": name }))
        .hint(format!("check whether {table_id} has column {name}"));
        self.run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        Ok(())
    }

    /// `DELETE tables/{id}/rows`; waits for the job and returns `deletedRows`.
    pub async fn delete_rows(
        &self,
        table_id: &TableId,
        options: &DeleteRowsOptions,
    ) -> Result<u64, Error> {
        // Writes in a development branch go to the branch's table, never to production's.
        let table_id = self.table_id_for_write(table_id).await?;
        let no_filter = options.changed_since.is_none()
            && options.changed_until.is_none()
            && options.where_filters.is_empty();
        if no_filter && !options.allow_truncate {
            return Err(Error::Invalid(format!(
                "deleting rows of {table_id} without a filter would empty the table; set allow_truncate to do that"
            )));
        }
        let mut body = serde_json::json!({ "allowTruncate": options.allow_truncate });
        if let Some(s) = &options.changed_since {
            body["changedSince"] = s.clone().into();
        }
        if let Some(s) = &options.changed_until {
            body["changedUntil"] = s.clone().into();
        }
        if !options.where_filters.is_empty() {
            body["whereFilters"] = serde_json::to_value(&options.where_filters).unwrap_or_default();
        }
        let call = Call::new(
            Method::DELETE,
            format!("tables/{table_id}/rows"),
            Idempotency::CreatesJob,
        )
        .json(body)
        .hint(format!("check the row count of {table_id}"));
        let job = self
            .run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        Ok(job
            .results
            .get("deletedRows")
            .and_then(json_u64)
            .unwrap_or(0))
    }

    /// `DELETE tables/{id}`; waits for the job. A table that is already gone counts as dropped.
    pub async fn drop_table(&self, table_id: &TableId) -> Result<(), Error> {
        // Writes in a development branch go to the branch's table, never to production's.
        let table_id = self.table_id_for_write(table_id).await?;
        let call = Call::new(
            Method::DELETE,
            format!("tables/{table_id}"),
            Idempotency::Idempotent,
        )
        .query("async", "1")
        .query("force", "1");
        match self.inner.transport.send(&call).await {
            Ok(resp) if resp.status() == reqwest::StatusCode::ACCEPTED => {
                let bytes = resp.bytes().await.map_err(|e| Error::Transport {
                    method: "DELETE".into(),
                    path: format!("tables/{table_id}"),
                    message: e.to_string(),
                    attempts: 1,
                    elapsed: std::time::Duration::ZERO,
                })?;
                let job: Job = super::transport::decode("the drop job", &bytes)?;
                self.wait_for_job(job.id).await?;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.with_subject(format!("table {table_id}"))),
        }
    }
}

/// A call in the given read scope: the default branch's calls go without the branch path.
fn scoped(call: Call, scope: ReadScope) -> Call {
    match scope {
        ReadScope::Own => call,
        ReadScope::DefaultBranch => call.global(),
    }
}

fn json_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn import_outcome(job: &Job) -> ImportOutcome {
    let r = &job.results;
    ImportOutcome {
        job_id: job.id,
        imported_columns: strings(r.get("importedColumns")),
        total_rows_count: r.get("totalRowsCount").and_then(json_u64).unwrap_or(0),
        total_data_size_bytes: r.get("totalDataSizeBytes").and_then(json_u64).unwrap_or(0),
        warnings: strings(r.get("warnings")),
    }
}

/// The `export-async` body. Always gzipped: the transfer is smaller and we decompress while streaming.
fn export_body(options: &ExportOptions) -> serde_json::Value {
    let mut body = serde_json::json!({ "gzip": true, "format": "rfc" });
    if !options.columns.is_empty() {
        body["columns"] = options.columns.join(",").into();
    }
    if let Some(s) = &options.changed_since {
        body["changedSince"] = s.clone().into();
    }
    if let Some(s) = &options.changed_until {
        body["changedUntil"] = s.clone().into();
    }
    // The platform sends the trio only with values (input-mapping's RewrittenInputTableOptions); a column
    // without values exports the whole table.
    if let Some(c) = options
        .where_column
        .as_ref()
        .filter(|c| !c.is_empty() && !options.where_values.is_empty())
    {
        body["whereColumn"] = c.clone().into();
        body["whereValues"] = options.where_values.clone().into();
        body["whereOperator"] = options.where_operator.unwrap_or_default().as_str().into();
    }
    if !options.where_filters.is_empty() {
        body["whereFilters"] = serde_json::to_value(&options.where_filters).unwrap_or_default();
    }
    if let Some(l) = options.limit {
        body["limit"] = l.into();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Operator, WhereFilter};

    #[test]
    fn export_body_uses_the_documented_shapes() {
        let body = export_body(&ExportOptions {
            columns: vec!["id".into(), "name".into()],
            changed_since: Some("-2 days".into()),
            where_column: Some("id".into()),
            where_values: vec!["1".into(), "2".into()],
            where_filters: vec![WhereFilter {
                column: "name".into(),
                operator: Operator::Ne,
                values: vec!["x".into()],
                data_type: None,
            }],
            limit: Some(10),
            ..Default::default()
        });
        assert_eq!(
            body,
            serde_json::json!({
                "gzip": true, "format": "rfc", "columns": "id,name", "changedSince": "-2 days",
                "whereColumn": "id", "whereValues": ["1", "2"], "whereOperator": "eq",
                "whereFilters": [{"column": "name", "operator": "ne", "values": ["x"]}], "limit": 10
            })
        );
    }

    #[test]
    fn a_where_column_without_values_exports_the_whole_table() {
        let body = export_body(&ExportOptions {
            where_column: Some("id".into()),
            where_operator: Some(Operator::Ne),
            ..Default::default()
        });
        assert_eq!(body, serde_json::json!({"gzip": true, "format": "rfc"}));
    }

    #[test]
    fn export_results_are_typed_and_read_leniently() {
        let r: ExportJobResult =
            serde_json::from_value(serde_json::json!({"file": {"id": "42"}, "cacheHit": null}))
                .unwrap();
        assert_eq!((r.file.id, r.cache_hit), (42, false));
        let r: ExportJobResult =
            serde_json::from_value(serde_json::json!({"file": {"id": 7}, "cacheHit": true}))
                .unwrap();
        assert_eq!((r.file.id, r.cache_hit), (7, true));
        assert!(
            serde_json::from_value::<ExportJobResult>(serde_json::json!({"file": {}})).is_err()
        );
    }

    #[test]
    fn import_results_are_read_leniently() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": 5, "status": "success", "operationName": "tableImport",
            "results": {"importedColumns": ["id", "name"], "warnings": [], "transaction": null,
                        "totalRowsCount": "5", "totalDataSizeBytes": 1536}
        }))
        .unwrap();
        let o = import_outcome(&job);
        assert_eq!(o.imported_columns, vec!["id", "name"]);
        assert_eq!(o.total_rows_count, 5);
        assert_eq!(o.total_data_size_bytes, 1536);
        assert_eq!(o.job_id, 5);
    }
}
