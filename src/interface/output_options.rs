//! The options of an output table, as an output mapping item or an output manifest holds them: the one
//! list of their keys, the platform's checks, and the platform's merge of a mapping over a manifest
//! (output-mapping's ConfigurationMerger rules).

use super::lenient::{self, Scalar};
use super::schema::ColumnSchema;
use kbc_storage::{Delimiter, Dialect, Enclosure, Operator, TableId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One rule of `delete_where` (new form).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeleteWhere {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_until: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub where_filters: Vec<DeleteWhereFilter>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeleteWhereFilter {
    pub column: String,
    #[serde(default, deserialize_with = "lenient::operator")]
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_from_set: Option<Vec<Scalar>>,
    /// Other value sources (`values_from_storage`, `values_from_workspace`) need a workspace; kept verbatim
    /// so we can say clearly that they are not supported.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The options an output table can have, in the mapping or in its manifest (the mapping adds `source`).
/// Fields are `Option` because the merge rules depend on whether a value was set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputTableOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_key: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_where_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_where_values: Option<Vec<Scalar>>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_operator",
        skip_serializing_if = "Option::is_none"
    )]
    pub delete_where_operator: Option<Operator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_where: Option<Vec<DeleteWhere>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclosure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_always: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_header: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnSchema>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unload_strategy: Option<String>,
}

/// The keys an output manifest may hold; the platform rejects any other, and so do we.
pub(crate) const OUTPUT_MANIFEST_KEYS: &[&str] = &[
    "destination",
    "incremental",
    "primary_key",
    "columns",
    "distribution_key",
    "delete_where_column",
    "delete_where_values",
    "delete_where_operator",
    "delete_where",
    "delimiter",
    "enclosure",
    "metadata",
    "column_metadata",
    "write_always",
    "tags",
    "manifest_type",
    "has_header",
    "description",
    "table_metadata",
    "schema",
    "deduplication_strategy",
    "unload_strategy",
];

impl OutputTableOptions {
    /// Turns the platform's filled-in defaults into "not set": an empty list, `false`, `""`, and the default
    /// `incremental`, `delete_where_operator`, `delimiter` and `enclosure`. Then a plain `Option::or` merge is
    /// the platform's merge (a mapping value wins only when it says something), and `"schema": []` is no
    /// schema. `primary_key` is kept as given: the platform lets a mapping's `[]` clear a manifest's key.
    pub fn normalise(&mut self) {
        fn list<T>(v: &mut Option<Vec<T>>) {
            if v.as_ref().is_some_and(Vec::is_empty) {
                *v = None;
            }
        }
        fn text(v: &mut Option<String>, default: &str) {
            if v.as_deref().is_some_and(|s| s.is_empty() || s == default) {
                *v = None;
            }
        }
        fn flag(v: &mut Option<bool>) {
            if *v == Some(false) {
                *v = None;
            }
        }
        list(&mut self.columns);
        list(&mut self.distribution_key);
        list(&mut self.delete_where_values);
        list(&mut self.delete_where);
        list(&mut self.metadata);
        list(&mut self.tags);
        list(&mut self.schema);
        text(&mut self.destination, "");
        text(&mut self.delete_where_column, "");
        text(&mut self.delimiter, ",");
        text(&mut self.enclosure, "\"");
        text(&mut self.manifest_type, "");
        text(&mut self.description, "");
        text(&mut self.deduplication_strategy, "");
        text(&mut self.unload_strategy, "");
        flag(&mut self.incremental);
        flag(&mut self.write_always);
        flag(&mut self.has_header);
        if self.delete_where_operator == Some(Operator::Eq) {
            self.delete_where_operator = None;
        }
        if self.column_metadata.as_ref().is_some_and(is_empty_json) {
            self.column_metadata = None;
        }
        if self.table_metadata.as_ref().is_some_and(Map::is_empty) {
            self.table_metadata = None;
        }
    }

