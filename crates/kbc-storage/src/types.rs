//! Typed requests and responses of the Storage API.
//!
//! Responses are parsed leniently where the API is inconsistent (ids that are numbers in one place and
//! strings in another, `null` where a list is expected, `[]` where an object is expected). Anything that
//! carries a credential or a presigned URL is a [`Secret`], so `Debug` output never shows it and
//! [`crate::secret::redact`] masks it.

use crate::dialect::{Delimiter, Enclosure};
use crate::secret::Secret;
use serde::{Deserialize, Deserializer, Serialize};

/// `GET tokens/verify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    #[serde(deserialize_with = "de_string")]
    pub id: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub description: String,
    #[serde(default)]
    pub is_master_token: bool,
    #[serde(default)]
    pub can_manage_buckets: bool,
    /// `{"in.c-main": "read"}`; `[]` when there are none.
    #[serde(default)]
    pub bucket_permissions: serde_json::Value,
    pub owner: Owner,
}

/// The project a token belongs to.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    #[serde(deserialize_with = "de_string")]
    pub id: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    /// `aws`, `azure` or `gcp`.
    #[serde(default)]
    pub file_storage_provider: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub features: Vec<String>,
    #[serde(default)]
    pub default_backend: Option<String>,
}

/// A bucket.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub id: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub stage: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub last_change_date: Option<String>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default, deserialize_with = "de_u64_lenient")]
    pub rows_count: u64,
    #[serde(default, deserialize_with = "de_u64_lenient")]
    pub data_size_bytes: u64,
}

/// A table (detail, or a list item with `include=columns`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    pub id: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Filled from `bucket.id`, or from the table id when the response has no bucket.
    #[serde(default, deserialize_with = "de_null_default")]
    pub bucket_id: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub columns: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub primary_key: Vec<String>,
    #[serde(default, deserialize_with = "de_u64_lenient")]
    pub rows_count: u64,
    #[serde(default, deserialize_with = "de_u64_lenient")]
    pub data_size_bytes: u64,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub last_import_date: Option<String>,
    #[serde(default)]
    pub last_change_date: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub is_typed: bool,
    #[serde(default)]
    pub is_alias: bool,
    #[serde(default, skip_serializing)]
    pub bucket: Option<Bucket>,
}

impl Table {
    /// Fills `bucket_id` (the list and detail responses carry it only inside `bucket`).
    pub(crate) fn normalized(mut self) -> Self {
        if self.bucket_id.is_empty() {
            self.bucket_id = match &self.bucket {
                Some(b) if !b.id.is_empty() => b.id.clone(),
                _ => self
                    .id
                    .rsplit_once('.')
                    .map(|(b, _)| b.to_owned())
                    .unwrap_or_default(),
            };
        }
        self
    }
}

/// A Storage job (`GET jobs/{id}`, or the body of a 202 answer).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(deserialize_with = "de_u64_lenient")]
    pub id: u64,
    /// `waiting`, `processing`, `success` or `error`.
    pub status: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub operation_name: String,
    #[serde(default)]
    pub table_id: Option<String>,
    #[serde(default)]
    pub results: serde_json::Value,
    #[serde(default)]
    pub error: Option<JobError>,
    #[serde(default)]
    pub operation_params: serde_json::Value,
    #[serde(default)]
    pub created_time: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
}

impl Job {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "success" | "error")
    }
}

/// The `results` of a finished export job: the file holding the data.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportJobResult {
    pub file: ExportedFile,
    /// Whether Storage answered from its export cache.
    #[serde(default, deserialize_with = "de_null_default")]
    pub cache_hit: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExportedFile {
    #[serde(deserialize_with = "de_u64_lenient")]
    pub id: u64,
}

/// The `error` of a failed job.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    #[serde(default, deserialize_with = "de_opt_string")]
    pub code: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub message: String,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub exception_id: Option<String>,
}

