//! Development branches and stack features, as the platform handles them.
//!
//! A run in a development branch talks to Storage in one of two ways, decided per project:
//!
//! - **Without branch storage** (the platform's "fake dev storage"): tables and files are the production
//!   ones, reached by plain paths. Writes go to the branch's own bucket, `{stage}.c-{branchId}-{name}`
//!   (output mapping's destination rewriting), so production data is never overwritten; reads use that
//!   bucket's table when it exists, else the production table (input-mapping's
//!   `FakeDevStorageTableRewriteHelper`).
//! - **With branch storage**: tables, buckets and files live in the branch, reached by
//!   `/v2/storage/branch/{id}/…` with unchanged ids; a read of a table the branch does not have falls
//!   back to the default branch (`RealDevStorageTableRewriteHelper`; the PHP `TableExporter` does the
//!   same on a 404).
//!
//! The platform's job runner chooses branch storage when the token's project has the feature
//! `protected-default-branch` (job-queue's `JobStorageApiClientOptionsFactory`, which sets the branch
//! wrapper's `useBranchStorage`); the client reads it from `tokens/verify` (`owner.features`). A branch id
//! that is the project's default branch (the platform sets `KBC_BRANCHID` for it too) is production.
//!
//! Stack features come from the API index (`GET /v2/storage?exclude=components`, as keboola-sdk-go reads
//! them), once per client: `disable-legacy-bucket-prefix` means the server no longer adds `c-` to new
//! bucket names, so the name is sent as it appears in the bucket id.

use super::Client;
use super::error::Error;
use super::ids::{BucketId, TableId};
use super::transport::Call;
use super::types::TokenInfo;
use serde::Deserialize;

/// The project feature that makes development branches use branch storage.
pub const BRANCH_STORAGE_FEATURE: &str = "protected-default-branch";
/// The stack feature under which the server keeps bucket names as given (no `c-` added).
pub const NO_BUCKET_PREFIX_FEATURE: &str = "disable-legacy-bucket-prefix";

/// Where a run's table and file requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchMode {
    /// Production (no branch given, or the default branch).
    Production,
    /// A development branch of a project without branch storage: production paths, writes to the
    /// branch's `c-{id}-` buckets.
    Prefixed { id: String },
    /// A development branch with branch storage: `branch/{id}/` paths, reads fall back to the default
    /// branch.
    BranchStorage { id: String },
}

impl BranchMode {
    /// The branch-path segment of branch-scoped calls, if any.
    pub(crate) fn path_branch(&self) -> Option<String> {
        match self {
            BranchMode::BranchStorage { id } => Some(id.clone()),
            _ => None,
        }
    }
}

/// The bucket name a branch without branch storage writes to: `c-main` → `c-{id}-main`, `main` →
/// `{id}-main` (input-mapping's `getNewSource`). A name already in the branch's bucket is kept, so the
/// rewrite can be applied to ids the client itself returned.
pub fn branch_bucket_name(name: &str, branch: &str) -> String {
    let (prefix, bare) = match name.strip_prefix("c-") {
        Some(rest) => ("c-", rest),
        None => ("", name),
    };
    let mine = format!("{branch}-");
    if bare.starts_with(&mine) {
        name.to_owned()
    } else {
        format!("{prefix}{mine}{bare}")
    }
}

/// `out.c-main` → `out.c-{id}-main`.
pub fn branch_bucket_id(bucket_id: &BucketId, branch: &str) -> Result<BucketId, Error> {
    Ok(bucket_id.with_name(&branch_bucket_name(bucket_id.name(), branch))?)
}

/// `out.c-main.t` → `out.c-{id}-main.t`.
pub fn branch_table_id(table_id: &TableId, branch: &str) -> Result<TableId, Error> {
    Ok(branch_bucket_id(&table_id.bucket(), branch)?.table(table_id.name())?)
}

/// `GET dev-branches/{id}`, the part we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DevBranch {
    #[serde(default)]
    is_default: bool,
}

/// The API index, the part we read: the stack's features and services.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Index {
    #[serde(default, deserialize_with = "super::types::de_null_default")]
    pub(crate) features: Vec<String>,
    #[serde(default, deserialize_with = "super::types::de_null_default")]
    pub(crate) services: Vec<Service>,
}

/// One service of the index (`{"id": "query", "url": ...}`).
#[derive(Debug, Deserialize)]
pub(crate) struct Service {
    pub(crate) id: String,
    pub(crate) url: String,
}

/// Where a read of a table was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadScope {
    /// The run's own scope (production, or the branch).
    Own,
    /// The default branch, after the branch did not have the table (branch storage only).
    DefaultBranch,
}

