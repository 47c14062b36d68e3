//! `config.json`, the way the platform writes it.
//!
//! The platform normalises every mapping item before the component sees it: each default is filled in
//! (`"schema": []`, `"primary_key": []`, `"incremental": false`, ...). So an empty array, `false`, `""` or a
//! documented default means "not set" here, and a config reads the same with or without those defaults.
//! Empty objects may arrive as `[]`. `parameters` are lenient like the real DuckDB transformation's: an
//! unknown key is ignored with a warning naming the closest known key, `"true"`/`"false"` strings are
//! booleans; a known key of the wrong type is still an error with its key path, line and column.

use super::lenient;
use super::output_options::OutputTableOptions;
use super::schema::DataTypeSupport;
use super::{Error, parse_json};
use kbc_storage::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// The whole `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    #[serde(default, deserialize_with = "lenient::object")]
    pub storage: StorageConfig,
    #[serde(default, deserialize_with = "lenient::object")]
    pub parameters: Parameters,
    #[serde(default, deserialize_with = "lenient::object")]
    pub image_parameters: Map<String, Value>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub authorization: Map<String, Value>,
    /// `run`, or the name of a sync action.
    #[serde(default = "default_action", deserialize_with = "action")]
    pub action: String,
    /// One line per `parameters` key we ignored, to be logged once logging is up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

fn default_action() -> String {
    "run".to_owned()
}

fn action<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = Option::<String>::deserialize(d)?.unwrap_or_default();
    Ok(if value.is_empty() {
        default_action()
    } else {
        value
    })
}

impl Config {
    /// Reads and validates `config.json`. Every `#` value is registered as a secret before the typed parse,
    /// so no error message can show one. `in_keboola`: the platform has already validated the mappings
    /// (and will do the input and output mapping itself), so only what the transform needs is checked.
    pub fn load(path: &Path, in_keboola: bool) -> Result<Config, Error> {
        let text = super::read_text(path)?;
        Self::parse_in(path, &text, in_keboola)
    }

    /// Parses config.json text as a run outside Keboola does (`path` is only used in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
        Self::parse_in(path, text, false)
    }

    fn parse_in(path: &Path, text: &str, in_keboola: bool) -> Result<Config, Error> {
        let raw: Value = parse_json(path, text)?;
        crate::secrets::register_hash_values(&raw);
        if !raw.is_object() {
            return Err(Error::invalid(
                path,
                "the configuration must be a JSON object",
            ));
        }
        let mut config: Config = parse_json(path, text)?;
        config.warnings = unknown_parameters(&raw);
        for t in &mut config.storage.output.tables {
            t.options.normalise();
        }
        if !in_keboola {
            config.validate_mappings(path)?;
        }
        config
            .parameters
            .validate()
            .map_err(|m| Error::invalid(path, format!("parameters: {m}")))?;
        Ok(config)
    }

    fn validate_mappings(&self, path: &Path) -> Result<(), Error> {
        for (i, t) in self.storage.input.tables.iter().enumerate() {
            t.validate()
                .map_err(|m| Error::invalid(path, format!("storage.input.tables[{i}]: {m}")))?;
        }
        for (i, t) in self.storage.output.tables.iter().enumerate() {
            t.validate()
                .map_err(|m| Error::invalid(path, format!("storage.output.tables[{i}]: {m}")))?;
        }
        Ok(())
    }
}

