//! The Keboola Common Interface: the contract between the platform and a component.
//!
//! - [`env`]: the environment variables the platform sets;
//! - [`datadir`]: where the data folder is and what lives in it;
//! - [`config`]: `config.json`, parsed leniently where the platform is lenient and strictly for our own
//!   `parameters`;
//! - [`manifest`]: input table manifests (read and written by the export step) and output table manifests
//!   (legacy and native-types `schema` forms);
//! - [`output_options`]: the options of an output table (mapping or manifest), their one key list, checks
//!   and the platform's mapping-over-manifest merge;
//! - [`schema`]: column schemas, data types and the data type support level;
//! - [`state`]: `in/state.json` and `out/state.json`.
//!
//! This module never touches the network: everything here is testable from fixture folders alone.

pub mod config;
pub(crate) mod datadir;
pub(crate) mod env;
mod lenient;
pub mod manifest;
pub(crate) mod output_options;
pub(crate) mod schema;
pub mod state;

pub use config::{Config, Parameters};
pub(crate) use datadir::DataDir;
pub(crate) use env::Environment;

use std::path::{Path, PathBuf};

/// Errors reading or writing the Common Interface files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSON file that is not valid JSON, or not of the expected shape.
    #[error("{file}: {message}")]
    Json { file: PathBuf, message: String },
    /// A value that parses but breaks a rule (both `days` and `changed_since`, an empty `source`, ...).
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    /// The data folder or config.json is missing.
    #[error("{0}")]
    Missing(String),
    /// An environment variable with a value we cannot use.
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    /// The file system failed us: not the user's fault.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Everything but I/O failures is something the user can fix.
    pub fn is_user(&self) -> bool {
        !matches!(self, Error::Io { .. })
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn invalid(file: &Path, message: impl Into<String>) -> Self {
        Error::Invalid {
            file: file.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses JSON text into `T`, reporting where it went wrong: the key path for a value of the wrong shape, the
/// line and column for both kinds of error. Messages never quote a value (it could be a secret).
pub fn parse_json<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| json_error(file, String::new(), e))?;
            Ok(value)
        }
        Err(err) => {
            let path = err.path().to_string();
            Err(json_error(file, path, err.into_inner()))
        }
    }
}

fn json_error(file: &Path, path: String, inner: serde_json::Error) -> Error {
    let position = format!("line {}, column {}", inner.line(), inner.column());
    let message = match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!(
                "invalid JSON at {position}: {}",
                strip_position(&inner.to_string())
            )
        }
        _ => {
            let key = if path.is_empty() || path == "." {
                "(root)".to_owned()
            } else {
                path
            };
            format!(
                "`{key}` (at {position}): {}",
                strip_position(&inner.to_string())
            )
        }
    };
    Error::Json {
        file: file.to_owned(),
        message: crate::secrets::redact(&message).into_owned(),
    }
}

/// serde_json appends " at line L column C" to its messages; we report the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Reads a JSON text file the way users produce them: a UTF-8 byte-order mark is skipped (editors on
/// Windows add one), and bytes that are not UTF-8 are a user error naming the offset, not an I/O failure.
pub fn read_text(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(e) => Err(Error::invalid(
            path,
            format!(
                "not UTF-8 text: invalid byte at offset {}; save the file as UTF-8",
                e.valid_up_to()
            ),
        )),
    }
}

/// Writes a file atomically: a temporary name in the same folder, then a rename, so readers (and the
/// platform after a crash) never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".kbc-runner-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_data())
        .map_err(|e| Error::io("writing", path, e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("renaming into place", path, e.error))?;
    Ok(())
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serializing a JSON value cannot fail");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        a: u32,
    }

    #[test]
    fn json_errors_name_the_position() {
        let err = parse_json::<T>(Path::new("config.json"), "{\n  \"a\": \n}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.json: invalid JSON at line 3, column 1: expected value"
        );
        let err = parse_json::<T>(Path::new("c.json"), "{\"a\": \"hunter2\"}").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("c.json: `a` (at line 1, column "),
            "{text}"
        );
        assert!(text.contains("invalid type"), "{text}");
        assert!(err.is_user());
    }

    #[test]
    fn text_files_may_have_a_bom_but_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, b"\xEF\xBB\xBF{}").unwrap();
        assert_eq!(read_text(&p).unwrap(), "{}");
        std::fs::write(&p, b"{\"a\": \"\xFF\"}").unwrap();
        let err = read_text(&p).unwrap_err();
        assert!(err.is_user());
        assert!(err.to_string().contains("offset 7"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        write_json(&p, &serde_json::json!({"b": 2})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"b\": 2\n}\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
