//! Table manifests: the JSON files beside each CSV in `in/tables` and `out/tables`.
//!
//! Input manifests are read (only `id` is guaranteed) and written by our export step as the platform writes
//! them. Output manifests come in two forms, chosen by the effective data type support: the legacy form
//! (`columns`, `primary_key`, `column_metadata`) and the native-types form (`schema`, `has_header`).

use super::output_options::{OUTPUT_MANIFEST_KEYS, OutputTableOptions};
use super::schema::{ColumnSchema, DataType, DataTypeSupport, DataTypes};
use super::{Error, parse_json, write_json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Which output manifest form to write: the config's `storage.output.data_type_support` wins over the
/// environment's `KBC_DATA_TYPE_SUPPORT`; with neither, the legacy form.
pub fn uses_schema_form(config: Option<DataTypeSupport>, env: Option<DataTypeSupport>) -> bool {
    matches!(
        config.or(env),
        Some(DataTypeSupport::Authoritative | DataTypeSupport::Hints)
    )
}

/// The path of a table's manifest: `x.csv` → `x.csv.manifest` (also for sliced folders).
pub fn manifest_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".manifest");
    PathBuf::from(name)
}

/// An input table manifest (`in/tables/<dest>.manifest`). The platform always writes `id`, but manifests
/// written by hand (the DuckDB transformation's own test fixtures) may lack it, so it is read as empty
/// then. The fields removed in 2018 (`rows_count`, `is_alias`, ...) and unknown ones are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputManifest {
    #[serde(default, deserialize_with = "super::lenient::string")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::list")]
    pub primary_key: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_key: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_import_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::list")]
    pub columns: Vec<String>,
    #[serde(default, deserialize_with = "super::lenient::list")]
    pub metadata: Vec<Value>,
    #[serde(default, deserialize_with = "super::lenient::object")]
    pub column_metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnSchema>>,
}

impl InputManifest {
    pub fn load(path: &Path) -> Result<InputManifest, Error> {
        let text = super::read_text(path)?;
        parse_json(path, &text)
    }

    pub fn write(&self, path: &Path) -> Result<(), Error> {
        write_json(path, self)
    }
}

/// Reads an output manifest strictly, as the platform's output mapping does: an unknown key fails.
pub fn load_output_manifest(path: &Path) -> Result<OutputTableOptions, Error> {
    let text = super::read_text(path)?;
    let raw: Value = parse_json(path, &text)?;
    let Value::Object(map) = &raw else {
        return Err(Error::invalid(path, "a manifest must be a JSON object"));
    };
    if let Some(key) = map
        .keys()
        .find(|k| !OUTPUT_MANIFEST_KEYS.contains(&k.as_str()))
    {
        return Err(Error::invalid(
            path,
            format!(
                "unknown key `{key}`; valid keys are: {}",
                OUTPUT_MANIFEST_KEYS.join(", ")
            ),
        ));
    }
    let mut options: OutputTableOptions = parse_json(path, &text)?;
    options.normalise();
    options.validate().map_err(|m| Error::invalid(path, m))?;
    Ok(options)
}

/// What the transform step knows about an output table when it writes the manifest.
#[derive(Debug, Clone, Default)]
pub struct OutputTableSpec {
    pub destination: Option<String>,
    pub incremental: bool,
    pub primary_key: Vec<String>,
    /// Columns with their base types (when known).
    pub columns: Vec<(String, Option<String>)>,
    /// The data is a folder of header-less slices (otherwise one CSV with a header row).
    pub sliced: bool,
    pub write_always: bool,
    pub description: Option<String>,
}

