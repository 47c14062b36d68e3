//! The emulator's persistent state: buckets, table metadata, files, objects, access keys and jobs, kept in one
//! JSON document (`meta.json`) that is rewritten atomically (temp file + rename) after each change. Table rows
//! and object bytes live in their own files beside it; a table's metadata names the generation of its data
//! file, so a new generation becomes visible only when the metadata that points to it is renamed into place.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Name of the single S3 bucket that holds every file.
pub(crate) const FILES_BUCKET: &str = "kbc-sapi-files";
pub(crate) const REGION: &str = "us-east-1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BucketRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) stage: String,
    pub(crate) description: String,
    pub(crate) created: i64,
    pub(crate) last_change_date: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TableRecord {
    pub(crate) id: String,
    pub(crate) bucket_id: String,
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) columns: Vec<String>,
    pub(crate) primary_key: Vec<String>,
    pub(crate) created: i64,
    pub(crate) last_import_date: Option<i64>,
    pub(crate) last_change_date: Option<i64>,
    pub(crate) rows_count: u64,
    pub(crate) data_size_bytes: u64,
    /// Generation of the data file `tables/<id>/data.<gen>.csv`; 0 = no file yet (empty table).
    pub(crate) data_gen: u64,
    /// Import stamp (unix seconds) of the newest load; each load of this table gets a strictly greater one.
    pub(crate) last_stamp: i64,
    /// Export cache: canonical export parameters → file id, valid for the current `data_gen` only.
    #[serde(default)]
    pub(crate) export_cache: BTreeMap<String, u64>,
    /// Table metadata entries `{id, key, value, provider, timestamp}`.
    #[serde(default)]
    pub(crate) metadata: Vec<serde_json::Value>,
    /// Column name → metadata entries.
    #[serde(default)]
    pub(crate) column_metadata: BTreeMap<String, Vec<serde_json::Value>>,
    /// The `definition` of a typed table (created with `tables-definition`); None for string tables.
    #[serde(default)]
    pub(crate) definition: Option<serde_json::Value>,
}

