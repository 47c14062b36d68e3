//! Cloud file storage behind File Storage: builds an `object_store` client for AWS S3, Azure Blob Storage
//! or Google Cloud Storage from the credentials Keboola hands out, and maps manifest entry URLs
//! (`s3://bucket/key`, `azure://account.blob.core.windows.net/container/blob`, `gs://bucket/key`) to object
//! paths.
//!
//! Endpoint overrides let the same code run against local emulators: `AWS_ENDPOINT_URL_S3` /
//! `AWS_ENDPOINT_URL` (path-style requests, plain http allowed), the `BlobEndpoint=` of an Azure SAS
//! connection string, and `STORAGE_EMULATOR_HOST` for GCS.

use super::credentials::{self, Dated, Refresh, Refreshing};
use super::error::Error;
use super::secret::Secret;
use super::types::{AwsCredentials, FileInfo};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::sync::Arc;
use std::time::SystemTime;

/// Endpoint overrides for the cloud providers; [`Endpoints::from_env`] reads the standard variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`.
    pub s3: Option<String>,
    /// A GCS endpoint, e.g. `http://127.0.0.1:4443`.
    pub gcs: Option<String>,
}

impl Endpoints {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Endpoints {
            s3: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            gcs: var("STORAGE_EMULATOR_HOST").map(|h| {
                if h.contains("://") {
                    h
                } else {
                    format!("http://{h}")
                }
            }),
        }
    }
}

/// Where a file's objects live: a store, the file's base key in it, and the URL prefix manifests use.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub store: Arc<dyn ObjectStore>,
    /// The key of the file (for a sliced file, the prefix of its slices).
    pub key: String,
    /// `s3://bucket/`, `gs://bucket/`, `azure://account.blob.core.windows.net/container/`.
    pub url_prefix: String,
    /// The container name for Azure (entry URLs are matched on it).
    pub(crate) container: Option<String>,
    /// For messages: `s3://bucket/key`.
    pub display: String,
}

impl Location {
    /// The object path of a manifest entry URL, checked to lie in the same bucket or container.
    pub(crate) fn entry_path(&self, url: &str) -> Result<ObjectPath, Error> {
        let key = if let Some(container) = &self.container {
            // azure://acc.blob.core.windows.net/container/blob or https://host[/account]/container/blob
            let after_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
            let marker = format!("/{container}/");
            after_scheme
                .find(&marker)
                .map(|i| after_scheme[i + marker.len()..].to_owned())
        } else {
            url.strip_prefix(&self.url_prefix).map(str::to_owned)
        };
        match key {
            Some(k) if !k.is_empty() => Ok(object_path(&k)),
            _ => Err(Error::Decode {
                what: format!("the manifest of {}", self.display),
                message: format!(
                    "entry {} is not in {}",
                    super::error::scrub(url),
                    self.url_prefix
                ),
            }),
        }
    }

    /// The manifest entry URL of an object key.
    pub(crate) fn entry_url(&self, key: &str) -> String {
        format!("{}{key}", self.url_prefix)
    }
}

/// An object path from a key, keeping the key's bytes. `PathPart::from` would percent-encode
/// `% ~ # [ ] { } ^ | " < > \ * ?`, so a slice `part~1.csv` would be stored as `part%7E1.csv` while the
/// manifest names `part~1.csv`; `PathPart::parse` keeps them (the stores percent-encode the URL
/// themselves). Only parts `parse` refuses (control characters, `.`, `..`) fall back to the encoding.
pub(crate) fn object_path(key: &str) -> ObjectPath {
    use object_store::path::PathPart;
    ObjectPath::from_iter(
        key.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| PathPart::parse(s).unwrap_or_else(|_| PathPart::from(s))),
    )
}

