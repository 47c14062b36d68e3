//! Column schemas and data types: the native-types `schema` of manifests and how strongly a component
//! declares its types. Shared by `config.json` (output mappings), the manifests, and the environment.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How strongly a component declares its output data types (`KBC_DATA_TYPE_SUPPORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataTypeSupport {
    Authoritative,
    Hints,
    None,
}

impl std::str::FromStr for DataTypeSupport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "authoritative" => Ok(DataTypeSupport::Authoritative),
            "hints" => Ok(DataTypeSupport::Hints),
            "none" => Ok(DataTypeSupport::None),
            other => Err(format!(
                "`{other}` is not one of authoritative, hints, none"
            )),
        }
    }
}

/// A column's data type per backend (`base` is the portable one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataTypes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DataType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snowflake: Option<DataType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bigquery: Option<DataType>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataType {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_scalar_string"
    )]
    pub length: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_scalar_string"
    )]
    pub default: Option<String>,
}

/// The platform coerces `length`/`default` to strings (`38` → `"38"`, `true` → `"true"`).
fn opt_scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<super::lenient::Scalar>::deserialize(d)?.map(|s| s.0))
}

/// One column of a native-types `schema`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataTypes>,
    #[serde(default = "yes")]
    pub nullable: bool,
    #[serde(default)]
    pub primary_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_key: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

impl ColumnSchema {
    /// The portable base type (`STRING`, `INTEGER`, `NUMERIC`, `FLOAT`, `BOOLEAN`, `DATE`, `TIMESTAMP`).
    pub fn base_type(&self) -> Option<&str> {
        self.data_type
            .as_ref()
            .and_then(|d| d.base.as_ref())
            .map(|b| b.type_name.as_str())
    }
}