impl OutputTableSpec {
    /// Builds the manifest in the form the data type support asks for, following the header rules:
    /// legacy `columns` only for header-less data (or the header would load as a row); `has_header: true`
    /// in the schema form exactly when the CSV has one.
    pub fn to_manifest(&self, schema_form: bool) -> Value {
        let mut m = Map::new();
        if let Some(d) = &self.destination {
            m.insert("destination".into(), Value::from(d.clone()));
        }
        m.insert("incremental".into(), Value::from(self.incremental));
        m.insert("delimiter".into(), Value::from(","));
        m.insert("enclosure".into(), Value::from("\""));
        if self.write_always {
            m.insert("write_always".into(), Value::from(true));
        }
        if schema_form {
            m.insert("manifest_type".into(), Value::from("output"));
            m.insert("has_header".into(), Value::from(!self.sliced));
            if let Some(d) = &self.description {
                m.insert("description".into(), Value::from(d.clone()));
            }
            let schema: Vec<ColumnSchema> = self
                .columns
                .iter()
                .map(|(name, base)| {
                    let pk = self.primary_key.contains(name);
                    ColumnSchema {
                        name: name.clone(),
                        data_type: base.as_ref().map(|b| DataTypes {
                            base: Some(DataType {
                                type_name: b.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        nullable: !pk,
                        primary_key: pk,
                        ..Default::default()
                    }
                })
                .collect();
            m.insert(
                "schema".into(),
                serde_json::to_value(schema).expect("schema serializes"),
            );
        } else {
            m.insert("primary_key".into(), Value::from(self.primary_key.clone()));
            if self.sliced {
                let names: Vec<String> = self.columns.iter().map(|(n, _)| n.clone()).collect();
                m.insert("columns".into(), Value::from(names));
            }
            if let Some(d) = &self.description {
                m.insert(
                    "metadata".into(),
                    serde_json::json!([{"key": "KBC.description", "value": d}]),
                );
            }
            let typed: Map<String, Value> = self
                .columns
                .iter()
                .filter_map(|(name, base)| {
                    base.as_ref().map(|b| {
                        (
                            name.clone(),
                            serde_json::json!([{"key": "KBC.datatype.basetype", "value": b}]),
                        )
                    })
                })
                .collect();
            if !typed.is_empty() {
                m.insert("column_metadata".into(), Value::Object(typed));
            }
        }
        Value::Object(m)
    }

    pub fn write(&self, data_path: &Path, schema_form: bool) -> Result<(), Error> {
        write_json(&manifest_path(data_path), &self.to_manifest(schema_form))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(sliced: bool) -> OutputTableSpec {
        OutputTableSpec {
            destination: Some("out.c-main.t".into()),
            incremental: true,
            primary_key: vec!["id".into()],
            columns: vec![("id".into(), Some("INTEGER".into())), ("name".into(), None)],
            sliced,
            ..Default::default()
        }
    }

    #[test]
    fn legacy_manifest_lists_columns_only_when_headerless() {
        let m = spec(false).to_manifest(false);
        assert_eq!(
            m,
            json!({"destination": "out.c-main.t", "incremental": true, "delimiter": ",", "enclosure": "\"",
                   "primary_key": ["id"],
                   "column_metadata": {"id": [{"key": "KBC.datatype.basetype", "value": "INTEGER"}]}})
        );
        assert_eq!(
            spec(true).to_manifest(false)["columns"],
            json!(["id", "name"])
        );
    }

    #[test]
    fn schema_manifest_sets_has_header_by_slicing() {
        let m = spec(false).to_manifest(true);
        assert_eq!(m["has_header"], json!(true));
        assert_eq!(
            m["schema"][0],
            json!({"name": "id", "data_type": {"base": {"type": "INTEGER"}},
                                          "nullable": false, "primary_key": true})
        );
        assert_eq!(
            m["schema"][1],
            json!({"name": "name", "nullable": true, "primary_key": false})
        );
        assert!(m.get("columns").is_none() && m.get("primary_key").is_none());
        assert_eq!(spec(true).to_manifest(true)["has_header"], json!(false));
    }

    #[test]
    fn form_follows_config_then_env() {
        use DataTypeSupport as D;
        assert!(!uses_schema_form(None, None));
        assert!(uses_schema_form(None, Some(D::Hints)));
        assert!(!uses_schema_form(Some(D::None), Some(D::Authoritative)));
        assert!(uses_schema_form(Some(D::Authoritative), None));
    }

    #[test]
    fn input_manifest_needs_only_id_and_output_manifest_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv.manifest");
        std::fs::write(
            &p,
            r#"{"id": "in.c-a.b", "rows_count": 5, "column_metadata": []}"#,
        )
        .unwrap();
        let m = InputManifest::load(&p).unwrap();
        assert_eq!(m.id, "in.c-a.b");
        std::fs::write(&p, r#"{"destination": "out.c-a.b", "colums": ["x"]}"#).unwrap();
        let err = load_output_manifest(&p).unwrap_err();
        assert!(err.to_string().contains("unknown key `colums`"), "{err}");
        assert_eq!(
            manifest_path(Path::new("out/x.csv")),
            Path::new("out/x.csv.manifest")
        );
    }
}