impl TableRecord {
    /// A new, empty table: no data file, no loads yet.
    pub(crate) fn new(
        id: &str,
        bucket_id: &str,
        name: &str,
        columns: Vec<String>,
        primary_key: Vec<String>,
        created: i64,
    ) -> Self {
        TableRecord {
            id: id.to_owned(),
            bucket_id: bucket_id.to_owned(),
            name: name.to_owned(),
            display_name: name.to_owned(),
            columns,
            primary_key,
            created,
            last_import_date: None,
            last_change_date: None,
            rows_count: 0,
            data_size_bytes: 0,
            data_gen: 0,
            last_stamp: 0,
            export_cache: Default::default(),
            metadata: Vec::new(),
            column_metadata: Default::default(),
            definition: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileRecord {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) is_sliced: bool,
    pub(crate) is_encrypted: bool,
    pub(crate) is_public: bool,
    pub(crate) is_permanent: bool,
    pub(crate) size_bytes: u64,
    pub(crate) tags: Vec<String>,
    pub(crate) created: i64,
    pub(crate) run_id: Option<String>,
    pub(crate) access_key_id: String,
    pub(crate) content_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccessKey {
    pub(crate) secret: String,
    pub(crate) session_token: String,
    pub(crate) expiration: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectMeta {
    /// File name under `objects/`.
    pub(crate) blob: String,
    pub(crate) size: u64,
    pub(crate) etag: String,
    pub(crate) content_type: Option<String>,
    pub(crate) content_disposition: Option<String>,
    pub(crate) last_modified: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MultipartUpload {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) content_type: Option<String>,
    /// part number → (blob name, size, etag)
    pub(crate) parts: BTreeMap<u32, (String, u64, String)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    pub(crate) next_id: u64,
    pub(crate) buckets: BTreeMap<String, BucketRecord>,
    pub(crate) tables: BTreeMap<String, TableRecord>,
    pub(crate) files: BTreeMap<u64, FileRecord>,
    pub(crate) jobs: BTreeMap<u64, JobRecord>,
    pub(crate) access_keys: BTreeMap<String, AccessKey>,
    /// `bucket/key` → object.
    pub(crate) objects: BTreeMap<String, ObjectMeta>,
    pub(crate) uploads: BTreeMap<String, MultipartUpload>,
    /// The project's settings (features, branch storage); edit `meta.json` or use
    /// `Emulator::set_project` to choose them.
    #[serde(default)]
    pub(crate) project: Project,
    /// Development branches by id (the default branch is implicit).
    #[serde(default)]
    pub(crate) dev_branches: BTreeMap<u64, DevBranch>,
    /// Workspaces by id; each one's data is a DuckDB file under `workspaces/<id>/`.
    #[serde(default)]
    pub(crate) workspaces: BTreeMap<u64, WorkspaceRecord>,
}

/// A workspace as the store keeps it (the API's workspace object is built from it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkspaceRecord {
    pub(crate) id: u64,
    pub(crate) name: String,
    /// The branch it was created in: 1 (default) or a development branch's id.
    pub(crate) branch_id: u64,
    pub(crate) component: Option<String>,
    pub(crate) configuration_id: Option<String>,
    pub(crate) created: i64,
    /// `snowflake` or `bigquery` (the engine is DuckDB either way).
    pub(crate) backend: String,
    pub(crate) backend_size: Option<String>,
    pub(crate) read_only_storage_access: bool,
    pub(crate) login_type: String,
}

impl WorkspaceRecord {
    /// The workspace's own schema, its connection's `schema` and `user`.
    pub(crate) fn schema(&self) -> String {
        format!("WORKSPACE_{}", self.id)
    }
}

/// A Storage job as the store keeps it and `jobs/{id}` shows it: the fields are in the wire's order, and
/// `meta.json` holds the same JSON (so stores written before jobs were typed still load).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobRecord {
    pub(crate) id: u64,
    pub(crate) status: JobStatus,
    pub(crate) url: String,
    pub(crate) table_id: Option<String>,
    pub(crate) operation_name: String,
    pub(crate) operation_params: serde_json::Value,
    pub(crate) created_time: String,
    pub(crate) start_time: Option<String>,
    pub(crate) end_time: Option<String>,
    pub(crate) run_id: Option<String>,
    /// What the operation returned: `null` until it succeeds (or fails with results).
    #[serde(default)]
    pub(crate) results: serde_json::Value,
    pub(crate) creator_token: CreatorToken,
    pub(crate) metrics: JobMetrics,
    /// Only on failed jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<JobErrorRecord>,
}

impl JobRecord {
    /// The job as the API answers it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Ends the job in `error`.
    pub(crate) fn fail(&mut self, code: &str, message: String) {
        self.status = JobStatus::Error;
        self.error = Some(JobErrorRecord {
            code: code.to_owned(),
            message,
            exception_id: super::error::exception_id(),
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobStatus {
    Waiting,
    Processing,
    Success,
    Error,
}

impl JobStatus {
    pub(crate) fn is_finished(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Error)
    }
}

/// The token a job names as its creator (the emulator has one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CreatorToken {
    pub(crate) id: String,
    pub(crate) description: String,
}

/// A job's transfer metrics; the emulator reports none (all zero).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobMetrics {
    pub(crate) in_compressed: bool,
    pub(crate) in_bytes: u64,
    pub(crate) in_bytes_uncompressed: u64,
    pub(crate) out_compressed: bool,
    pub(crate) out_bytes: u64,
    pub(crate) out_bytes_uncompressed: u64,
}

/// The `error` of a failed job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobErrorRecord {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) exception_id: String,
}

/// How the emulated project and stack are set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// The stack's features, listed in the API index (e.g. `disable-legacy-bucket-prefix`).
    #[serde(default)]
    pub features: Vec<String>,
    /// The project's features, listed in `tokens/verify` as `owner.features`.
    #[serde(default)]
    pub project_features: Vec<String>,
    /// Development branches have their own storage (the platform's `protected-default-branch` project
    /// feature, added to `owner.features` when set). Without it, branch-scoped table, bucket and file
    /// requests of a development branch are refused.
    #[serde(default)]
    pub branch_storage: bool,
}

/// A development branch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DevBranch {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) created: i64,
}

