//! The environment the platform gives a component (`KBC_*`), plus the brief's `KEBOOLA_TOKEN` /
//! `KEBOOLA_STACK_URL` for runs outside Keboola. Only `KBC_DATADIR` and friends are always set by the
//! platform; everything is optional here because local runs have none of it.

use super::Error;
use super::schema::DataTypeSupport;
use crate::secrets::Secret;
use kbc_storage::{Credentials, MissingCredentials};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct KbcVars {
    datadir: Option<String>,
    runid: Option<String>,
    branchid: Option<String>,
    componentid: Option<String>,
    configid: Option<String>,
    data_type_support: Option<String>,
    token: Option<String>,
    url: Option<String>,
    logger_addr: Option<String>,
    logger_port: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct KeboolaVars {
    token: Option<String>,
    stack_url: Option<String>,
}

/// The component's environment, as the platform sets it (every variable optional). Only what the runner
/// uses is read; the platform's other `KBC_*` variables (project id, run mode) are ignored until a
/// feature needs them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    /// `KBC_DATADIR`, with its trailing slash as the platform writes it.
    pub data_dir: Option<String>,
    /// `KBC_RUNID`: set (non-empty) when the platform runs us; dotted for nested runs.
    pub run_id: Option<String>,
    /// `KBC_BRANCHID`: may be the default branch too; its presence does not mean "dev branch".
    pub branch_id: Option<String>,
    /// `KBC_COMPONENTID` and `KBC_CONFIGID`: the workspace engine creates a configuration workspace
    /// (attributed to and visible on the configuration) when both are set.
    pub configuration: Option<(String, String)>,
    /// `KBC_DATA_TYPE_SUPPORT`: only with the project feature `new-native-types`.
    pub data_type_support: Option<DataTypeSupport>,
    /// `KBC_TOKEN` (forwarded token).
    pub kbc_token: Option<Secret>,
    /// `KBC_URL` (forwarded Storage API URL).
    pub kbc_url: Option<String>,
    /// `KEBOOLA_TOKEN` (the brief's name, for runs outside Keboola).
    pub keboola_token: Option<Secret>,
    /// `KEBOOLA_STACK_URL`, possibly a bare host.
    pub keboola_stack_url: Option<String>,
    /// `KBC_LOGGER_ADDR` / `KBC_LOGGER_PORT`: the GELF server, when the component logs over GELF.
    pub logger: Option<(String, u16)>,
}

impl Environment {
    /// Reads the process environment.
    pub(crate) fn from_env() -> Result<Self, Error> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (tests pass their own).
    pub(crate) fn from_vars<I>(vars: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // Empty values are the same as unset: the platform writes `KBC_RUNID=""` for some runs. So are
        // values of only whitespace (a stray space in a shell export), as in every command.
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        let kbc: KbcVars = envy::prefixed("KBC_")
            .from_iter(vars.iter().cloned())
            .map_err(|e| Error::Env {
                name: "KBC_*".into(),
                message: e.to_string(),
            })?;
        let keboola: KeboolaVars = envy::prefixed("KEBOOLA_")
            .from_iter(vars.iter().cloned())
            .map_err(|e| Error::Env {
                name: "KEBOOLA_*".into(),
                message: e.to_string(),
            })?;
        let data_type_support = match kbc.data_type_support.as_deref() {
            None => None,
            Some(v) => Some(v.parse().map_err(|message| Error::Env {
                name: "KBC_DATA_TYPE_SUPPORT".into(),
                message,
            })?),
        };
        let logger = match (kbc.logger_addr, kbc.logger_port) {
            (Some(addr), Some(port)) => {
                let port = port.parse::<u16>().map_err(|_| Error::Env {
                    name: "KBC_LOGGER_PORT".into(),
                    message: format!("`{port}` is not a port number"),
                })?;
                Some((addr, port))
            }
            _ => None,
        };
        Ok(Environment {
            data_dir: kbc.datadir,
            run_id: kbc.runid,
            branch_id: kbc.branchid,
            configuration: kbc.componentid.zip(kbc.configid),
            data_type_support,
            kbc_token: kbc.token.map(Secret::new),
            kbc_url: kbc.url,
            keboola_token: keboola.token.map(Secret::new),
            keboola_stack_url: keboola.stack_url,
            logger,
        })
    }