/// A file in File Storage (`files/prepare` answer, or `files/{id}?federationToken=1`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    #[serde(deserialize_with = "de_u64_lenient")]
    pub id: u64,
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    #[serde(default)]
    pub is_sliced: bool,
    #[serde(default)]
    pub is_encrypted: bool,
    #[serde(default, deserialize_with = "de_u64_lenient")]
    pub size_bytes: u64,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Presigned: the data, or the manifest of a sliced file.
    #[serde(default)]
    pub url: Option<Secret>,
    // Download side (federationToken=1).
    #[serde(default)]
    pub s3_path: Option<S3Path>,
    #[serde(default)]
    pub credentials: Option<AwsCredentials>,
    #[serde(default)]
    pub abs_path: Option<AbsPath>,
    #[serde(default)]
    pub abs_credentials: Option<AbsCredentials>,
    #[serde(default)]
    pub gcs_path: Option<GcsPath>,
    #[serde(default)]
    pub gcs_credentials: Option<GcsCredentials>,
    // Upload side (files/prepare).
    #[serde(default)]
    pub upload_params: Option<S3UploadParams>,
    #[serde(default)]
    pub abs_upload_params: Option<AbsUploadParams>,
    #[serde(default)]
    pub gcs_upload_params: Option<GcsUploadParams>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct S3Path {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// When the credentials end (RFC 3339), if the API says.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub expiration: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AbsPath {
    pub container: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AbsCredentials {
    #[serde(rename = "SASConnectionString")]
    pub sas_connection_string: Secret,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GcsPath {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcsCredentials {
    #[serde(rename = "access_token")]
    pub access_token: Secret,
    #[serde(default)]
    pub project_id: Option<String>,
    /// Seconds the token lasts from when it was handed out (3599 on Keboola's GCP stacks).
    #[serde(default, rename = "expires_in")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct S3UploadParams {
    pub bucket: String,
    pub key: String,
    #[serde(default)]
    pub acl: Option<String>,
    pub credentials: AwsCredentials,
    #[serde(default, rename = "x-amz-server-side-encryption")]
    pub server_side_encryption: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbsUploadParams {
    pub blob_name: String,
    #[serde(default)]
    pub account_name: Option<String>,
    pub container: String,
    pub abs_credentials: AbsCredentials,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcsUploadParams {
    pub bucket: String,
    pub key: String,
    #[serde(rename = "access_token")]
    pub access_token: Secret,
    #[serde(default)]
    pub project_id: Option<String>,
    /// Seconds the token lasts from when it was handed out.
    #[serde(default, rename = "expires_in")]
    pub expires_in: Option<u64>,
}

/// How an export lands on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadMode {
    /// One CSV file with exactly one header row.
    Merged,
    /// A folder of header-less, uncompressed slice files.
    Sliced,
}

/// How a row filter compares: `eq` (the value is one of the values) or `ne` (none of them). The API's
/// `gt`, `ge`, `lt` and `le` work on Snowflake only and are not offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    #[default]
    Eq,
    Ne,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
        }
    }
}

impl std::str::FromStr for Operator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "eq" => Ok(Operator::Eq),
            "ne" => Ok(Operator::Ne),
            other => Err(format!("unknown operator `{other}`, expected `eq` or `ne`")),
        }
    }
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row filter of an export or a rows delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhereFilter {
    pub column: String,
    pub operator: Operator,
    pub values: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
}

/// Options of `export-async`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Columns to export, in this order; empty = all.
    pub columns: Vec<String>,
    pub changed_since: Option<String>,
    pub changed_until: Option<String>,
    /// The deprecated single-filter form (`whereColumn`/`whereValues`/`whereOperator`).
    pub where_column: Option<String>,
    pub where_values: Vec<String>,
    pub where_operator: Option<Operator>,
    pub where_filters: Vec<WhereFilter>,
    pub limit: Option<u64>,
}

/// What an export produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    pub file_id: u64,
    pub cache_hit: bool,
    /// Uncompressed data bytes written (without the header).
    pub bytes: u64,
    /// Data rows written (CSV records, not lines).
    pub rows: u64,
    /// The columns of the data, in order (the header of a merged file).
    pub columns: Vec<String>,
    pub sliced: bool,
    pub job_id: u64,
}

/// Options of an upload to File Storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// The file name in File Storage; empty = the local file or folder name.
    pub name: String,
    pub tags: Vec<String>,
    /// Compress on the fly (files that are gzipped already are sent as they are).
    pub gzip: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            name: String::new(),
            tags: Vec::new(),
            gzip: true,
        }
    }
}