    /// The rules the platform's output mapping checks on a mapping or manifest.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(dest) = self.destination.as_deref().filter(|d| !d.is_empty())
            && let Err(e) = dest.parse::<TableId>()
        {
            return Err(format!(
                "destination `{dest}` is not a table id: {}, like out.c-main.orders",
                e.reason()
            ));
        }
        if self.schema.is_some() {
            for (key, set) in [
                (
                    "columns",
                    self.columns.as_ref().is_some_and(|c| !c.is_empty()),
                ),
                (
                    "primary_key",
                    self.primary_key.as_ref().is_some_and(|c| !c.is_empty()),
                ),
                (
                    "metadata",
                    self.metadata.as_ref().is_some_and(|c| !c.is_empty()),
                ),
                (
                    "column_metadata",
                    self.column_metadata
                        .as_ref()
                        .is_some_and(|c| !is_empty_json(c)),
                ),
            ] {
                if set {
                    return Err(format!("`schema` cannot be combined with `{key}`"));
                }
            }
        }
        let has_old = self
            .delete_where_column
            .as_deref()
            .is_some_and(|c| !c.is_empty());
        if has_old && self.delete_where.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err("`delete_where_column` cannot be combined with `delete_where`".into());
        }
        if has_old
            && self
                .delete_where_values
                .as_ref()
                .is_none_or(|v| v.is_empty())
        {
            return Err("`delete_where_column` needs `delete_where_values`".into());
        }
        for (i, rule) in self.delete_where.iter().flatten().enumerate() {
            if rule.changed_since.is_none()
                && rule.changed_until.is_none()
                && rule.where_filters.is_empty()
            {
                return Err(format!(
                    "delete_where[{i}] needs at least one of changed_since, changed_until, where_filters"
                ));
            }
        }
        self.dialect()?;
        Ok(())
    }

    /// The CSV dialect, after [`OutputTableOptions::normalise`] (unset: `,` and `"`). The text stays in the
    /// struct as the platform writes it (inside Keboola the platform, not us, reads it); this is where it
    /// becomes the one-byte values the import uses.
    pub(crate) fn dialect(&self) -> Result<Dialect, String> {
        let delimiter = match self.delimiter.as_deref() {
            None | Some("") => Delimiter::default(),
            Some(d) => d.parse::<Delimiter>().map_err(|e| e.to_string())?,
        };
        let enclosure = match self.enclosure.as_deref() {
            None => Enclosure::default(),
            Some(e) => e.parse::<Enclosure>().map_err(|e| e.to_string())?,
        };
        Ok(Dialect {
            delimiter,
            enclosure,
        })
    }
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Merges a mapping over a manifest the way the platform's output mapping does. Both sides are
/// [normalised](OutputTableOptions::normalise) first (defaults and empty values are "not set"), so the
/// mapping wins wherever it says something and the manifest fills the rest; the exception is
/// `primary_key`, where a mapping's value replaces the manifest's even when empty (the platform always sends
/// one, `[]` by default, so a mapping without the key is read as `[]`). `mapping` is `None` for a file in
/// `out/tables` that no mapping names: then the manifest alone counts. The platform's key-by-key merges of `metadata`, `column_metadata`, `table_metadata` and
/// `schema` are not needed here: the import sends no metadata, and `schema` comes from one side.
pub(crate) fn merge(
    mapping: Option<&OutputTableOptions>,
    manifest: &OutputTableOptions,
) -> OutputTableOptions {
    let mapped = mapping.is_some();
    let mut mapping = mapping.cloned().unwrap_or_default();
    let mut manifest = manifest.clone();
    mapping.normalise();
    manifest.normalise();
    fn pick<T>(m: Option<T>, f: Option<T>) -> Option<T> {
        m.or(f)
    }
    let OutputTableOptions {
        destination,
        incremental,
        primary_key,
        columns,
        distribution_key,
        delete_where_column,
        delete_where_values,
        delete_where_operator,
        delete_where,
        delimiter,
        enclosure,
        metadata,
        column_metadata,
        write_always,
        tags,
        manifest_type,
        has_header,
        description,
        table_metadata,
        schema,
        deduplication_strategy,
        unload_strategy,
    } = mapping;
    let mut merged = OutputTableOptions {
        destination: pick(destination, manifest.destination.take()),
        incremental: pick(incremental, manifest.incremental),
        primary_key: if mapped {
            Some(primary_key.unwrap_or_default())
        } else {
            manifest.primary_key.take()
        },
        columns: pick(columns, manifest.columns.take()),
        distribution_key: pick(distribution_key, manifest.distribution_key.take()),
        delete_where_column: pick(
            delete_where_column.clone(),
            manifest.delete_where_column.take(),
        ),
        delete_where_values: pick(delete_where_values, manifest.delete_where_values.take()),
        delete_where_operator: pick(delete_where_operator, manifest.delete_where_operator),
        delete_where: pick(delete_where.clone(), manifest.delete_where.take()),
        delimiter: pick(delimiter, manifest.delimiter.take()),
        enclosure: pick(enclosure, manifest.enclosure.take()),
        metadata: pick(metadata, manifest.metadata.take()),
        column_metadata: pick(column_metadata, manifest.column_metadata.take()),
        write_always: pick(write_always, manifest.write_always),
        tags: pick(tags, manifest.tags.take()),
        manifest_type: pick(manifest_type, manifest.manifest_type.take()),
        has_header: pick(has_header, manifest.has_header),
        description: pick(description, manifest.description.take()),
        table_metadata: pick(table_metadata, manifest.table_metadata.take()),
        schema: pick(schema, manifest.schema.take()),
        deduplication_strategy: pick(
            deduplication_strategy,
            manifest.deduplication_strategy.take(),
        ),
        unload_strategy: pick(unload_strategy, manifest.unload_strategy.take()),
    };
    // One legacy-vs-new delete rule form at a time: the mapping's form wins.
    if delete_where.is_some() {
        merged.delete_where_column = None;
    } else if delete_where_column.is_some() {
        merged.delete_where = None;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(json: &str) -> OutputTableOptions {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn merge_follows_the_platform() {
        let merged = |mapping: &str, manifest: &str| merge(Some(&opts(mapping)), &opts(manifest));
        // A mapping's false or default value cannot undo the manifest's.
        let m = merged(r#"{"incremental": false}"#, r#"{"incremental": true}"#);
        assert_eq!(m.incremental, Some(true));
        let m = merged(r#"{"incremental": true}"#, r#"{"incremental": false}"#);
        assert_eq!(m.incremental, Some(true));
        let m = merged(r#"{"delimiter": ","}"#, r#"{"delimiter": ";"}"#);
        assert_eq!(m.delimiter.as_deref(), Some(";"));
        let m = merged(
            r#"{"destination": "out.c-a.x", "primary_key": ["id"]}"#,
            r#"{"destination": "out.c-a.y", "primary_key": ["a", "b"]}"#,
        );
        assert_eq!(m.destination.as_deref(), Some("out.c-a.x"));
        assert_eq!(m.primary_key, Some(vec!["id".to_owned()]));
        // A mapping's empty primary key (the platform's default) clears the manifest's...
        let m = merged(r#"{"primary_key": []}"#, r#"{"primary_key": ["a"]}"#);
        assert_eq!(m.primary_key, Some(vec![]));
        // ...but a file no mapping names keeps its manifest's.
        let m = merge(None, &opts(r#"{"primary_key": ["a"]}"#));
        assert_eq!(m.primary_key, Some(vec!["a".to_owned()]));
        // Empty lists and strings are "not set": the manifest's values stay.
        let m = merged(
            r#"{"columns": [], "schema": [], "destination": "", "write_always": false}"#,
            r#"{"columns": ["a"], "destination": "out.c-a.y", "write_always": true}"#,
        );
        assert_eq!(m.columns, Some(vec!["a".to_owned()]));
        assert_eq!(m.destination.as_deref(), Some("out.c-a.y"));
        assert_eq!((m.schema, m.write_always), (None, Some(true)));
    }

    /// A value for every key of the list that survives [`OutputTableOptions::normalise`]. A key added to
    /// the list without a value here fails the tests below.
    fn full_options() -> Value {
        let sample = |key: &str| match key {
            "destination" => json!("out.c-a.t"),
            "incremental" | "write_always" | "has_header" => json!(true),
            "primary_key" | "columns" | "distribution_key" => json!(["id"]),
            "delete_where_column" => json!("id"),
            "delete_where_values" => json!(["1"]),
            "delete_where_operator" => json!("ne"),
            "delete_where" => json!([{"changed_since": "-1 days"}]),
            "delimiter" => json!(";"),
            "enclosure" => json!("'"),
            "metadata" => json!([{"key": "k", "value": "v"}]),
            "column_metadata" => json!({"id": [{"key": "k", "value": "v"}]}),
            "tags" => json!(["t"]),
            "manifest_type" => json!("output"),
            "description" => json!("d"),
            "table_metadata" => json!({"k": "v"}),
            "schema" => json!([{"name": "id"}]),
            "deduplication_strategy" => json!("insert"),
            "unload_strategy" => json!("direct-grant"),
            other => panic!("no sample value for the output option `{other}`"),
        };
        Value::Object(
            OUTPUT_MANIFEST_KEYS
                .iter()
                .map(|k| ((*k).to_owned(), sample(k)))
                .collect(),
        )
    }

    fn keys(options: &OutputTableOptions) -> Vec<String> {
        let mut keys: Vec<String> = serde_json::to_value(options)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn list_without(skip: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = OUTPUT_MANIFEST_KEYS
            .iter()
            .filter(|k| !skip.contains(k))
            .map(|k| (*k).to_owned())
            .collect();
        keys.sort();
        keys
    }

    /// The struct, the key list (which the manifest reader checks against), the config reader (a mapping
    /// item is `source` plus these options) and the merge all know the same keys.
    #[test]
    fn one_key_list_for_the_struct_the_readers_and_the_merge() {
        let full: OutputTableOptions = serde_json::from_value(full_options()).unwrap();
        assert_eq!(
            keys(&full),
            list_without(&[]),
            "struct fields vs OUTPUT_MANIFEST_KEYS"
        );
        let mut item = full_options();
        item["source"] = json!("t.csv");
        let mapping: super::super::config::OutputTableMapping =
            serde_json::from_value(item).unwrap();
        assert_eq!(mapping.options, full, "the config reader reads every key");
        // A file no mapping names keeps every value of its manifest.
        assert_eq!(keys(&merge(None, &full)), list_without(&[]));
        // A mapping's values all win; its new-form `delete_where` drops the legacy `delete_where_column`.
        let merged = merge(Some(&full), &OutputTableOptions::default());
        assert_eq!(keys(&merged), list_without(&["delete_where_column"]));
        // A mapping that says nothing leaves the manifest's values (the primary key aside: a mapping's
        // key, `[]` by default, always replaces the manifest's).
        let merged = merge(Some(&OutputTableOptions::default()), &full);
        assert_eq!(keys(&merged), list_without(&[]));
        assert_eq!(merged.primary_key, Some(vec![]));
    }
}
