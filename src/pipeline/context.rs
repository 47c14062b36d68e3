//! What one run knows before it starts: the Common Interface files and where Storage is.

use crate::error::UserError;
use crate::interface::{Config, DataDir, Environment};
use anyhow::Context as _;
use kbc_storage::{Client, ClientConfig};
use std::sync::OnceLock;
use std::time::Duration;

/// Everything a run needs to know before it starts.
pub(crate) struct Context {
    pub(crate) env: Environment,
    pub(crate) data: DataDir,
    pub(crate) config: Config,
    /// Where Storage is, when known (environment, parameters, or the local stack).
    pub(crate) storage: StorageAccess,
}

/// Where Storage is and how to reach it; the client is made on first use, so runs that never touch
/// Storage need no token.
pub(crate) struct StorageAccess {
    credentials: Option<(String, String)>,
    /// The S3 endpoint of an emulator (the local stack); otherwise the client's own rules apply.
    s3_endpoint: Option<String>,
    /// `KBC_BRANCHID`: the branch this run is in. The client finds out whether it is the default branch and
    /// whether the project has branch storage, and reads and writes as the platform does in each case.
    branch: Option<String>,
    job_timeout: Duration,
    max_connections: usize,
    client: OnceLock<Client>,
}

impl StorageAccess {
    /// Credentials from `KBC_URL`/`KBC_TOKEN`, then `KEBOOLA_STACK_URL`/`KEBOOLA_TOKEN`, then the
    /// parameters `storage_url` and `#storage_token`.
    pub(crate) fn from_env(env: &Environment, config: &Config) -> StorageAccess {
        let from_env = env
            .storage_credentials()
            .map(|(url, token)| (url, token.expose().to_owned()));
        let from_params = config.parameters.storage_token.as_ref().and_then(|token| {
            let url = config
                .parameters
                .storage_url
                .clone()
                .or_else(|| env.kbc_url.clone())
                .or_else(|| env.keboola_stack_url.clone())?;
            Some((crate::interface::env::normalize_url(&url), token.clone()))
        });
        let mut access = StorageAccess::new(from_env.or(from_params), config);
        access.branch = env.branch_id.clone();
        access
    }

    pub(crate) fn new(credentials: Option<(String, String)>, config: &Config) -> StorageAccess {
        if let Some((_, token)) = &credentials {
            crate::secrets::register(token);
        }
        StorageAccess {
            credentials,
            s3_endpoint: None,
            branch: None,
            job_timeout: Duration::from_secs(config.parameters.job_timeout_seconds.unwrap_or(3600)),
            max_connections: config.parameters.concurrency() * 4,
            client: OnceLock::new(),
        }
    }

    /// Sends file transfers to an S3-compatible endpoint (the local stack's emulator).
    pub(crate) fn with_s3_endpoint(mut self, endpoint: String) -> Self {
        self.s3_endpoint = Some(endpoint);
        self
    }

    /// Overrides the job timeout (sync actions must answer within 30 s).
    pub(crate) fn with_job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// The client; a user error naming every way to give a token when there is none. `why` says which
    /// step needs Storage.
    pub(crate) fn client(&self, why: &str) -> anyhow::Result<&Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let Some((url, token)) = &self.credentials else {
            return Err(UserError::new(format!(
                "{why} needs the Storage API, but no token is set: set KBC_TOKEN and KBC_URL (or \
                 KEBOOLA_TOKEN and KEBOOLA_STACK_URL), or parameters.#storage_token and \
                 parameters.storage_url in config.json"
            ))
            .into());
        };
        let mut config = ClientConfig::new(url.clone(), token.clone());
        config.job_timeout = self.job_timeout;
        config.max_connections = self.max_connections;
        if let Some(endpoint) = &self.s3_endpoint {
            config.endpoints.s3 = Some(endpoint.clone());
        }
        config.branch = self.branch.clone();
        let client = Client::new(config).context("setting up the Storage API client")?;
        Ok(self.client.get_or_init(|| client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn config(text: &str) -> Config {
        Config::parse(Path::new("config.json"), text).unwrap()
    }

    #[test]
    fn credentials_come_from_env_then_parameters() {
        let params = config(
            r##"{"parameters": {"#storage_token": "param-token-1", "storage_url": "param.example.com"}}"##,
        );
        let access = StorageAccess::from_env(
            &env(&[
                ("KBC_TOKEN", "env-token-1"),
                ("KBC_URL", "https://env.example.com"),
            ]),
            &params,
        );
        let (url, token) = access.credentials.clone().unwrap();
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("https://env.example.com", "env-token-1")
        );

        let access = StorageAccess::from_env(&env(&[("KBC_BRANCHID", "123")]), &params);
        assert_eq!(access.branch.as_deref(), Some("123"));
        let (url, token) = access.credentials.clone().unwrap();
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("https://param.example.com", "param-token-1")
        );

        // A parameter token without its URL borrows the forwarded URL.
        let token_only = config(r##"{"parameters": {"#storage_token": "param-token-2"}}"##);
        let access =
            StorageAccess::from_env(&env(&[("KBC_URL", "http://127.0.0.1:9")]), &token_only);
        assert_eq!(access.credentials.unwrap().0, "http://127.0.0.1:9");
    }

    #[test]
    fn no_token_is_a_user_error_naming_every_way_to_give_one() {
        let access = StorageAccess::from_env(&env(&[]), &config("{}"));
        let err = access.client("the export step").unwrap_err();
        assert_eq!(crate::error::classify(&err), crate::error::ErrorClass::User);
        let text = err.to_string();
        for name in [
            "KBC_TOKEN",
            "KBC_URL",
            "KEBOOLA_TOKEN",
            "KEBOOLA_STACK_URL",
            "#storage_token",
            "storage_url",
        ] {
            assert!(text.contains(name), "{name} missing in: {text}");
        }
    }
}
