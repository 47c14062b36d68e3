//! Bucket endpoints: list, detail, create.

use super::branch::{BranchMode, branch_bucket_name};
use super::ids::BucketId;
use super::retry::Idempotency;
use super::transport::Call;
use super::types::Bucket;
use super::{Client, Error};
use reqwest::Method;

impl Client {
    /// `GET buckets`.
    pub async fn list_buckets(&self) -> Result<Vec<Bucket>, Error> {
        self.branch_mode().await?;
        self.inner.transport.json(&Call::get("buckets")).await
    }

    /// `GET buckets/{id}`; `None` when it does not exist. The id is used as given (no branch rewriting).
    pub async fn get_bucket(&self, bucket_id: &BucketId) -> Result<Option<Bucket>, Error> {
        self.branch_mode().await?;
        self.inner
            .transport
            .json_opt(&Call::get(format!("buckets/{bucket_id}")))
            .await
            .map_err(|e| e.with_subject(format!("bucket {bucket_id}")))
    }

    /// `POST buckets`. `name` is the bucket's name with or without `c-`: on stacks that add the prefix
    /// (all but those with `disable-legacy-bucket-prefix`) it is stripped before sending, elsewhere the name
    /// is sent as given, as keboola-sdk-go does. In a development branch without branch storage the
    /// bucket is the branch's (`c-{branchId}-name`).
    ///
    /// Creating a bucket twice is harmless, so the request is retried like a read; when a retry meets
    /// "already exists", the first attempt succeeded and the bucket is returned.
    pub async fn create_bucket(&self, stage: &str, name: &str) -> Result<Bucket, Error> {
        if !matches!(stage, "in" | "out") {
            return Err(Error::Invalid(format!(
                "bucket stage must be \"in\" or \"out\", not {stage:?}"
            )));
        }
        let name = match self.branch_mode().await? {
            BranchMode::Prefixed { id } => branch_bucket_name(name, id),
            _ => name.to_owned(),
        };
        let keep = self.keeps_bucket_names().await?;
        let sent = if keep {
            name.as_str()
        } else {
            name.strip_prefix("c-").unwrap_or(&name)
        };
        if sent.is_empty()
            || !sent
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::Invalid(format!(
                "bucket name {sent:?} may contain only letters, digits, underscores and dashes"
            )));
        }
        let id: BucketId = if keep {
            format!("{stage}.{sent}")
        } else {
            format!("{stage}.c-{sent}")
        }
        .parse()?;
        let call = Call::new(Method::POST, "buckets", Idempotency::Idempotent)
            .json(serde_json::json!({ "stage": stage, "name": sent }));
        match self.inner.transport.json::<Bucket>(&call).await {
            Ok(b) => Ok(b),
            // A retry met "already exists": the first attempt created it and its answer was lost.
            Err(Error::Api(e))
                if e.attempts > 1
                    && e.code
                        .as_deref()
                        .is_some_and(|c| c.to_ascii_lowercase().ends_with("alreadyexists")) =>
            {
                self.get_bucket(&id).await?.ok_or_else(|| {
                    Error::Invalid(format!(
                        "bucket {id} was reported as existing but cannot be read"
                    ))
                })
            }
            Err(e) => Err(e.with_subject(format!("bucket {id}"))),
        }
    }

    /// Makes sure the bucket a write into `bucket_id` goes to exists (the branch's bucket in a
    /// development branch without branch storage), creating it when needed, and returns it. A bucket
    /// whose name has no `c-` can be created only on stacks with `disable-legacy-bucket-prefix`.
    pub async fn ensure_bucket(&self, bucket_id: &BucketId) -> Result<Bucket, Error> {
        // Parallel loads into one new bucket: the first creates it, the others then find it.
        let _guard = self.inner.bucket_lock.lock().await;
        let target = self.bucket_id_for_write(bucket_id).await?;
        if let Some(b) = self.get_bucket(&target).await? {
            return Ok(b);
        }
        if !target.name().starts_with("c-") && !self.keeps_bucket_names().await? {
            return Err(Error::Invalid(format!(
                "bucket {target} does not exist and cannot be created: this stack adds \"c-\" to \
                 bucket names, so new buckets are named {}.c-…",
                target.stage()
            )));
        }
        // `create_bucket` makes the branch's name itself: give it the name as asked, so it is made once.
        match self
            .create_bucket(bucket_id.stage(), bucket_id.name())
            .await
        {
            Ok(b) => {
                tracing::info!("created bucket {}", b.id);
                Ok(b)
            }
            // Another job may have created it meanwhile; then all is well.
            Err(e) => match self.get_bucket(&target).await {
                Ok(Some(b)) => Ok(b),
                _ => Err(e),
            },
        }
    }
}
