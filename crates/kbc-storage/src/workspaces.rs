//! Storage API workspaces: an isolated schema in the project's own backend (Snowflake or BigQuery), filled
//! server-side by `input-mapping-load` or read in place with read-only storage access, and the import of
//! a workspace table back into Storage (`dataWorkspaceId` + `dataObject`), a copy inside the backend.
//! Create and delete are asynchronous jobs, as the platform's own workspace provider runs them.

use crate::Client;
use crate::error::Error;
use crate::ids::TableId;
use crate::retry::Idempotency;
use crate::transport::Call;
use crate::types::{ImportOutcome, Job, Table, de_null_default, de_u64_lenient};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// A workspace as the API describes it (never with credentials: the runner creates `loginType: none`
/// workspaces and reaches them through the Query Service only).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    #[serde(deserialize_with = "de_u64_lenient")]
    pub id: u64,
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub read_only_storage_access: bool,
    #[serde(default)]
    pub connection: WorkspaceConnection,
}

/// Where the workspace lives in the backend.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkspaceConnection {
    #[serde(default, deserialize_with = "de_null_default")]
    pub backend: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub database: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub schema: String,
}

/// What workspace to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewWorkspace {
    /// `snowflake` or `bigquery`; `None`: the project's default backend.
    pub backend: Option<String>,
    /// `backendSize` (Snowflake, feature-gated).
    pub size: Option<String>,
    pub read_only_storage_access: bool,
    /// `none`: no direct credentials, the workspace is used through the Query Service only.
    pub login_type: Option<String>,
    pub name: String,
    /// `(component id, configuration id)`: a configuration workspace, attributed to and visible on the
    /// configuration, as the platform creates them for jobs.
    pub configuration: Option<(String, String)>,
}

/// The import of a workspace object into a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceObject {
    pub workspace_id: u64,
    /// The table (or view) in the workspace.
    pub object: String,
}

impl WorkspaceObject {
    fn body(&self) -> Value {
        json!({ "dataWorkspaceId": self.workspace_id, "dataObject": self.object })
    }
}

impl Client {
    /// Creates a workspace (`POST …/workspaces?async=1`) and waits for the job; the job's results are the
    /// workspace.
    pub async fn create_workspace(&self, new: &NewWorkspace) -> Result<Workspace, Error> {
        self.branch_mode().await?;
        let path = match &new.configuration {
            Some((component, config)) => {
                format!("components/{component}/configs/{config}/workspaces")
            }
            None => "workspaces".to_owned(),
        };
        let mut body = json!({ "name": new.name, "networkPolicy": "system" });
        if let Some(backend) = &new.backend {
            body["backend"] = backend.clone().into();
        }
        if let Some(size) = &new.size {
            body["backendSize"] = size.clone().into();
        }
        if new.read_only_storage_access {
            body["readOnlyStorageAccess"] = true.into();
        }
        if let Some(login) = &new.login_type {
            body["loginType"] = login.clone().into();
        }
        let call = Call::new(Method::POST, path, Idempotency::CreatesJob)
            .query("async", "1")
            .json(body)
            .hint(format!(
                "look for a workspace named {} in the project and delete it",
                new.name
            ));
        let job = self.run_job(call).await?;
        decode_results(&job, "workspace create")
    }

    /// `GET …/workspaces/{id}`; `None` when it does not exist.
    pub async fn workspace(&self, id: u64) -> Result<Option<Workspace>, Error> {
        self.branch_mode().await?;
        self.inner
            .transport
            .json_opt(&Call::get(format!("workspaces/{id}")))
            .await
    }

    /// `GET …/workspaces`: the workspaces of the run's branch.
    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>, Error> {
        self.branch_mode().await?;
        self.inner.transport.json(&Call::get("workspaces")).await
    }

