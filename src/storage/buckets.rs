//! Bucket endpoints: list, detail, create.

use super::retry::Idempotency;
use super::transport::Call;
use super::types::Bucket;
use super::{Client, Error};
use reqwest::Method;

impl Client {
    /// `GET buckets`.
    pub async fn list_buckets(&self) -> Result<Vec<Bucket>, Error> {
        self.inner.transport.json(&Call::get("buckets")).await
    }

    /// `GET buckets/{id}`; `None` when it does not exist.
    pub async fn get_bucket(&self, bucket_id: &str) -> Result<Option<Bucket>, Error> {
        super::split_bucket_id(bucket_id)?;
        self.inner
            .transport
            .json_opt(&Call::get(format!("buckets/{bucket_id}")))
            .await
            .map_err(|e| e.with_subject(format!("bucket {bucket_id}")))
    }

    /// `POST buckets`. `name` is without the `c-` prefix (the server adds it). Creating a bucket twice is
    /// harmless, so the request is retried like a read; when a retry meets "already exists", the first
    /// attempt succeeded and the bucket is returned.
    pub async fn create_bucket(&self, stage: &str, name: &str) -> Result<Bucket, Error> {
        if !matches!(stage, "in" | "out") {
            return Err(Error::Invalid(format!(
                "bucket stage must be \"in\" or \"out\", not {stage:?}"
            )));
        }
        let name = name.strip_prefix("c-").unwrap_or(name);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::Invalid(format!(
                "bucket name {name:?} may contain only letters, digits, underscores and dashes"
            )));
        }
        let call = Call::new(Method::POST, "buckets", Idempotency::Idempotent)
            .json(serde_json::json!({ "stage": stage, "name": name }));
        match self.inner.transport.json::<Bucket>(&call).await {
            Ok(b) => Ok(b),
            // A retry met "already exists": the first attempt created it and its answer was lost.
            Err(Error::Api(e))
                if e.attempts > 1
                    && e.code
                        .as_deref()
                        .is_some_and(|c| c.to_ascii_lowercase().ends_with("alreadyexists")) =>
            {
                let id = format!("{stage}.c-{name}");
                self.get_bucket(&id).await?.ok_or_else(|| {
                    Error::Invalid(format!(
                        "bucket {id} was reported as existing but cannot be read"
                    ))
                })
            }
            Err(e) => Err(e.with_subject(format!("bucket {stage}.c-{name}"))),
        }
    }
}