/// Warnings for the `parameters` keys (and `blocks[]`/`codes[]` keys) that no field reads: the real DuckDB
/// transformation ignores them, and so do we, but a typo should stay visible.
fn unknown_parameters(raw: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(params) = raw.get("parameters").and_then(Value::as_object) else {
        return warnings;
    };
    warn_unknown(
        "parameters",
        params,
        field_names::<Parameters>(),
        &mut warnings,
    );
    if let Some(workspace) = params.get("workspace").and_then(Value::as_object) {
        warn_unknown(
            "parameters.workspace",
            workspace,
            field_names::<WorkspaceSettings>(),
            &mut warnings,
        );
    }
    let blocks = params.get("blocks").and_then(Value::as_array);
    for (b, block) in blocks.into_iter().flatten().enumerate() {
        let Some(block) = block.as_object() else {
            continue;
        };
        let at = format!("parameters.blocks[{b}]");
        warn_unknown(&at, block, field_names::<Block>(), &mut warnings);
        let codes = block.get("codes").and_then(Value::as_array);
        for (c, code) in codes.into_iter().flatten().enumerate() {
            if let Some(code) = code.as_object() {
                let at = format!("{at}.codes[{c}]");
                warn_unknown(&at, code, field_names::<Code>(), &mut warnings);
            }
        }
    }
    warnings
}

fn warn_unknown(at: &str, object: &Map<String, Value>, known: &[&str], out: &mut Vec<String>) {
    for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
        let closest = known
            .iter()
            .map(|k| (strsim::jaro_winkler(key, k), *k))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|(score, _)| *score >= 0.8);
        out.push(match closest {
            Some((_, k)) => format!("{at}: unknown key `{key}` is ignored; did you mean `{k}`?"),
            None => format!(
                "{at}: unknown key `{key}` is ignored; known keys: {}",
                known.join(", ")
            ),
        });
    }
}

/// The JSON keys a derived `Deserialize` struct reads, asked from the derive itself so the list cannot
/// drift from the struct.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    struct Grab<'a>(&'a mut Fields);
    impl<'de> serde::Deserializer<'de> for Grab<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("only structs"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.0 = Some(fields);
            Err(serde::de::Error::custom("fields taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(Grab(&mut fields));
    fields.0.unwrap_or(&[])
}

/// `storage`: the input and output mapping.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StorageConfig {
    #[serde(default, deserialize_with = "lenient::object")]
    pub input: StorageInput,
    #[serde(default, deserialize_with = "lenient::object")]
    pub output: StorageOutput,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StorageInput {
    #[serde(default, deserialize_with = "lenient::list")]
    pub tables: Vec<InputTableMapping>,
    /// File mappings are accepted and passed through; this component works with tables only.
    #[serde(default, deserialize_with = "lenient::list")]
    pub files: Vec<Value>,
    /// The platform's key for a workspace that reads every Storage table in place (workspace engine).
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub read_only_storage_access: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StorageOutput {
    #[serde(default, deserialize_with = "lenient::list")]
    pub tables: Vec<OutputTableMapping>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub files: Vec<Value>,
    /// Per-config override of the component's data type support.
    #[serde(default)]
    pub data_type_support: Option<DataTypeSupport>,
    #[serde(default)]
    pub default_bucket: Option<String>,
}

/// One `storage.input.tables[]` item: what to export.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InputTableMapping {
    #[serde(default, deserialize_with = "lenient::string")]
    pub source: String,
    /// File name in `in/tables`; the table id when unset.
    #[serde(default)]
    pub destination: Option<String>,
    #[serde(default)]
    pub days: Option<u32>,
    /// A strtotime string, a unix timestamp, ISO 8601, or `adaptive`.
    #[serde(default)]
    pub changed_since: Option<String>,
    #[serde(default, deserialize_with = "lenient::strings")]
    pub columns: Vec<String>,
    #[serde(default)]
    pub where_column: Option<String>,
    #[serde(default, deserialize_with = "lenient::strings")]
    pub where_values: Vec<String>,
    #[serde(default, deserialize_with = "lenient::operator")]
    pub where_operator: Operator,
    #[serde(default)]
    pub limit: Option<u64>,
    /// `csv` (default) or `parquet`: how the transform reads the table (the DuckDB transformation's
    /// "Use parquet for input tables").
    #[serde(default)]
    pub file_type: Option<String>,
}

impl InputTableMapping {
    fn validate(&self) -> Result<(), String> {
        if self.source.trim().is_empty() {
            return Err(
                "`source` is required: the id of the table to export, e.g. in.c-main.orders".into(),
            );
        }
        if self.days.is_some_and(|d| d > 0)
            && self.changed_since.as_deref().is_some_and(|c| !c.is_empty())
        {
            return Err(format!(
                "{}: set either `days` or `changed_since`, not both",
                self.source
            ));
        }
        // As the platform's input mapping: a column needs values; values without a column (the
        // normalised `"where_values": []` among them) are ignored.
        let has_column = self.where_column.as_deref().is_some_and(|c| !c.is_empty());
        if has_column && self.where_values.is_empty() {
            return Err(format!(
                "{}: `where_column` is set, so `where_values` must list at least one value",
                self.source
            ));
        }
        Ok(())
    }

    /// The file name in `in/tables`.
    pub fn destination(&self) -> &str {
        match self.destination.as_deref() {
            Some(d) if !d.is_empty() => d,
            _ => &self.source,
        }
    }

    /// `changed_since` after the platform's rules: `days: N` becomes `-N days`; empty means none.
    pub fn changed_since(&self) -> Option<String> {
        match (self.changed_since.as_deref(), self.days) {
            (Some(c), _) if !c.is_empty() => Some(c.to_owned()),
            (_, Some(d)) if d > 0 => Some(format!("-{d} days")),
            _ => None,
        }
    }
}

/// One `storage.output.tables[]` item: what to import.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OutputTableMapping {
    /// File or folder name in `out/tables`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub source: String,
    #[serde(flatten)]
    pub options: OutputTableOptions,
}

impl OutputTableMapping {
    fn validate(&self) -> Result<(), String> {
        if self.source.trim().is_empty() {
            return Err("`source` is required: the file name in out/tables".into());
        }
        self.options
            .validate()
            .map_err(|m| format!("{}: {m}", self.source))
    }
}

/// A step of the job, as `parameters.steps` names it and the report shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Export,
    Transform,
    Import,
}