    /// Deletes a workspace (`DELETE …/workspaces/{id}?async=1`) and waits for the job. A workspace that is
    /// already gone counts as deleted.
    pub async fn delete_workspace(&self, id: u64) -> Result<(), Error> {
        self.branch_mode().await?;
        // Deleting twice deletes nothing more: safe to repeat.
        let call = Call::new(
            Method::DELETE,
            format!("workspaces/{id}"),
            Idempotency::Idempotent,
        )
        .query("async", "1");
        match self.run_job(call).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.with_subject(format!("workspace {id}"))),
        }
    }

    /// `POST …/workspaces/{id}/input-mapping-load`: the platform's input mapping into a workspace, done by
    /// the backend (CLONE, VIEW or COPY as it sees fit). `input` are the snake_case input-mapping items.
    pub async fn load_workspace(
        &self,
        id: u64,
        input: Vec<Value>,
        preserve: bool,
    ) -> Result<Job, Error> {
        self.branch_mode().await?;
        let call = Call::new(
            Method::POST,
            format!("workspaces/{id}/input-mapping-load"),
            Idempotency::CreatesJob,
        )
        .json(json!({ "input": input, "preserve": preserve }))
        .hint(format!("check the objects of workspace {id}"));
        self.run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("workspace {id}")))
    }

    /// `POST tables/{id}/import-async` from a workspace object; waits for the job.
    pub async fn import_from_workspace(
        &self,
        table_id: &TableId,
        source: &WorkspaceObject,
        incremental: bool,
        columns: Option<&[String]>,
    ) -> Result<ImportOutcome, Error> {
        let table_id = self.table_id_for_write(table_id).await?;
        let mut body = source.body();
        body["incremental"] = incremental.into();
        if let Some(columns) = columns {
            body["columns"] = columns.into();
        }
        let call = Call::new(
            Method::POST,
            format!("tables/{table_id}/import-async"),
            Idempotency::CreatesJob,
        )
        .json(body)
        .hint(format!(
            "check the last import of {table_id} (lastImportDate, events) before running again"
        ));
        let job = self
            .run_job(call)
            .await
            .map_err(|e| e.with_subject(format!("table {table_id}")))?;
        Ok(crate::tables::import_outcome(&job))
    }

    /// `POST buckets/{id}/tables-async` from a workspace object: creates the table with the object's
    /// columns and data in one job. Returns the table and what the job reports of the load.
    pub async fn create_table_from_workspace(
        &self,
        table_id: &TableId,
        source: &WorkspaceObject,
        primary_key: &[String],
    ) -> Result<(Table, ImportOutcome), Error> {
        let table_id = self.table_id_for_write(table_id).await?;
        let mut body = source.body();
        body["name"] = table_id.name().into();
        if !primary_key.is_empty() {
            body["primaryKey"] = primary_key.join(",").into();
        }
        let (job, table) = self.tables_async(&table_id, body).await?;
        // The job's results are the table as created and loaded.
        let outcome = ImportOutcome {
            job_id: job.id,
            imported_columns: table.columns.clone(),
            total_rows_count: table.rows_count,
            total_data_size_bytes: table.data_size_bytes,
            warnings: Vec::new(),
        };
        Ok((table, outcome))
    }
}

fn decode_results<T: serde::de::DeserializeOwned>(job: &Job, what: &str) -> Result<T, Error> {
    serde_json::from_value(job.results.clone()).map_err(|e| Error::Decode {
        what: format!("{what} job {}", job.id),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_reads_as_the_api_writes_it() {
        let w: Workspace = serde_json::from_value(json!({
            "id": "12", "name": "kbc-runner-1", "type": "table", "component": null,
            "readOnlyStorageAccess": true,
            "connection": {"backend": "snowflake", "database": "KBC_PRJ_1", "schema": "WORKSPACE_12",
                           "host": "x", "user": "WORKSPACE_12", "loginType": "none"}
        }))
        .unwrap();
        assert_eq!(w.id, 12);
        assert!(w.read_only_storage_access);
        assert_eq!(w.connection.schema, "WORKSPACE_12");
        let body = WorkspaceObject {
            workspace_id: 12,
            object: "out".into(),
        }
        .body();
        assert_eq!(body, json!({"dataWorkspaceId": 12, "dataObject": "out"}));
    }
}
