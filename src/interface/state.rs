//! Component state: `in/state.json` (what the last successful run left) and `out/state.json`, which must
//! always be written: a missing file wipes the stored state.
//!
//! The state stays the component's own JSON object. The runner keeps its bookkeeping (each input table's last
//! import date, for `changed_since: adaptive`) under one key, [`RUNNER_KEY`].

use super::{Error, parse_json, write_json};
use serde_json::{Map, Value};
use std::path::Path;

/// The key under which the runner keeps its own state.
pub const RUNNER_KEY: &str = "kbc_runner";

/// The state document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    data: Map<String, Value>,
}

impl State {
    /// Reads `in/state.json`; missing, empty, `null` and `[]` all mean "no state".
    pub fn load(path: &Path) -> Result<State, Error> {
        if !path.exists() {
            return Ok(State::default());
        }
        let text = super::read_text(path)?;
        if text.trim().is_empty() {
            return Ok(State::default());
        }
        match parse_json::<Value>(path, &text)? {
            Value::Object(data) => Ok(State { data }),
            Value::Null => Ok(State::default()),
            Value::Array(a) if a.is_empty() => Ok(State::default()),
            _ => Err(Error::invalid(path, "the state must be a JSON object")),
        }
    }

    /// Writes the state atomically (always call this, even when nothing changed).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        write_json(path, &Value::Object(self.data.clone()))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.data
    }

    /// The last import date recorded for an input table (for `adaptive`).
    pub fn last_import_date(&self, table_id: &str) -> Option<&str> {
        self.data
            .get(RUNNER_KEY)?
            .get("input_tables")?
            .get(table_id)?
            .get("last_import_date")?
            .as_str()
    }

    /// Records an input table's last import date.
    pub fn set_last_import_date(&mut self, table_id: &str, date: &str) {
        let runner = self
            .data
            .entry(RUNNER_KEY)
            .or_insert_with(|| Value::Object(Map::new()));
        if !runner.is_object() {
            *runner = Value::Object(Map::new());
        }
        let tables = runner
            .as_object_mut()
            .expect("made an object above")
            .entry("input_tables")
            .or_insert_with(|| Value::Object(Map::new()));
        if !tables.is_object() {
            *tables = Value::Object(Map::new());
        }
        tables
            .as_object_mut()
            .expect("made an object above")
            .insert(
                table_id.to_owned(),
                serde_json::json!({ "last_import_date": date }),
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_component_keys_and_adds_runner_key() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.json");
        std::fs::write(&input, r#"{"cursor": 5}"#).unwrap();
        let mut state = State::load(&input).unwrap();
        state.set_last_import_date("in.c-a.b", "2026-01-01T00:00:00+0000");
        let out = dir.path().join("out.json");
        state.save(&out).unwrap();
        let back = State::load(&out).unwrap();
        assert_eq!(back.as_map()["cursor"], 5);
        assert_eq!(
            back.last_import_date("in.c-a.b"),
            Some("2026-01-01T00:00:00+0000")
        );
    }

    #[test]
    fn missing_and_php_empty_mean_no_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            State::load(&dir.path().join("none.json")).unwrap(),
            State::default()
        );
        let p = dir.path().join("s.json");
        std::fs::write(&p, "[]").unwrap();
        assert_eq!(State::load(&p).unwrap(), State::default());
        std::fs::write(&p, "[1]").unwrap();
        assert!(State::load(&p).unwrap_err().is_user());
    }
}