impl Meta {
    /// A fresh id, unique across every kind of object (files, jobs, blobs).
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Issues a new S3 access key (temporary-credentials style) valid for 12 hours; returns its id.
    pub(crate) fn issue_access_key(&mut self) -> String {
        let id = format!(
            "ASIAEMU{}",
            &uuid::Uuid::new_v4().simple().to_string()[..13].to_ascii_uppercase()
        );
        self.access_keys.insert(
            id.clone(),
            AccessKey {
                secret: uuid::Uuid::new_v4().simple().to_string(),
                session_token: format!("emulator-session-{}", uuid::Uuid::new_v4().simple()),
                expiration: super::timefmt::now_secs() + 12 * 3600,
            },
        );
        id
    }

    /// Registers a finished blob (already in `objects/`) as `bucket/key`. Returns the blob it replaced, for
    /// the caller to remove once the change is saved.
    pub(crate) fn put_object(
        &mut self,
        bucket: &str,
        key: &str,
        obj: ObjectMeta,
    ) -> Option<String> {
        self.objects
            .insert(object_id(bucket, key), obj)
            .map(|old| old.blob)
    }
}

/// Read access to the metadata: derefs to [`Meta`] but cannot change it (changes go through
/// [`Store::update`], which saves them).
pub(crate) struct MetaRef<'a>(MutexGuard<'a, Meta>);

impl std::ops::Deref for MetaRef<'_> {
    type Target = Meta;
    fn deref(&self) -> &Meta {
        &self.0
    }
}

/// The metadata could not be saved (the change stays in memory, unsaved).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct PersistError(#[from] pub std::io::Error);

/// The store: metadata behind a mutex plus the folder layout.
pub(crate) struct Store {
    root: PathBuf,
    meta: Mutex<Meta>,
    table_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises writers of `meta.json` so a slow rename cannot overwrite a newer snapshot.
    persist_lock: Mutex<()>,
}