    /// Whether the Keboola platform is running us (it always sets a run id there).
    pub(crate) fn in_keboola(&self) -> bool {
        self.run_id.is_some()
    }

    /// The Storage API URL and token by the one rule of [`kbc_storage::stack`]: `url` and `token` given
    /// explicitly (parameters, flags) win for their half; otherwise `KBC_URL`+`KBC_TOKEN`, then
    /// `KEBOOLA_STACK_URL`+`KEBOOLA_TOKEN`, each only as a pair.
    pub(crate) fn storage_credentials(
        &self,
        url: Option<&str>,
        token: Option<&str>,
    ) -> Result<Credentials, MissingCredentials> {
        Credentials::resolve(url, token, |name| self.storage_var(name))
    }

    fn storage_var(&self, name: &str) -> Option<String> {
        match name {
            "KBC_URL" => self.kbc_url.clone(),
            "KBC_TOKEN" => self.kbc_token.as_ref().map(|t| t.expose().to_owned()),
            "KEBOOLA_STACK_URL" => self.keboola_stack_url.clone(),
            "KEBOOLA_TOKEN" => self.keboola_token.as_ref().map(|t| t.expose().to_owned()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn reads_platform_variables() {
        let e = env(&[
            ("KBC_DATADIR", "/data/"),
            ("KBC_RUNID", "1.2.3"),
            ("KBC_CONFIGID", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            ("KBC_DATA_TYPE_SUPPORT", "hints"),
            ("KBC_LOGGER_ADDR", "10.0.0.1"),
            ("KBC_LOGGER_PORT", "12201"),
            ("KBC_BRANCHID", ""),
        ]);
        assert_eq!(e.data_dir.as_deref(), Some("/data/"));
        assert!(e.in_keboola());
        assert_eq!(e.data_type_support, Some(DataTypeSupport::Hints));
        assert_eq!(e.logger, Some(("10.0.0.1".into(), 12201)));
        assert_eq!(e.branch_id, None);
    }

    #[test]
    fn forwarded_pair_wins_and_pairs_are_not_crossed() {
        let e = env(&[
            ("KEBOOLA_TOKEN", "kb-token-1"),
            ("KEBOOLA_STACK_URL", "connection.keboola.com"),
        ]);
        let c = e.storage_credentials(None, None).unwrap();
        assert_eq!(c.url, "connection.keboola.com");
        assert_eq!(c.token.expose(), "kb-token-1");
        assert_eq!(format!("{:?}", c.token), "[hidden]");
        let e = env(&[
            ("KEBOOLA_TOKEN", "kb-token-1"),
            ("KEBOOLA_STACK_URL", "connection.keboola.com"),
            ("KBC_TOKEN", "kbc-token-2"),
            ("KBC_URL", "http://127.0.0.1:9/"),
        ]);
        let c = e.storage_credentials(None, None).unwrap();
        assert_eq!(
            (c.url.as_str(), c.token.expose()),
            ("http://127.0.0.1:9/", "kbc-token-2")
        );
        // KBC_URL with KEBOOLA_TOKEN is no pair (as in `tables`); whitespace is unset.
        let e = env(&[
            ("KBC_URL", "http://127.0.0.1:9"),
            ("KEBOOLA_TOKEN", "kb-token-1"),
            ("KBC_TOKEN", "  "),
        ]);
        assert_eq!(e.kbc_token, None);
        assert!(e.storage_credentials(None, None).is_err());
        assert!(!env(&[]).in_keboola());
    }

    #[test]
    fn bad_values_are_user_errors() {
        let err =
            Environment::from_vars([("KBC_DATA_TYPE_SUPPORT".to_string(), "all".to_string())])
                .unwrap_err();
        assert!(err.is_user());
        assert!(err.to_string().contains("KBC_DATA_TYPE_SUPPORT"), "{err}");
    }
}