/// Options of `tables-async`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateTableOptions {
    pub primary_key: Vec<String>,
    pub delimiter: Option<Delimiter>,
    pub enclosure: Option<Enclosure>,
    /// The columns of header-less data (a sliced upload): the table is created from these, then loaded.
    pub columns: Option<Vec<String>>,
}

/// Options of `import-async`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    pub incremental: bool,
    /// The columns of header-less data; when set, the first line is data.
    pub columns: Option<Vec<String>>,
    pub delimiter: Option<Delimiter>,
    pub enclosure: Option<Enclosure>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub job_id: u64,
    pub imported_columns: Vec<String>,
    /// Rows in the table after the load.
    pub total_rows_count: u64,
    pub total_data_size_bytes: u64,
    pub warnings: Vec<String>,
}

/// Options of `DELETE tables/{id}/rows`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteRowsOptions {
    pub changed_since: Option<String>,
    pub changed_until: Option<String>,
    pub where_filters: Vec<WhereFilter>,
    /// Required to delete every row (no filters).
    pub allow_truncate: bool,
}

impl DeleteRowsOptions {
    /// The rule in words, for logs: `status ne [done, failed] and changed since -2 days`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .where_filters
            .iter()
            .map(|f| format!("{} {} [{}]", f.column, f.operator, f.values.join(", ")))
            .collect();
        if let Some(s) = &self.changed_since {
            parts.push(format!("changed since {s}"));
        }
        if let Some(u) = &self.changed_until {
            parts.push(format!("changed until {u}"));
        }
        parts.join(" and ")
    }
}

// --- lenient deserializers -------------------------------------------------------------------------------

/// `null` becomes the type's default.
pub(crate) fn de_null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A number or a numeric string; `null` is 0.
pub(crate) fn de_u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(0),
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| D::Error::custom(format!("expected a non-negative number, got {n}"))),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| D::Error::custom("expected a number in a string")),
        other => Err(D::Error::custom(format!(
            "expected a number, got {}",
            kind(&other)
        ))),
    }
}

/// A string or a number, as a string.
pub(crate) fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(de_opt_string(d)?.unwrap_or_default())
}

pub(crate) fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(D::Error::custom(format!(
            "expected a string, got {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_shapes_leniently() {
        let t: Table = serde_json::from_str(
            r#"{"id":"in.c-main.languages","name":"languages","primaryKey":["id"],"rowsCount":"5",
                "dataSizeBytes":null,"columns":["id","name"],"lastImportDate":null,"bucket":{"id":"in.c-main","name":"c-main"}}"#,
        )
        .unwrap();
        let t = t.normalized();
        assert_eq!(t.bucket_id, "in.c-main");
        assert_eq!(t.rows_count, 5);
        assert_eq!(t.data_size_bytes, 0);
        let job: Job = serde_json::from_str(
            r#"{"id":"23","status":"error","operationName":"tableImport","tableId":"in.c-main.languages","results":null,
                "error":{"code":"csvImport.columnsNotMatch","message":"missing","exceptionId":"exception-1a"}}"#,
        )
        .unwrap();
        assert_eq!(job.id, 23);
        assert_eq!(
            job.error.unwrap().code.as_deref(),
            Some("csvImport.columnsNotMatch")
        );
        let token: TokenInfo = serde_json::from_str(
            r#"{"id":"44","description":"x","token":"SECRET-TOKEN","bucketPermissions":[],
                "owner":{"id":58,"name":"P","features":null,"fileStorageProvider":"aws"}}"#,
        )
        .unwrap();
        assert_eq!(token.owner.id, "58");
        assert!(!format!("{token:?}").contains("SECRET-TOKEN"));
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let f: FileInfo = serde_json::from_str(
            r#"{"id":1,"isSliced":true,"provider":"aws","url":"https://s3/x?X-Amz-Signature=SIG",
                "s3Path":{"bucket":"b","key":"k"},
                "credentials":{"AccessKeyId":"AKIA-ID","SecretAccessKey":"SECRET-KEY","SessionToken":"SESSION"}}"#,
        )
        .unwrap();
        let text = format!("{f:?}");
        for secret in ["SIG", "AKIA-ID", "SECRET-KEY", "SESSION"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(
            f.credentials.unwrap().secret_access_key.expose(),
            "SECRET-KEY"
        );
    }
}