impl Store {
    /// Opens (or creates) the store at `root`. Jobs that were unfinished when the previous process stopped
    /// are marked failed, since their work died with it.
    pub(crate) fn open(root: &Path) -> std::io::Result<Store> {
        for sub in ["tables", "objects", "tmp", "workspaces"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let path = root.join("meta.json");
        let mut meta: Meta = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not valid: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(e),
        };
        for job in meta.jobs.values_mut() {
            if !job.status.is_finished() {
                job.fail(
                    "applicationError",
                    "The emulator was restarted while the job was running.".into(),
                );
            }
        }
        remove_leftovers(root, &meta);
        Ok(Store {
            root: root.to_owned(),
            meta: Mutex::new(meta),
            table_locks: Mutex::new(HashMap::new()),
            persist_lock: Mutex::new(()),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Locks the metadata for reading. Never hold the guard across I/O on table data or an `.await`.
    pub(crate) fn read(&self) -> MetaRef<'_> {
        MetaRef(self.guard())
    }

    fn guard(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The one way to change the metadata: locks it, applies `change`, and saves the snapshot. A change that
    /// is not saved is reported, never dropped: the caller answers 500 or logs it.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut Meta) -> T) -> Result<T, PersistError> {
        let out = change(&mut self.guard());
        self.persist()?;
        Ok(out)
    }

    /// [`Store::update`] for a change that may be refused: when `change` fails nothing is saved, so it must
    /// fail before it changes anything.
    pub(crate) fn try_update<T, E: From<PersistError>>(
        &self,
        change: impl FnOnce(&mut Meta) -> Result<T, E>,
    ) -> Result<T, E> {
        let out = change(&mut self.guard())?;
        self.persist()?;
        Ok(out)
    }

    /// A fresh id (see [`Meta::next_id`]) without saving: anything named by it is saved later together with
    /// the counter, and what a crash leaves unsaved is removed at the next start.
    pub(crate) fn next_id(&self) -> u64 {
        self.guard().next_id()
    }

    /// Writes the metadata snapshot atomically. Takes the metadata lock after the writer lock (never the
    /// other way round), so callers must not hold the metadata lock.
    fn persist(&self) -> Result<(), PersistError> {
        let _writer = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = serde_json::to_vec(&*self.guard()).map_err(|e| {
            std::io::Error::other(format!("cannot serialise the emulator metadata: {e}"))
        })?;
        let tmp = self.tmp_path("meta");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.root.join("meta.json"))?;
        Ok(())
    }

    /// A unique temp path inside the store (same file system, so rename is atomic).
    pub(crate) fn tmp_path(&self, hint: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{hint}-{}", uuid::Uuid::new_v4().simple()))
    }

    pub(crate) fn table_dir(&self, table_id: &str) -> PathBuf {
        self.root.join("tables").join(table_id)
    }

    pub(crate) fn table_data_path(&self, table_id: &str, gen_: u64) -> PathBuf {
        self.table_dir(table_id).join(format!("data.{gen_}.csv"))
    }

    /// The DuckDB file of a workspace. Its file name makes its catalog `KBC_EMULATOR`, the `database` of
    /// the workspace's connection.
    pub(crate) fn workspace_db_path(&self, id: u64) -> PathBuf {
        self.root
            .join("workspaces")
            .join(id.to_string())
            .join("KBC_EMULATOR.duckdb")
    }

    pub(crate) fn blob_path(&self, blob: &str) -> PathBuf {
        self.root.join("objects").join(blob)
    }

    /// The lock that serialises jobs on one table.
    pub(crate) fn table_lock(&self, table_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.table_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(table_id.to_owned()).or_default().clone()
    }

    /// Path of an object's bytes, if the object exists.
    pub(crate) fn object_path(&self, bucket: &str, key: &str) -> Option<(PathBuf, ObjectMeta)> {
        let meta = self.read();
        meta.objects
            .get(&object_id(bucket, key))
            .map(|o| (self.blob_path(&o.blob), o.clone()))
    }

    /// Deletes the bytes of blobs that saved metadata no longer names (after the [`Store::update`] that
    /// dropped them: a crash before it keeps them, one after it leaves only leftovers for the next start).
    pub(crate) fn remove_blobs(&self, blobs: impl IntoIterator<Item = String>) {
        for b in blobs {
            let _ = std::fs::remove_file(self.blob_path(&b));
        }
    }

    /// A fresh blob name under `objects/`.
    pub(crate) fn new_blob(&self) -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// Removes what interrupted writes left behind: temp files, table generations and blobs that the metadata
/// does not point to (a crash between writing data and renaming `meta.json` leaves exactly those).
fn remove_leftovers(root: &Path, meta: &Meta) {
    let remove_unlisted = |dir: PathBuf, keep: &dyn Fn(&str) -> bool| {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep(&name) {
                    let path = e.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        }
    };
    remove_unlisted(root.join("tmp"), &|_| false);
    remove_unlisted(root.join("tables"), &|name| meta.tables.contains_key(name));
    // A workspace deleted (or never saved) while the process died.
    remove_unlisted(root.join("workspaces"), &|name| {
        name.parse::<u64>()
            .is_ok_and(|id| meta.workspaces.contains_key(&id))
    });
    for t in meta.tables.values() {
        let current = format!("data.{}.csv", t.data_gen);
        remove_unlisted(root.join("tables").join(&t.id), &|name| name == current);
    }
    let mut blobs: std::collections::HashSet<&str> =
        meta.objects.values().map(|o| o.blob.as_str()).collect();
    for u in meta.uploads.values() {
        blobs.extend(u.parts.values().map(|(b, _, _)| b.as_str()));
    }
    remove_unlisted(root.join("objects"), &|name| blobs.contains(name));
}

pub(crate) fn object_id(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// Writes `bytes` to `path` atomically through a temp file in the store.
pub(crate) fn write_atomic(store: &Store, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = store.tmp_path("w");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&tmp, path)
}