/// The location of a file for download (`files/{id}?federationToken=1`).
pub(crate) fn for_download(
    file: &FileInfo,
    endpoints: &Endpoints,
    refresh: Option<Refresh>,
) -> Result<Location, Error> {
    let provider = file.provider.as_deref().unwrap_or("aws");
    match provider {
        "aws" => {
            let (path, creds) = match (&file.s3_path, &file.credentials) {
                (Some(p), Some(c)) => (p, c),
                _ => return Err(missing(file.id, "s3Path and credentials")),
            };
            let endpoint = s3_endpoint(endpoints, file, &path.bucket);
            s3(
                &path.bucket,
                &path.key,
                file.region.as_deref(),
                creds,
                None,
                endpoint,
                Purpose::Download,
                refresh,
            )
        }
        "azure" => {
            let (path, creds) = match (&file.abs_path, &file.abs_credentials) {
                (Some(p), Some(c)) => (p, c),
                _ => return Err(missing(file.id, "absPath and absCredentials")),
            };
            azure(
                &path.container,
                &path.name,
                None,
                &creds.sas_connection_string,
                Purpose::Download,
            )
        }
        "gcp" => {
            let (path, creds) = match (&file.gcs_path, &file.gcs_credentials) {
                (Some(p), Some(c)) => (p, c),
                _ => return Err(missing(file.id, "gcsPath and gcsCredentials")),
            };
            gcs(
                &path.bucket,
                &path.key,
                &creds.access_token,
                creds.expires_in,
                endpoints,
                Purpose::Download,
                refresh,
            )
        }
        other => Err(unknown(file.id, other)),
    }
}

/// The location to upload a prepared file to (`files/prepare` answer).
pub(crate) fn for_upload(
    file: &FileInfo,
    endpoints: &Endpoints,
    refresh: Option<Refresh>,
) -> Result<Location, Error> {
    let provider = file.provider.as_deref().unwrap_or("aws");
    match provider {
        "aws" => {
            let p = file
                .upload_params
                .as_ref()
                .ok_or_else(|| missing(file.id, "uploadParams"))?;
            let endpoint = s3_endpoint(endpoints, file, &p.bucket);
            s3(
                &p.bucket,
                &p.key,
                file.region.as_deref(),
                &p.credentials,
                p.server_side_encryption.as_deref(),
                endpoint,
                Purpose::Upload,
                refresh,
            )
        }
        "azure" => {
            let p = file
                .abs_upload_params
                .as_ref()
                .ok_or_else(|| missing(file.id, "absUploadParams"))?;
            azure(
                &p.container,
                &p.blob_name,
                p.account_name.as_deref(),
                &p.abs_credentials.sas_connection_string,
                Purpose::Upload,
            )
        }
        "gcp" => {
            let p = file
                .gcs_upload_params
                .as_ref()
                .ok_or_else(|| missing(file.id, "gcsUploadParams"))?;
            gcs(
                &p.bucket,
                &p.key,
                &p.access_token,
                p.expires_in,
                endpoints,
                Purpose::Upload,
                refresh,
            )
        }
        other => Err(unknown(file.id, other)),
    }
}

/// The AWS credentials of a refreshed file (the upload's or the download's, whichever it has).
fn fresh_aws(
    file: &FileInfo,
    purpose: Purpose,
    now: SystemTime,
) -> Option<Dated<object_store::aws::AwsCredential>> {
    let upload = file.upload_params.as_ref().map(|p| &p.credentials);
    let creds = match purpose {
        Purpose::Upload => upload.or(file.credentials.as_ref()),
        Purpose::Download => file.credentials.as_ref().or(upload),
    }?;
    Some((
        Arc::new(object_store::aws::AwsCredential {
            key_id: creds.access_key_id.expose().to_owned(),
            secret_key: creds.secret_access_key.expose().to_owned(),
            token: creds.session_token.as_ref().map(|t| t.expose().to_owned()),
        }),
        credentials::expiry(creds.expiration.as_deref(), None, now),
    ))
}

/// The GCS token of a refreshed file.
fn fresh_gcs(
    file: &FileInfo,
    purpose: Purpose,
    now: SystemTime,
) -> Option<Dated<object_store::gcp::GcpCredential>> {
    let upload = file
        .gcs_upload_params
        .as_ref()
        .map(|p| (&p.access_token, p.expires_in));
    let download = file
        .gcs_credentials
        .as_ref()
        .map(|c| (&c.access_token, c.expires_in));
    let (token, expires_in) = match purpose {
        Purpose::Upload => upload.or(download),
        Purpose::Download => download.or(upload),
    }?;
    Some((
        Arc::new(object_store::gcp::GcpCredential {
            bearer: token.expose().to_owned(),
        }),
        credentials::expiry(None, expires_in, now),
    ))
}

fn missing(id: u64, what: &str) -> Error {
    Error::Decode {
        what: format!("file {id}"),
        message: format!("the answer has no {what}"),
    }
}

fn unknown(id: u64, provider: &str) -> Error {
    Error::Decode {
        what: format!("file {id}"),
        message: format!("unknown file storage provider {provider:?} (expected aws, azure or gcp)"),
    }
}

fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 8,
        // Measured from the request's start: a long download cut after 10 minutes must still resume.
        retry_timeout: std::time::Duration::from_secs(30 * 60),
        ..Default::default()
    }
}

/// What a store is built for: the time limits differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Download,
    Upload,
}

/// No byte for this long ends a cloud request: the transfer has stalled.
pub(crate) const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The HTTP options of a store. object_store's default ends every request after 30 s, so one big object
/// on a slow link failed while its bytes were still flowing. Instead, a request fails when it stalls: no
/// byte read for [`STALL_LIMIT`] (reqwest's read timeout, which restarts with every read). A request body
/// being sent has no such limit, so uploads, which go in parts of at most `upload::PART_SIZE`, keep a
/// whole-request limit sized for one part on a slow link (8 MiB in 10 min is 14 KB/s).
pub(crate) fn client_options(purpose: Purpose, allow_http: bool) -> object_store::ClientOptions {
    let options = object_store::ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(std::time::Duration::from_secs(10))
        .with_read_timeout(STALL_LIMIT);
    match purpose {
        Purpose::Download => options.with_timeout_disabled(),
        Purpose::Upload => options.with_timeout(std::time::Duration::from_secs(10 * 60)),
    }
}

/// The S3 endpoint to use: the configured override, else the origin of the file's own presigned URL when
/// that is a path-style URL of the same bucket on a host that is not AWS (an S3-compatible store, such as a
/// local Storage emulator, tells us where it is this way); else AWS itself.
fn s3_endpoint(endpoints: &Endpoints, file: &FileInfo, bucket: &str) -> Option<String> {
    if let Some(endpoint) = &endpoints.s3 {
        return Some(endpoint.clone());
    }
    let url = url::Url::parse(file.url.as_ref()?.expose()).ok()?;
    let host = url.host_str()?;
    if host.ends_with(".amazonaws.com") || host == "amazonaws.com" {
        return None;
    }
    let first = url.path_segments()?.next()?;
    if first != bucket {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

// One argument per fact of the file; a struct for a private helper with two callers would add nothing.
#[allow(clippy::too_many_arguments)]
fn s3(
    bucket: &str,
    key: &str,
    region: Option<&str>,
    creds: &AwsCredentials,
    sse: Option<&str>,
    endpoint: Option<String>,
    purpose: Purpose,
    refresh: Option<Refresh>,
) -> Result<Location, Error> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
    let mut b = AmazonS3Builder::new()
        .with_client_options(client_options(purpose, false))
        .with_bucket_name(bucket)
        .with_region(region.filter(|r| !r.is_empty()).unwrap_or("us-east-1"))
        .with_access_key_id(creds.access_key_id.expose())
        .with_secret_access_key(creds.secret_access_key.expose())
        // No SHA-256 of every body for the signature (botocore does the same over HTTPS, where TLS already
        // protects the bytes): it was a twentieth of an upload's CPU.
        .with_unsigned_payload(true)
        .with_retry(retry_config());
    if let Some(token) = creds.session_token.as_ref().filter(|t| !t.is_empty()) {
        b = b.with_token(token.expose());
    }
    if let Some(refresh) = refresh {
        let current = Arc::new(AwsCredential {
            key_id: creds.access_key_id.expose().to_owned(),
            secret_key: creds.secret_access_key.expose().to_owned(),
            token: creds.session_token.as_ref().map(|t| t.expose().to_owned()),
        });
        let ends = credentials::expiry(creds.expiration.as_deref(), None, SystemTime::now());
        b = b.with_credentials(Arc::new(Refreshing::new(
            (current, ends),
            refresh,
            fresh_aws,
        )));
    }
    if let Some(endpoint) = &endpoint {
        b = b
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false);
    }
    if let Some(sse) = sse.filter(|s| !s.is_empty())
        && let Ok(key) = "aws_server_side_encryption".parse::<AmazonS3ConfigKey>()
    {
        b = b.with_config(key, sse);
    }
    let store = b
        .build()
        .map_err(|e| Error::cloud("configuring S3 for", format!("s3://{bucket}/{key}"), e))?;
    Ok(Location {
        store: Arc::new(store),
        key: key.to_owned(),
        url_prefix: format!("s3://{bucket}/"),
        container: None,
        display: format!("s3://{bucket}/{key}"),
    })
}

