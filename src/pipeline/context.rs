//! What one run knows before it starts: the Common Interface files and where Storage is.

use crate::error::UserError;
use crate::interface::{Config, DataDir, Environment};
use anyhow::Context as _;
use kbc_storage::{Client, ClientConfig, Credentials, MissingCredentials, Secret};
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
    credentials: Result<Credentials, MissingCredentials>,
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
    /// Credentials by the one rule of [`kbc_storage::stack`]: the environment's pairs first
    /// (`KBC_URL`+`KBC_TOKEN`, then `KEBOOLA_STACK_URL`+`KEBOOLA_TOKEN`), as the platform forwards them;
    /// then the parameter `#storage_token`, with `storage_url` or else the environment's URL.
    pub(crate) fn from_env(env: &Environment, config: &Config) -> StorageAccess {
        let params = &config.parameters;
        let credentials = env.storage_credentials(None, None).or_else(|missing| {
            match params
                .storage_token
                .as_deref()
                .filter(|t| !t.trim().is_empty())
            {
                Some(token) => env.storage_credentials(params.storage_url.as_deref(), Some(token)),
                None => Err(missing),
            }
        });
        let mut access = StorageAccess::with_credentials(credentials, config);
        access.branch = env.branch_id.clone();
        access
    }

    /// Known credentials (the local stack's), or none.
    pub(crate) fn new(credentials: Option<(String, String)>, config: &Config) -> StorageAccess {
        let credentials = credentials
            .map(|(url, token)| Credentials {
                url,
                token: Secret::new(token),
            })
            .ok_or_else(MissingCredentials::default);
        StorageAccess::with_credentials(credentials, config)
    }

    fn with_credentials(
        credentials: Result<Credentials, MissingCredentials>,
        config: &Config,
    ) -> StorageAccess {
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
    /// How long one Storage job may take (`parameters.job_timeout_seconds`).
    pub(crate) fn job_timeout(&self) -> Duration {
        self.job_timeout
    }

    pub(crate) fn client(&self, why: &str) -> anyhow::Result<&Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let credentials = match &self.credentials {
            Ok(c) => c,
            Err(missing) => {
                return Err(UserError::new(format!(
                    "{why} needs the Storage API, but no token is set: set KBC_TOKEN and KBC_URL (or \
                     KEBOOLA_TOKEN and KEBOOLA_STACK_URL), or parameters.#storage_token and \
                     parameters.storage_url in config.json{}",
                    missing.unpaired_note()
                ))
                .into());
            }
        };
        let mut config = ClientConfig::new(credentials.url.clone(), credentials.token.clone());
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

    fn credentials(access: &StorageAccess) -> (String, String) {
        let c = access.credentials.as_ref().unwrap();
        (c.url.clone(), c.token.expose().to_owned())
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
        assert_eq!(
            credentials(&access),
            ("https://env.example.com".into(), "env-token-1".into())
        );

        let access = StorageAccess::from_env(&env(&[("KBC_BRANCHID", "123")]), &params);
        assert_eq!(access.branch.as_deref(), Some("123"));
        assert_eq!(
            credentials(&access),
            ("param.example.com".into(), "param-token-1".into())
        );

        // A parameter token without its URL borrows the forwarded URL.
        let token_only = config(r##"{"parameters": {"#storage_token": "param-token-2"}}"##);
        let access =
            StorageAccess::from_env(&env(&[("KBC_URL", "http://127.0.0.1:9")]), &token_only);
        assert_eq!(credentials(&access).0, "http://127.0.0.1:9");
    }

    /// The same environment means the same credentials in `run` as in `tables`: a URL of one pair and a
    /// token of the other are no pair, and the message says so.
    #[test]
    fn crossed_halves_are_no_credentials() {
        let access = StorageAccess::from_env(
            &env(&[
                ("KBC_URL", "http://127.0.0.1:9"),
                ("KEBOOLA_TOKEN", "kb-token-crossed"),
            ]),
            &config("{}"),
        );
        let err = access.client("the export step").unwrap_err().to_string();
        assert!(
            err.contains(
                "KBC_URL is set without KBC_TOKEN, KEBOOLA_TOKEN is set without KEBOOLA_STACK_URL"
            ),
            "{err}"
        );
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