impl Step {
    /// The three steps, in the order they run.
    pub const ALL: [Step; 3] = [Step::Export, Step::Transform, Step::Import];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Export => "export",
            Step::Transform => "transform",
            Step::Import => "import",
        }
    }
}

/// One block of SQL, as in Keboola's DuckDB transformation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Block {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "lenient::list")]
    pub codes: Vec<Code>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Code {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "lenient::list")]
    pub script: Vec<String>,
}

/// `parameters`: the keys of Keboola's DuckDB transformation (`blocks`, `threads`, `max_memory_mb`,
/// `dtypes_infer`, `debug`, `syntax_check_on_startup`, `duckdb_version`) plus our own. Unknown keys are
/// ignored with a warning (see [`Config::warnings`]), as the real component ignores them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Parameters {
    /// The transformation: SQL blocks run in order.
    #[serde(default, deserialize_with = "lenient::list")]
    pub blocks: Vec<Block>,
    /// Which steps to run; default: all three outside Keboola, `transform` inside it.
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
    /// How many tables are exported or imported at once (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// How long to wait for one Storage job, in seconds (default 3600).
    #[serde(default)]
    pub job_timeout_seconds: Option<u64>,
    /// DuckDB threads (default: the CPU count).
    #[serde(default)]
    pub threads: Option<usize>,
    /// DuckDB memory limit, e.g. `2GB` (default: DuckDB's own, 80 % of RAM).
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// DuckDB memory limit in MB, the DuckDB transformation's name for `memory_limit`.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Storage API token, for runs where the platform does not forward one.
    #[serde(default, rename = "#storage_token")]
    pub storage_token: Option<String>,
    /// Storage API URL (a bare host gets `https://`).
    #[serde(default)]
    pub storage_url: Option<String>,
    /// Table id for the `listColumns` sync action.
    #[serde(default)]
    pub table: Option<String>,
    /// Accepted for DuckDB transformation compatibility: input types always come from the manifest.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub dtypes_infer: Option<bool>,
    /// Accepted for DuckDB transformation compatibility: statements run in order and the first error
    /// stops the job, naming the block, code and statement.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub syntax_check_on_startup: Option<bool>,
    /// Accepted for DuckDB transformation compatibility: the DuckDB version is the one built in.
    #[serde(default)]
    pub duckdb_version: Option<String>,
    /// Accepted for DuckDB transformation compatibility (its documented example sets it); log verbosity
    /// is set with `KBC_RUNNER_LOG` instead.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub debug: Option<bool>,
    /// Where the SQL runs: `duckdb` (default: in this process, on exported files) or `workspace` (in a
    /// Keboola workspace of the project's backend, through the Query Service; no table data moves).
    #[serde(default)]
    pub engine: Engine,
    /// Settings of the workspace engine.
    #[serde(default, deserialize_with = "lenient::object")]
    pub workspace: WorkspaceSettings,
}

