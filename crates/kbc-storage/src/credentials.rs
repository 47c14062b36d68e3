//! File credentials that are renewed before they expire, for transfers longer than their lifetime.
//!
//! Keboola's file credentials are short-lived: GCS access tokens last an hour (`expires_in: 3599`), AWS
//! federation tokens carry an `Expiration`. A transfer that outlives them failed with 401/403. The API
//! renews them with `PUT files/{id}/refresh` (the blueprint's "Refresh File Credentials"; the PHP client's
//! `GCSUploader` does the same through its refresh wrapper). Each object_store request asks its credential
//! provider for a credential; this provider hands out the current one and fetches a new one first when
//! the current one ends within [`REFRESH_MARGIN`].

use super::error::Error;
use super::providers::Purpose;
use super::types::FileInfo;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Credentials are renewed when they end within this time (a request started just before expiry may
/// still run for minutes).
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Fetches the file with fresh credentials (`PUT files/{id}/refresh`).
pub(crate) type Fetch = Arc<dyn Fn() -> BoxFuture<'static, Result<FileInfo, Error>> + Send + Sync>;

/// How to renew a file's credentials.
#[derive(Clone)]
pub(crate) struct Refresh {
    pub file_id: u64,
    pub purpose: Purpose,
    pub fetch: Fetch,
}

/// Whether credentials ending at `expires` must be renewed at `now`. Credentials without a known end are
/// never renewed (they are as the API gave them).
pub(crate) fn needs_refresh(
    expires: Option<SystemTime>,
    now: SystemTime,
    margin: Duration,
) -> bool {
    expires.is_some_and(|end| now + margin >= end)
}

/// When credentials end: an RFC 3339 time (`Expiration` of AWS credentials), or `expires_in` seconds after
/// they were received (GCS).
pub(crate) fn expiry(
    expiration: Option<&str>,
    expires_in: Option<u64>,
    received: SystemTime,
) -> Option<SystemTime> {
    if let Some(at) = expiration.and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok()) {
        return Some(SystemTime::from(at));
    }
    expires_in.map(|s| received + Duration::from_secs(s))
}

/// A credential and when it ends.
pub(crate) type Dated<C> = (Arc<C>, Option<SystemTime>);

/// A credential provider that renews through Storage.
pub(crate) struct Refreshing<C> {
    current: tokio::sync::Mutex<Dated<C>>,
    refresh: Refresh,
    /// Reads the credential of this provider's kind from a refreshed file.
    extract: fn(&FileInfo, Purpose, SystemTime) -> Option<Dated<C>>,
}

impl<C> std::fmt::Debug for Refreshing<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshing")
            .field("file_id", &self.refresh.file_id)
            .finish_non_exhaustive()
    }
}

impl<C> Refreshing<C> {
    pub(crate) fn new(
        current: Dated<C>,
        refresh: Refresh,
        extract: fn(&FileInfo, Purpose, SystemTime) -> Option<Dated<C>>,
    ) -> Self {
        Refreshing {
            current: tokio::sync::Mutex::new(current),
            refresh,
            extract,
        }
    }

    /// The credential to use now, renewed first when it is about to end.
    pub(crate) async fn credential(&self) -> Result<Arc<C>, Error> {
        // One renewal at a time: parallel slice requests wait for it and then share the result.
        let mut current = self.current.lock().await;
        if needs_refresh(current.1, SystemTime::now(), REFRESH_MARGIN) {
            let file = (self.refresh.fetch)().await?;
            let fresh = (self.extract)(&file, self.refresh.purpose, SystemTime::now()).ok_or_else(
                || Error::Decode {
                    what: format!("the refreshed credentials of file {}", self.refresh.file_id),
                    message: "the answer has no credentials".into(),
                },
            )?;
            tracing::info!(
                "renewed the credentials of file {} before they expired",
                self.refresh.file_id
            );
            *current = fresh;
        }
        Ok(current.0.clone())
    }
}

#[async_trait::async_trait]
impl<C: std::fmt::Debug + Send + Sync + 'static> object_store::CredentialProvider
    for Refreshing<C>
{
    type Credential = C;

    async fn get_credential(&self) -> object_store::Result<Arc<C>> {
        self.credential()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "Storage file credentials",
                source: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn credentials_are_renewed_shortly_before_they_end() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let margin = Duration::from_secs(600);
        assert!(!needs_refresh(None, now, margin));
        assert!(!needs_refresh(
            Some(now + Duration::from_secs(3599)),
            now,
            margin
        ));
        assert!(needs_refresh(
            Some(now + Duration::from_secs(599)),
            now,
            margin
        ));
        assert!(needs_refresh(
            Some(now - Duration::from_secs(1)),
            now,
            margin
        ));
        // GCS: an hour after receipt; AWS: the stated time.
        assert_eq!(
            expiry(None, Some(3599), now),
            Some(now + Duration::from_secs(3599))
        );
        assert_eq!(
            expiry(Some("1970-01-12T13:46:40+00:00"), Some(5), now),
            Some(now)
        );
        assert_eq!(expiry(Some("garbage"), None, now), None);
    }

    #[tokio::test]
    async fn an_expiring_credential_is_fetched_again_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let fetch: Fetch = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            futures::FutureExt::boxed(async {
                Ok(serde_json::from_value::<FileInfo>(serde_json::json!({"id": 7})).unwrap())
            })
        });
        let provider = Refreshing::new(
            (
                Arc::new("old".to_owned()),
                Some(SystemTime::now() + Duration::from_secs(5)),
            ),
            Refresh {
                file_id: 7,
                purpose: Purpose::Download,
                fetch,
            },
            |_, _, now| {
                Some((
                    Arc::new("new".to_owned()),
                    Some(now + Duration::from_secs(3599)),
                ))
            },
        );
        assert_eq!(*provider.credential().await.unwrap(), "new");
        assert_eq!(*provider.credential().await.unwrap(), "new");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A credential far from its end is used as it is.
        let provider = Refreshing::new(
            (
                Arc::new("valid".to_owned()),
                Some(SystemTime::now() + Duration::from_secs(3599)),
            ),
            Refresh {
                file_id: 7,
                purpose: Purpose::Download,
                fetch: Arc::new(|| {
                    futures::FutureExt::boxed(async {
                        Err::<FileInfo, Error>(Error::Invalid("not called".into()))
                    })
                }),
            },
            |_, _, _| None,
        );
        assert_eq!(*provider.credential().await.unwrap(), "valid");
    }
}
