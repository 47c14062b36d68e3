//! The data folder: where it is, and the paths inside it (`config.json`, `in/`, `out/`).

use super::{Environment, Error};
use std::path::{Path, PathBuf};

/// A data folder laid out as the platform lays it out.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Picks the data folder: `--data-dir`, else `KBC_DATADIR`, else `/data` when it exists, else `./data`.
    pub(crate) fn resolve(explicit: Option<&Path>, env: &Environment) -> DataDir {
        let root = if let Some(dir) = explicit {
            dir.to_owned()
        } else if let Some(dir) = env.data_dir.as_deref() {
            // The platform writes "/data/" with a trailing slash.
            let trimmed = dir.trim_end_matches('/');
            PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed })
        } else if Path::new("/data").is_dir() {
            PathBuf::from("/data")
        } else {
            PathBuf::from("data")
        };
        DataDir { root }
    }

    pub(crate) fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn config_file(&self) -> PathBuf {
        self.root.join("config.json")
    }

    pub(crate) fn in_tables(&self) -> PathBuf {
        self.root.join("in").join("tables")
    }

    pub(crate) fn in_files(&self) -> PathBuf {
        self.root.join("in").join("files")
    }

    pub(crate) fn in_state(&self) -> PathBuf {
        self.root.join("in").join("state.json")
    }

    pub(crate) fn out_tables(&self) -> PathBuf {
        self.root.join("out").join("tables")
    }

    pub(crate) fn out_files(&self) -> PathBuf {
        self.root.join("out").join("files")
    }

    pub(crate) fn out_state(&self) -> PathBuf {
        self.root.join("out").join("state.json")
    }

    /// Fails with a user error when the folder or its config.json is missing: locally that is a wrong
    /// `--data-dir`; the platform always provides both.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if !self.root.is_dir() {
            return Err(Error::Missing(format!(
                "data folder {} does not exist: pass --data-dir DIR or set KBC_DATADIR",
                self.root.display()
            )));
        }
        if !self.config_file().is_file() {
            return Err(Error::Missing(format!(
                "{} not found: the data folder must contain config.json",
                self.config_file().display()
            )));
        }
        Ok(())
    }

    /// Creates the folders the platform would create (`in/tables`, `in/files`, `out/tables`, `out/files`).
    pub(crate) fn ensure_layout(&self) -> Result<(), Error> {
        for dir in [
            self.in_tables(),
            self.in_files(),
            self.out_tables(),
            self.out_files(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_beats_env_and_trailing_slash_is_dropped() {
        let env = Environment {
            data_dir: Some("/tmp/x/".into()),
            ..Default::default()
        };
        assert_eq!(
            DataDir::resolve(Some(Path::new("y")), &env).root(),
            Path::new("y")
        );
        assert_eq!(DataDir::resolve(None, &env).root(), Path::new("/tmp/x"));
        assert_eq!(
            DataDir::resolve(None, &env).in_state(),
            Path::new("/tmp/x/in/state.json")
        );
    }

    #[test]
    fn missing_config_is_a_user_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataDir::new(dir.path()).check().unwrap_err();
        assert!(err.is_user());
        assert!(err.to_string().contains("config.json"));
    }
}
