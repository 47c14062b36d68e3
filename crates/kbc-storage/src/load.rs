//! Loading an uploaded file into a table: the workflow the job's output mapping and `tables import`
//! share. A missing table is created first (its bucket too, once even when tables load in parallel) as an
//! empty table from its column names, so the data always goes through the same import job as for an
//! existing table; rows are deleted before an incremental load when asked; and a table this load created
//! that is still empty after a failure is dropped again, so a failed first load leaves nothing behind.
//!
//! The data is an uploaded file or a table in a workspace ([`DataSource`]). A new table loaded from a
//! workspace is created with its data in one `tables-async` job, as the platform's output mapping does.

use crate::Client;
use crate::error::Error;
use crate::ids::{BucketId, TableId};
use crate::types::{CreateTableOptions, DeleteRowsOptions, ImportOptions, ImportOutcome, Table};
use crate::workspaces::WorkspaceObject;
use std::fmt;

/// Where the data of a load is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A file uploaded to File Storage.
    File(u64),
    /// A table in a workspace: the backend copies it, nothing passes through the client.
    Workspace(WorkspaceObject),
}

/// A table to create when it does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTable {
    /// The columns, in file order (the header, or the columns of header-less data).
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
}

/// What [`Client::load_table`] does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSpec {
    /// The import job's options (full or incremental, header-less columns, dialect).
    pub import: ImportOptions,
    /// `Some`: the table does not exist (the caller has looked) and is created with these columns and
    /// primary key before the import.
    pub create: Option<NewTable>,
    /// Rows deleted before the import, one job per rule, once the data is safely in File Storage.
    pub delete_first: Vec<DeleteRowsOptions>,
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    pub import: ImportOutcome,
    /// The table this load created, as created (empty).
    pub created: Option<Table>,
}

/// The step of a load that failed; its message is the step, the cause is the client's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadStep {
    CreateBucket(BucketId),
    UploadHeader,
    CreateTable(TableId),
    DeleteRows,
    Import,
    ImportFromWorkspace,
}

impl fmt::Display for LoadStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadStep::CreateBucket(id) => write!(f, "creating bucket {id}"),
            LoadStep::UploadHeader => f.write_str("uploading the header of the new table"),
            LoadStep::CreateTable(id) => write!(f, "creating table {id}"),
            LoadStep::DeleteRows => {
                f.write_str("deleting rows (delete_where) before the incremental load")
            }
            LoadStep::Import => f.write_str("loading the uploaded file"),
            LoadStep::ImportFromWorkspace => f.write_str("loading the workspace table"),
        }
    }
}

/// A failed load: which step, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub struct LoadError {
    pub step: LoadStep,
    #[source]
    pub source: Error,
}

impl LoadError {
    /// Whether the user can fix it (see [`Error::is_user`]).
    pub fn is_user(&self) -> bool {
        self.source.is_user()
    }
}

fn at(step: LoadStep) -> impl FnOnce(Error) -> LoadError {
    move |source| LoadError { step, source }
}

impl Client {
    /// Loads `source` into `table_id` as `spec` says: creates the table first when `spec.create` is set,
    /// deletes `spec.delete_first` rows, then imports. When the load fails after the table was created
    /// here, the table is dropped again if it is still empty.
    pub async fn load_table(
        &self,
        table_id: &TableId,
        source: &DataSource,
        spec: &LoadSpec,
    ) -> Result<LoadOutcome, LoadError> {
        if let (DataSource::Workspace(object), Some(new)) = (source, &spec.create) {
            return self.create_from_workspace(table_id, object, new).await;
        }
        let created = match &spec.create {
            Some(new) => Some(self.create_empty_table(table_id, new).await?),
            None => None,
        };
        match self.delete_and_import(table_id, source, spec).await {
            Ok(import) => Ok(LoadOutcome { import, created }),
            Err(err) => {
                if created.is_some() {
                    self.drop_if_empty(table_id).await;
                }
                Err(err)
            }
        }
    }

    /// Creates the table (and its bucket) from a header-only file, empty.
    async fn create_empty_table(
        &self,
        table_id: &TableId,
        new: &NewTable,
    ) -> Result<Table, LoadError> {
        let bucket = table_id.bucket();
        self.ensure_bucket(&bucket)
            .await
            .map_err(at(LoadStep::CreateBucket(bucket)))?;
        let header = self
            .upload_header(&new.columns)
            .await
            .map_err(at(LoadStep::UploadHeader))?;
        let options = CreateTableOptions {
            primary_key: new.primary_key.clone(),
            ..Default::default()
        };
        let table = self
            .create_table(table_id, header, &options)
            .await
            .map_err(at(LoadStep::CreateTable(table_id.clone())))?;
        tracing::info!(
            "created table {table_id} (primary key: [{}])",
            new.primary_key.join(", ")
        );
        Ok(table)
    }

    /// A new table from a workspace object: bucket first, then one job creates and fills the table (no
    /// rows to delete in a table that did not exist).
    async fn create_from_workspace(
        &self,
        table_id: &TableId,
        object: &WorkspaceObject,
        new: &NewTable,
    ) -> Result<LoadOutcome, LoadError> {
        let bucket = table_id.bucket();
        self.ensure_bucket(&bucket)
            .await
            .map_err(at(LoadStep::CreateBucket(bucket)))?;
        let (table, import) = self
            .create_table_from_workspace(table_id, object, &new.primary_key)
            .await
            .map_err(at(LoadStep::CreateTable(table_id.clone())))?;
        tracing::info!(
            "created table {table_id} from workspace table {} (primary key: [{}])",
            object.object,
            new.primary_key.join(", ")
        );
        Ok(LoadOutcome {
            import,
            created: Some(table),
        })
    }

    async fn delete_and_import(
        &self,
        table_id: &TableId,
        source: &DataSource,
        spec: &LoadSpec,
    ) -> Result<ImportOutcome, LoadError> {
        for rule in &spec.delete_first {
            let deleted = self
                .delete_rows(table_id, rule)
                .await
                .map_err(at(LoadStep::DeleteRows))?;
            tracing::info!("{table_id}: deleted {deleted} rows ({})", rule.describe());
        }
        match source {
            DataSource::File(file_id) => self
                .import_table(table_id, *file_id, &spec.import)
                .await
                .map_err(at(LoadStep::Import)),
            DataSource::Workspace(object) => self
                .import_from_workspace(
                    table_id,
                    object,
                    spec.import.incremental,
                    spec.import.columns.as_deref(),
                )
                .await
                .map_err(at(LoadStep::ImportFromWorkspace)),
        }
    }

    /// Drops a table this load created when it is still empty after the failure.
    async fn drop_if_empty(&self, table_id: &TableId) {
        match self.get_table_for_write(table_id).await {
            Ok(Some(t)) if t.rows_count == 0 => match self.drop_table(table_id).await {
                Ok(()) => tracing::info!(
                    "dropped {table_id}: created by this run and still empty after the failed load"
                ),
                Err(e) => tracing::warn!("could not drop the empty table {table_id}: {e}"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!("could not check {table_id} after the failed load: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_says_which() {
        let err = LoadError {
            step: LoadStep::CreateBucket("out.c-x".parse().unwrap()),
            source: Error::Invalid("no".into()),
        };
        assert_eq!(err.to_string(), "creating bucket out.c-x");
        assert!(err.is_user());
        assert_eq!(LoadStep::Import.to_string(), "loading the uploaded file");
    }
}