/// `parameters.engine`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Duckdb,
    Workspace,
}

/// `parameters.workspace`: the workspace engine's settings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkspaceSettings {
    /// `auto` (default: the project's default backend), `snowflake` or `bigquery`.
    #[serde(default)]
    pub backend: Option<String>,
    /// The workspace's `backendSize` (Snowflake: `small`, `medium`, `large`; feature-gated).
    #[serde(default)]
    pub size: Option<String>,
    /// How long one code's statements may run, in seconds (default 7200, as Keboola's Snowflake
    /// transformation's `query_timeout`).
    #[serde(default)]
    pub query_timeout_seconds: Option<u64>,
    /// Keep the workspace after the run (for debugging; its id is logged).
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub keep: Option<bool>,
}

impl WorkspaceSettings {
    /// The backend to ask for; `None` lets the project's default decide.
    pub fn backend(&self) -> Option<&str> {
        self.backend
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty() && !b.eq_ignore_ascii_case("auto"))
    }

    pub fn query_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.query_timeout_seconds.unwrap_or(7200))
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(b) = self.backend()
            && !matches!(b, "snowflake" | "bigquery")
        {
            return Err(format!(
                "`workspace.backend` must be auto, snowflake or bigquery, got `{b}`"
            ));
        }
        if self.query_timeout_seconds == Some(0) {
            return Err("`workspace.query_timeout_seconds` must be at least 1".into());
        }
        Ok(())
    }
}

impl Parameters {
    fn validate(&self) -> Result<(), String> {
        if let Some(c) = self.concurrency
            && !(1..=64).contains(&c)
        {
            return Err(format!("`concurrency` must be between 1 and 64, got {c}"));
        }
        if self.threads == Some(0) {
            return Err("`threads` must be at least 1".into());
        }
        if self.job_timeout_seconds == Some(0) {
            return Err("`job_timeout_seconds` must be at least 1".into());
        }
        if self.memory_limit.is_some() && self.max_memory_mb.is_some() {
            return Err("set either `memory_limit` or `max_memory_mb`, not both".into());
        }
        if let Some(steps) = &self.steps
            && steps.is_empty()
        {
            return Err("`steps` is empty: list at least one of export, transform, import".into());
        }
        self.workspace.validate()
    }