/// The parts of an Azure SAS connection string we use.
#[derive(Debug, PartialEq, Eq)]
struct SasConnection {
    endpoint: Option<String>,
    account: Option<String>,
    sas: String,
}

fn parse_sas_connection_string(text: &str) -> Result<SasConnection, Error> {
    let mut endpoint = None;
    let mut account = None;
    let mut sas = None;
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k.trim() {
            "BlobEndpoint" => endpoint = Some(v.trim().trim_end_matches('/').to_owned()),
            "AccountName" => account = Some(v.trim().to_owned()),
            "SharedAccessSignature" => sas = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    let sas = sas.ok_or_else(|| Error::Decode {
        what: "the Azure credentials".into(),
        message: "the SAS connection string has no SharedAccessSignature".into(),
    })?;
    Ok(SasConnection {
        endpoint,
        account,
        sas,
    })
}

/// The account name from a blob endpoint: `https://acc.blob.core.windows.net` or, for Azurite,
/// `http://127.0.0.1:10000/devstoreaccount1`.
fn account_from_endpoint(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    let path = url.path().trim_matches('/');
    if !path.is_empty() {
        return path.split('/').next().map(str::to_owned);
    }
    url.host_str()?.split('.').next().map(str::to_owned)
}

fn azure(
    container: &str,
    blob: &str,
    account: Option<&str>,
    connection: &Secret,
    purpose: Purpose,
) -> Result<Location, Error> {
    use object_store::azure::{MicrosoftAzureBuilder, split_sas};
    let conn = parse_sas_connection_string(connection.expose())?;
    let account = account
        .map(str::to_owned)
        .or(conn.account.clone())
        .or_else(|| conn.endpoint.as_deref().and_then(account_from_endpoint))
        .ok_or_else(|| Error::Decode {
            what: "the Azure credentials".into(),
            message: "no account name in the upload params or the connection string".into(),
        })?;
    let pairs = split_sas(&conn.sas)
        .map_err(|e| Error::cloud("reading the SAS of", format!("container {container}"), e))?;
    let mut b = MicrosoftAzureBuilder::new()
        .with_client_options(client_options(purpose, false))
        .with_account(&account)
        .with_container_name(container)
        .with_sas_authorization(pairs)
        .with_retry(retry_config());
    if let Some(endpoint) = &conn.endpoint {
        b = b
            .with_endpoint(endpoint.clone())
            .with_allow_http(endpoint.starts_with("http://"));
    }
    let store = b.build().map_err(|e| {
        Error::cloud(
            "configuring Azure Blob Storage for",
            format!("{container}/{blob}"),
            e,
        )
    })?;
    Ok(Location {
        store: Arc::new(store),
        key: blob.to_owned(),
        url_prefix: format!("azure://{account}.blob.core.windows.net/{container}/"),
        container: Some(container.to_owned()),
        display: format!("azure://{account}/{container}/{blob}"),
    })
}

fn gcs(
    bucket: &str,
    key: &str,
    token: &Secret,
    expires_in: Option<u64>,
    endpoints: &Endpoints,
    purpose: Purpose,
    refresh: Option<Refresh>,
) -> Result<Location, Error> {
    use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
    let mut b = GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_bearer_token(token.expose())
        .with_retry(retry_config())
        .with_client_options(client_options(purpose, endpoints.gcs.is_some()));
    if let Some(endpoint) = &endpoints.gcs {
        b = b.with_base_url(endpoint.trim_end_matches('/'));
    }
    if let Some(refresh) = refresh {
        let current = Arc::new(GcpCredential {
            bearer: token.expose().to_owned(),
        });
        let ends = credentials::expiry(None, expires_in, SystemTime::now());
        b = b.with_credentials(Arc::new(Refreshing::new(
            (current, ends),
            refresh,
            fresh_gcs,
        )));
    }
    let store = b.build().map_err(|e| {
        Error::cloud(
            "configuring Google Cloud Storage for",
            format!("gs://{bucket}/{key}"),
            e,
        )
    })?;
    Ok(Location {
        store: Arc::new(store),
        key: key.to_owned(),
        url_prefix: format!("gs://{bucket}/"),
        container: None,
        display: format!("gs://{bucket}/{key}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(prefix: &str, container: Option<&str>) -> Location {
        Location {
            store: Arc::new(object_store::memory::InMemory::new()),
            key: "exp/1.csv".into(),
            url_prefix: prefix.into(),
            container: container.map(Into::into),
            display: "x".into(),
        }
    }

    #[test]
    fn entry_urls_map_to_keys_in_the_same_bucket() {
        let s3 = location("s3://kbc-files/", None);
        assert_eq!(
            s3.entry_path("s3://kbc-files/exp/1.csv0000_part_00")
                .unwrap()
                .as_ref(),
            "exp/1.csv0000_part_00"
        );
        assert!(s3.entry_path("s3://other/exp/1.csv0000_part_00").is_err());
        let az = location("azure://acc.blob.core.windows.net/exp-15/", Some("exp-15"));
        assert_eq!(
            az.entry_path("azure://acc.blob.core.windows.net/exp-15/236.csv/0001")
                .unwrap()
                .as_ref(),
            "236.csv/0001"
        );
        assert_eq!(
            az.entry_path("https://acc.blob.core.windows.net/exp-15/236.csv/0001")
                .unwrap()
                .as_ref(),
            "236.csv/0001"
        );
        assert!(
            az.entry_path("azure://acc.blob.core.windows.net/other/x")
                .is_err()
        );
        assert_eq!(s3.entry_url("a/b"), "s3://kbc-files/a/b");
    }

    #[test]
    fn s3_endpoint_comes_from_the_override_or_a_non_aws_presigned_url() {
        let file = |url: &str| -> FileInfo {
            serde_json::from_value(serde_json::json!({"id": 1, "url": url})).unwrap()
        };
        let none = Endpoints::default();
        let local =
            file("http://127.0.0.1:8080/kbc-sapi-files/exp/1.csvmanifest?X-Amz-Signature=x");
        assert_eq!(
            s3_endpoint(&none, &local, "kbc-sapi-files").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(s3_endpoint(&none, &local, "other-bucket"), None);
        let aws =
            file("https://kbc-sapi-files.s3.amazonaws.com/exp/1.csvmanifest?X-Amz-Signature=x");
        assert_eq!(s3_endpoint(&none, &aws, "kbc-sapi-files"), None);
        let aws_path = file("https://s3.us-east-1.amazonaws.com/kbc-sapi-files/exp/1.csv?sig=x");
        assert_eq!(s3_endpoint(&none, &aws_path, "kbc-sapi-files"), None);
        let set = Endpoints {
            s3: Some("http://minio:9000".into()),
            gcs: None,
        };
        assert_eq!(
            s3_endpoint(&set, &aws, "kbc-sapi-files").as_deref(),
            Some("http://minio:9000")
        );
    }

    #[test]
    fn sas_connection_strings_parse() {
        let c = parse_sas_connection_string(
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;SharedAccessSignature=sv=2021&sig=a%2Fb=",
        )
        .unwrap();
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(c.sas, "sv=2021&sig=a%2Fb=");
        assert_eq!(
            account_from_endpoint("http://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(
            account_from_endpoint("https://kbcfs.blob.core.windows.net").as_deref(),
            Some("kbcfs")
        );
        assert!(parse_sas_connection_string("BlobEndpoint=x").is_err());
    }

    proptest::proptest! {
        /// Keys keep their bytes: `~ % # [ ]`, spaces and the rest are neither encoded nor decoded, so
        /// what is stored is what the manifest names.
        #[test]
        fn object_paths_keep_odd_key_bytes(name in "[a-zA-Z0-9 ~%#\\[\\]{}^|*?<>\"'.,;:=&+@!$()_-]{1,24}") {
            let key = format!("upl/9.csv{name}");
            let path = object_path(&key);
            proptest::prop_assert_eq!(path.as_ref(), key.as_str());
            let sub = format!("exp/{name}/x");
            if name != "." && name != ".." {
                let path = object_path(&sub);
                proptest::prop_assert_eq!(path.as_ref(), sub.as_str());
            }
        }
    }

    #[test]
    fn downloads_fail_on_a_stall_not_on_a_long_transfer() {
        use object_store::ClientConfigKey;
        let down = client_options(Purpose::Download, false);
        assert_eq!(down.get_config_value(&ClientConfigKey::Timeout), None);
        assert!(
            down.get_config_value(&ClientConfigKey::ReadTimeout)
                .is_some()
        );
        let up = client_options(Purpose::Upload, false);
        assert!(up.get_config_value(&ClientConfigKey::Timeout).is_some());
        assert!(up.get_config_value(&ClientConfigKey::ReadTimeout).is_some());
    }
}