impl Client {
    /// The run's branch mode, found out on first use (token verify and the branch detail) and kept.
    pub async fn branch_mode(&self) -> Result<&BranchMode, Error> {
        self.inner
            .branch_mode
            .get_or_try_init(|| self.resolve_branch_mode())
            .await
    }

    async fn resolve_branch_mode(&self) -> Result<BranchMode, Error> {
        let transport = &self.inner.transport;
        let Some(id) = transport.branch().map(str::to_owned) else {
            transport.set_path_branch(None);
            return Ok(BranchMode::Production);
        };
        let branch: DevBranch = transport
            .json(&Call::get(format!("dev-branches/{id}")).global())
            .await
            .map_err(|e| e.with_subject(format!("development branch {id}")))?;
        let mode = if branch.is_default {
            BranchMode::Production
        } else {
            let storage = match self.inner.branch_storage {
                Some(known) => known,
                None => {
                    let token: TokenInfo =
                        transport.json(&Call::get("tokens/verify").global()).await?;
                    token
                        .owner
                        .features
                        .iter()
                        .any(|f| f == BRANCH_STORAGE_FEATURE)
                }
            };
            if storage {
                BranchMode::BranchStorage { id: id.clone() }
            } else {
                BranchMode::Prefixed { id: id.clone() }
            }
        };
        match &mode {
            BranchMode::Production => {
                tracing::debug!("branch {id} is the default branch: production paths")
            }
            BranchMode::Prefixed { id } => tracing::info!(
                "development branch {id} (no branch storage): writes go to c-{id}-… buckets, reads \
                 use them when the table exists there, else production"
            ),
            BranchMode::BranchStorage { id } => tracing::info!(
                "development branch {id} with branch storage: reads fall back to the default branch \
                 for tables the branch does not have"
            ),
        }
        transport.set_path_branch(mode.path_branch());
        Ok(mode)
    }

    /// The stack's features from the API index (see [`Client::stack_index`]).
    pub async fn stack_features(&self) -> Result<&[String], Error> {
        Ok(&self.stack_index().await?.features)
    }

    /// The API index, read once per client. An index that cannot be read (an old stack, a proxy) counts
    /// as one without features or services, which is the behaviour of every stack without them.
    pub(crate) async fn stack_index(&self) -> Result<&Index, Error> {
        self.inner
            .stack_index
            .get_or_try_init(|| async {
                let call = Call::get("").global().query("exclude", "components");
                match self.inner.transport.json::<Index>(&call).await {
                    Ok(index) => Ok(index),
                    Err(e) if e.is_auth() => Err(e),
                    Err(e) => {
                        tracing::warn!(
                            "cannot read the Storage API index ({e}); assuming no stack features"
                        );
                        Ok(Index::default())
                    }
                }
            })
            .await
    }

    /// Whether the stack keeps bucket names as given (`disable-legacy-bucket-prefix`).
    pub(crate) async fn keeps_bucket_names(&self) -> Result<bool, Error> {
        Ok(self
            .stack_features()
            .await?
            .iter()
            .any(|f| f == NO_BUCKET_PREFIX_FEATURE))
    }

    /// The table id a write of `table_id` goes to: the branch's bucket in a branch without branch storage,
    /// else the id itself.
    pub async fn table_id_for_write(&self, table_id: &TableId) -> Result<TableId, Error> {
        match self.branch_mode().await? {
            BranchMode::Prefixed { id } => branch_table_id(table_id, id),
            _ => Ok(table_id.clone()),
        }
    }

    /// The bucket id a write into `bucket_id` goes to (see [`Client::table_id_for_write`]).
    pub async fn bucket_id_for_write(&self, bucket_id: &BucketId) -> Result<BucketId, Error> {
        match self.branch_mode().await? {
            BranchMode::Prefixed { id } => branch_bucket_id(bucket_id, id),
            _ => Ok(bucket_id.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_buckets_are_named_as_the_platform_names_them() {
        assert_eq!(branch_bucket_name("c-main", "123"), "c-123-main");
        assert_eq!(branch_bucket_name("main", "123"), "123-main");
        // Already the branch's bucket: kept.
        assert_eq!(branch_bucket_name("c-123-main", "123"), "c-123-main");
        let table: TableId = "out.c-main.t".parse().unwrap();
        assert_eq!(branch_table_id(&table, "123").unwrap(), "out.c-123-main.t");
        let bucket: BucketId = "in.c-x".parse().unwrap();
        assert_eq!(branch_bucket_id(&bucket, "9").unwrap(), "in.c-9-x");
        assert!(branch_bucket_id(&bucket, "a.b").is_err());
    }
}