    /// The concurrency to use for exports and imports.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(4)
    }

    /// The DuckDB memory limit as DuckDB reads it.
    pub fn duckdb_memory_limit(&self) -> Option<String> {
        self.memory_limit
            .clone()
            .or_else(|| self.max_memory_mb.map(|mb| format!("{mb}MB")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(Path::new("config.json"), text)
    }

    #[test]
    fn empty_objects_may_be_arrays_and_defaults_are_filled() {
        let c = parse(
            r#"{"storage": [], "parameters": [], "image_parameters": [], "authorization": []}"#,
        )
        .unwrap();
        assert_eq!(c.action, "run");
        assert!(c.storage.input.tables.is_empty());
        let c = parse(
            r#"{"storage": {"input": {"tables": [{"source": "in.c-a.b", "where_column": "x",
                "where_values": [1, "2"], "where_operator": ""}]}, "output": []},
                "action": "", "unknown_root": 1}"#,
        )
        .unwrap();
        let t = &c.storage.input.tables[0];
        assert_eq!(t.destination(), "in.c-a.b");
        assert_eq!(t.where_values, ["1", "2"]);
        assert_eq!(t.where_operator, Operator::Eq);
        assert_eq!(c.action, "run");
    }

    #[test]
    fn unknown_parameters_are_warnings_that_name_the_closest_key() {
        let c = parse(
            r#"{"parameters": {"concurency": 2, "zzz": 1, "blocks": [{"name": "B", "x": 1,
                "codes": [{"name": "C", "scripts": []}]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.parameters.concurrency(),
            4,
            "the misspelt key is not read"
        );
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("`concurency`")
                && c.warnings[0].contains("did you mean `concurrency`?")
        );
        assert!(
            c.warnings[1].contains("`zzz`") && c.warnings[1].contains("known keys: blocks, steps")
        );
        assert!(c.warnings[2].starts_with("parameters.blocks[0]: unknown key `x`"));
        assert!(
            c.warnings[3].contains("codes[0]: unknown key `scripts`")
                && c.warnings[3].contains("`script`")
        );
        assert!(field_names::<Parameters>().contains(&"#storage_token"));
    }

    #[test]
    fn known_keys_of_the_wrong_type_are_errors_with_their_position() {
        let err = parse("{\"parameters\": {\n  \"concurrency\": \"four\"\n}}").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("parameters.concurrency") && text.contains("line 2"),
            "{text}"
        );
        assert!(err.is_user());
        let err = parse(r#"{"parameters": {"debug": "maybe"}}"#).unwrap_err();
        assert!(err.to_string().contains("parameters.debug"), "{err}");
    }

    #[test]
    fn string_booleans_and_empty_codes_are_accepted() {
        let c = parse(
            r#"{"parameters": {"debug": "true", "dtypes_infer": "False", "syntax_check_on_startup": null,
                "blocks": [{"name": "B", "codes": [{"name": "empty", "script": []}]}]}}"#,
        )
        .unwrap();
        assert_eq!(c.parameters.debug, Some(true));
        assert_eq!(c.parameters.dtypes_infer, Some(false));
        assert_eq!(c.parameters.syntax_check_on_startup, None);
        assert!(c.parameters.blocks[0].codes[0].script.is_empty());
    }

    #[test]
    fn platform_defaults_mean_not_set() {
        let c = parse(
            r#"{"storage": {"output": {"tables": [{"source": "a.csv", "destination": "out.c-a.a",
                "primary_key": ["id"], "columns": [], "schema": [], "metadata": [], "column_metadata": [],
                "tags": [], "incremental": false, "delimiter": ",", "enclosure": "\"",
                "delete_where_operator": "eq", "delete_where_values": [], "write_always": false}]},
                "input": {"tables": [{"source": "in.c-a.b", "where_values": [], "where_operator": "eq",
                "columns": [], "column_types": [], "overwrite": false}]}}}"#,
        )
        .unwrap();
        let o = &c.storage.output.tables[0].options;
        assert_eq!(o.primary_key, Some(vec!["id".to_owned()]));
        assert_eq!((&o.schema, &o.columns, &o.delimiter), (&None, &None, &None));
        assert_eq!((o.incremental, o.write_always), (None, None));
        // In Keboola the platform has checked the mappings: a destination it accepts (a bare table name
        // with a default bucket) is not ours to refuse.
        let text =
            r#"{"storage": {"output": {"tables": [{"source": "a.csv", "destination": "a"}]}}}"#;
        assert!(parse(text).is_err());
        assert!(Config::parse_in(Path::new("config.json"), text, true).is_ok());
    }

    #[test]
    fn secrets_in_bad_values_are_not_echoed() {
        let err = parse(r##"{"parameters": {"#storage_token": 12345678901}}"##).unwrap_err();
        assert!(!err.to_string().contains("12345678901"), "{err}");
    }

    #[test]
    fn rules_are_checked() {
        let err = parse(r#"{"storage": {"input": {"tables": [{"source": "in.c-a.b", "days": 2, "changed_since": "-1 days"}]}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let err = parse(r#"{"storage": {"output": {"tables": [{"source": "x.csv", "destination": "out.c-a"}]}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("exactly two dots"), "{err}");
        // One character but two bytes: refused with the reason, not cut to its first byte.
        let err = parse(r#"{"storage": {"output": {"tables": [{"source": "x.csv", "destination": "out.c-a.t", "delimiter": "§"}]}}}"#)
            .unwrap_err();
        assert!(err.is_user());
        assert!(
            err.to_string().contains(
                "storage.output.tables[0]: x.csv: delimiter `§` is 2 bytes in UTF-8; the delimiter must be a one-byte (ASCII) character"
            ),
            "{err}"
        );
        // The client's rule, checked before anything runs: a stage other than in, out or sys.
        let err = parse(r#"{"storage": {"output": {"tables": [{"source": "x.csv", "destination": "foo.c-a.t"}]}}}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "destination `foo.c-a.t` is not a table id: the stage must be in, out or sys"
            ),
            "{err}"
        );
        let c = parse(r#"{"storage": {"input": {"tables": [{"source": "in.c-a.b", "days": 3}]}}}"#)
            .unwrap();
        assert_eq!(
            c.storage.input.tables[0].changed_since().as_deref(),
            Some("-3 days")
        );
    }

    #[test]
    fn duckdb_transformation_config_is_accepted() {
        let c = parse(
            r#"{"parameters": {"blocks": [{"name": "B", "codes": [{"name": "C", "script": ["SELECT 1"]}]}],
                "threads": 2, "max_memory_mb": 512, "dtypes_infer": false}}"#,
        )
        .unwrap();
        assert_eq!(c.parameters.blocks[0].codes[0].script, ["SELECT 1"]);
        assert_eq!(c.parameters.duckdb_memory_limit().as_deref(), Some("512MB"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON documents, nested a few levels, with keys the parser knows and keys it does not.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("storage".to_owned()),
            Just("input".to_owned()),
            Just("output".to_owned()),
            Just("tables".to_owned()),
            Just("parameters".to_owned()),
            Just("source".to_owned()),
            Just("destination".to_owned()),
            Just("blocks".to_owned()),
            Just("codes".to_owned()),
            Just("script".to_owned()),
            Just("where_values".to_owned()),
            Just("#storage_token".to_owned()),
            "[a-z_#]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_cleanly(text in ".{0,200}") {
            let _ = Config::parse(Path::new("config.json"), &text);
        }

        #[test]
        fn any_json_parses_or_fails_with_a_user_error(value in json_value()) {
            let text = serde_json::to_string(&value).unwrap();
            if let Err(err) = Config::parse(Path::new("config.json"), &text) {
                prop_assert!(err.is_user(), "{err}");
            }
        }

        #[test]
        fn any_manifest_parses_or_fails_with_a_user_error(value in json_value()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.csv.manifest");
            std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
            if let Err(err) = crate::interface::manifest::load_output_manifest(&path) {
                prop_assert!(err.is_user(), "{err}");
            }
            if let Err(err) = crate::interface::manifest::InputManifest::load(&path) {
                prop_assert!(err.is_user(), "{err}");
            }
            if let Err(err) = crate::interface::state::State::load(&path) {
                prop_assert!(err.is_user(), "{err}");
            }
        }
    }
}
