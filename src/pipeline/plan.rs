//! What a run will do, decided before anything runs: which steps, and for each output table the merged
//! mapping + manifest (by the platform's output-mapping rules) with its resolved destination.
//!
//! Pure: reads `out/tables` and the manifests there, never Storage. That keeps the rules unit-testable.

use crate::error::UserError;
use crate::interface::Environment;
use crate::interface::config::{Config, Step};
use crate::interface::manifest::{load_output_manifest, manifest_path};
use crate::interface::output_options::{OutputTableOptions, merge};
use kbc_storage::{DeleteRowsOptions, Dialect, Operator, TableId, WhereFilter};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The steps this run performs: a set of [`Step`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steps([bool; 3]);

impl Steps {
    fn of(steps: &[Step]) -> Steps {
        Steps(Step::ALL.map(|s| steps.contains(&s)))
    }

    /// `parameters.steps` when given; otherwise transform only inside Keboola (the platform maps inputs and
    /// outputs itself) and all three outside it.
    pub(crate) fn decide(config: &Config, env: &Environment) -> Steps {
        match &config.parameters.steps {
            Some(list) => Steps::of(list),
            None if env.in_keboola() => Steps::of(&[Step::Transform]),
            None => Steps::of(&Step::ALL),
        }
    }

    pub(crate) fn contains(self, step: Step) -> bool {
        Step::ALL.iter().zip(self.0).any(|(s, on)| on && *s == step)
    }

    /// `export + import`: the steps, in the order they run.
    pub(crate) fn describe(self) -> String {
        let names: Vec<&str> = Step::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Step::as_str)
            .collect();
        names.join(" + ")
    }
}

/// One output table, ready to import.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputPlan {
    /// File or folder name in `out/tables`.
    pub source: String,
    pub path: PathBuf,
    /// A folder of slices.
    pub sliced: bool,
    pub destination: TableId,
    pub incremental: bool,
    pub primary_key: Vec<String>,
    /// Columns of a header-less file (legacy `columns`, or `schema` without `has_header`).
    pub headless_columns: Option<Vec<String>>,
    /// The header a headed file must have: the `schema` column names, in order (the platform skips the
    /// header line and maps the values by the schema's order).
    pub expected_header: Option<Vec<String>>,
    pub dialect: Dialect,
    /// Rules deleting rows before an incremental load.
    pub delete_where: Vec<DeleteRowsOptions>,
    pub write_always: bool,
}

/// Lists the output tables to import: every mapping `source` (which must exist), plus every other file in
/// `out/tables` (the platform uploads all of them). `only_write_always` keeps just the `write_always` ones.
pub(crate) fn plan_outputs(
    config: &Config,
    out_tables: &Path,
    only_write_always: bool,
) -> anyhow::Result<Vec<OutputPlan>> {
    if only_write_always {
        let files = list_out_tables(out_tables).unwrap_or_default();
        return Ok(plan_write_always(config, out_tables, &files));
    }
    let files = list_out_tables(out_tables)?;
    let mut plans = Vec::new();
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    for mapping in &config.storage.output.tables {
        check_unique(&mut seen, &mapping.source)?;
        if !files.contains(&mapping.source) {
            missing.push(mapping.source.clone());
            continue;
        }
        plans.push(plan_one(
            config,
            Some(out_tables),
            &mapping.source,
            Some(&mapping.options),
        )?);
    }
    if !missing.is_empty() {
        return user_err(format!(
            "table sources not found in {}: {} (storage.output.tables[].source must name a file the \
             transformation wrote)",
            out_tables.display(),
            missing.join(", ")
        ));
    }
    for file in files.iter().filter(|f| !seen.contains(*f)) {
        plans.push(plan_one(config, Some(out_tables), file, None)?);
    }
    check_destinations(&plans)?;
    Ok(plans)
}

/// The output mappings on their own, for the workspace engine (whose outputs are workspace tables, not
/// files). `only_write_always` keeps just the `write_always` ones.
pub(crate) fn plan_mapped_outputs(
    config: &Config,
    only_write_always: bool,
) -> anyhow::Result<Vec<OutputPlan>> {
    let mut plans = Vec::new();
    let mut seen = BTreeSet::new();
    for mapping in &config.storage.output.tables {
        check_unique(&mut seen, &mapping.source)?;
        let plan = plan_one(config, None, &mapping.source, Some(&mapping.options))?;
        if plan.write_always || !only_write_always {
            plans.push(plan);
        }
    }
    check_destinations(&plans)?;
    Ok(plans)
}

/// One source may have one destination.
fn check_unique(seen: &mut BTreeSet<String>, source: &str) -> anyhow::Result<()> {
    if seen.insert(source.to_owned()) {
        return Ok(());
    }
    user_err(format!(
        "storage.output.tables: source `{source}` is listed twice; one source may have one destination"
    ))
}

/// Two outputs loading one table at once would race (and a full load would drop the other's rows).
fn check_destinations(plans: &[OutputPlan]) -> anyhow::Result<()> {
    let mut by_destination: std::collections::BTreeMap<&TableId, &str> = Default::default();
    for p in plans {
        if let Some(other) = by_destination.insert(&p.destination, &p.source) {
            return user_err(format!(
                "output tables {other} and {} both go to {}; combine them in the SQL or give them \
                 different destinations",
                p.source, p.destination
            ));
        }
    }
    Ok(())
}

/// After a failure: only the tables marked `write_always` that were written; anything that cannot be
/// planned is left alone (the job's own error is what the user needs to see).
fn plan_write_always(
    config: &Config,
    out_tables: &Path,
    files: &BTreeSet<String>,
) -> Vec<OutputPlan> {
    let mapped: BTreeSet<&str> = config
        .storage
        .output
        .tables
        .iter()
        .map(|m| m.source.as_str())
        .collect();
    let from_mappings = config
        .storage
        .output
        .tables
        .iter()
        .filter(|m| files.contains(&m.source))
        .filter_map(|m| plan_one(config, Some(out_tables), &m.source, Some(&m.options)).ok());
    let unmapped = files
        .iter()
        .filter(|f| !mapped.contains(f.as_str()))
        .filter_map(|f| plan_one(config, Some(out_tables), f, None).ok());
    from_mappings
        .chain(unmapped)
        .filter(|p| p.write_always)
        .collect()
}

fn user_err<T>(message: String) -> anyhow::Result<T> {
    Err(UserError::new(message).into())
}

/// Data files in `out/tables` (hidden files aside); an orphaned manifest is an error, as on the platform.
fn list_out_tables(out_tables: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    let mut manifests = Vec::new();
    let entries = match std::fs::read_dir(out_tables) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("listing {}", out_tables.display())));
        }
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match name.strip_suffix(".manifest") {
            Some(data) => manifests.push(data.to_owned()),
            None => {
                files.insert(name);
            }
        }
    }
    if let Some(orphan) = manifests.iter().find(|m| !files.contains(*m)) {
        return user_err(format!(
            "found orphaned table manifest {}.manifest in {}: its data file is missing",
            orphan,
            out_tables.display()
        ));
    }
    Ok(files)
}

/// One output's plan. `out_tables: None` plans a mapping on its own (the workspace engine: the data is a
/// workspace table, so there is no file and no manifest).
fn plan_one(
    config: &Config,
    out_tables: Option<&Path>,
    source: &str,
    mapping: Option<&OutputTableOptions>,
) -> anyhow::Result<OutputPlan> {
    let path = out_tables.map_or_else(|| PathBuf::from(source), |dir| dir.join(source));
    let manifest_file = manifest_path(&path);
    let manifest = if out_tables.is_some() && manifest_file.is_file() {
        load_output_manifest(&manifest_file)?
    } else {
        OutputTableOptions::default()
    };
    let mut merged = merge(mapping, &manifest);
    fold_primary_key_into_schema(source, &mut merged)?;
    merged
        .validate()
        .map_err(|m| UserError::new(format!("output table {source}: {m}")))?;
    let dialect = merged
        .dialect()
        .map_err(|m| UserError::new(format!("output table {source}: {m}")))?;
    let sliced = out_tables.is_some() && path.is_dir();
    let destination = resolve_destination(config, source, &merged)?;

    let schema_names: Option<Vec<String>> = merged
        .schema
        .as_ref()
        .map(|s| s.iter().map(|c| c.name.clone()).collect());
    let headless_columns = match (&schema_names, &merged.columns) {
        (Some(names), _) if !merged.has_header.unwrap_or(false) => Some(names.clone()),
        (None, Some(cols)) if !cols.is_empty() => Some(cols.clone()),
        _ => None,
    };
    let expected_header = match &schema_names {
        Some(names) if headless_columns.is_none() => Some(names.clone()),
        _ => None,
    };
    if sliced && headless_columns.is_none() {
        return user_err(format!(
            "sliced output {source} needs its columns: set `columns` (or `schema`) in its manifest or mapping, \
             because slices have no header"
        ));
    }
    let primary_key = match &merged.schema {
        Some(schema) => schema
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.clone())
            .collect(),
        None => merged.primary_key.clone().unwrap_or_default(),
    };
    let delete_where = delete_rules(source, &merged)?;
    Ok(OutputPlan {
        source: source.to_owned(),
        path,
        sliced,
        destination,
        incremental: merged.incremental.unwrap_or(false),
        primary_key,
        headless_columns,
        expected_header,
        dialect,
        delete_where,
        write_always: merged.write_always.unwrap_or(false),
    })
}

/// The rows to delete before an incremental load: the legacy `delete_where_column` trio, or the
/// `delete_where` rules (only `values_from_set`: the other value sources need a workspace).
fn delete_rules(
    source: &str,
    merged: &OutputTableOptions,
) -> anyhow::Result<Vec<DeleteRowsOptions>> {
    let filter = |column: &str, operator: Operator, values: Vec<String>| WhereFilter {
        column: column.to_owned(),
        operator,
        values,
        data_type: None,
    };
    let mut rules = Vec::new();
    if let Some(column) = merged
        .delete_where_column
        .as_deref()
        .filter(|c| !c.is_empty())
    {
        let values = merged.delete_where_values.iter().flatten();
        rules.push(DeleteRowsOptions {
            where_filters: vec![filter(
                column,
                merged.delete_where_operator.unwrap_or_default(),
                values.map(|v| v.0.clone()).collect(),
            )],
            ..Default::default()
        });
    }
    for (i, rule) in merged.delete_where.iter().flatten().enumerate() {
        let mut where_filters = Vec::new();
        for f in &rule.where_filters {
            let Some(values) = &f.values_from_set else {
                return user_err(format!(
                    "output table {source}: delete_where[{i}] filter on `{}` needs `values_from_set`; \
                     values_from_storage and values_from_workspace need a workspace, which this component \
                     does not use",
                    f.column
                ));
            };
            where_filters.push(filter(
                &f.column,
                f.operator,
                values.iter().map(|v| v.0.clone()).collect(),
            ));
        }
        rules.push(DeleteRowsOptions {
            changed_since: rule.changed_since.clone(),
            changed_until: rule.changed_until.clone(),
            where_filters,
            allow_truncate: false,
        });
    }
    Ok(rules)
}

/// A mapping's `primary_key` over a manifest's native-types `schema` (the UI keeps the key in the
/// mapping): the key is marked on the schema's columns, where the schema form keeps it, instead of the two
/// forms clashing. The mapping wins over the schema's own flags.
fn fold_primary_key_into_schema(
    source: &str,
    merged: &mut OutputTableOptions,
) -> anyhow::Result<()> {
    let (Some(schema), Some(pk)) = (merged.schema.as_mut(), merged.primary_key.as_ref()) else {
        return Ok(());
    };
    if pk.is_empty() {
        merged.primary_key = None;
        return Ok(());
    }
    let unknown: Vec<&String> = pk
        .iter()
        .filter(|k| !schema.iter().any(|c| &c.name == *k))
        .collect();
    if !unknown.is_empty() {
        return user_err(format!(
            "output table {source}: primary key columns not in the manifest's schema: {}",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for column in schema.iter_mut() {
        column.primary_key = pk.contains(&column.name);
        if column.primary_key {
            column.nullable = false;
        }
    }
    merged.primary_key = None;
    Ok(())
}

/// The platform's destination order: mapping, manifest, a file name that is a table id (deprecated), the
/// default bucket; otherwise a user error.
fn resolve_destination(
    config: &Config,
    source: &str,
    merged: &OutputTableOptions,
) -> anyhow::Result<TableId> {
    let table_id = |id: String| {
        id.parse::<TableId>()
            .map_err(|e| UserError::new(format!("output table {source}: {e}")))
    };
    if let Some(d) = merged.destination.clone().filter(|d| !d.is_empty()) {
        return Ok(table_id(d)?);
    }
    let base = source.strip_suffix(".csv").unwrap_or(source);
    if let Ok(id) = base.parse::<TableId>() {
        tracing::warn!(
            "output table {source}: the destination is taken from the file name, which is deprecated; \
             set `destination` in storage.output.tables"
        );
        return Ok(id);
    }
    if let Some(bucket) = config
        .storage
        .output
        .default_bucket
        .clone()
        .filter(|b| !b.is_empty())
    {
        return Ok(table_id(format!("{bucket}.{base}"))?);
    }
    user_err(format!(
        "failed to resolve the destination of output table {source}: set `destination` (like \
         out.c-main.{base}) in its storage.output.tables item or manifest"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("config.json"), text).unwrap()
    }

    /// Every default the platform fills into an output-mapping item, next to a primary key: the same plan
    /// as the bare item (this exact shape failed config validation before: `schema` with `primary_key`).
    #[test]
    fn platform_normalised_mapping_plans_like_the_bare_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "\"id\"\n").unwrap();
        let bare = config(
            r#"{"storage": {"output": {"tables": [{"source": "a.csv", "destination": "out.c-b.a",
                "primary_key": ["id"]}]}}}"#,
        );
        let normalised = config(
            r#"{"storage": {"output": {"tables": [{"source": "a.csv", "destination": "out.c-b.a",
                "primary_key": ["id"], "distribution_key": [], "columns": [], "incremental": false,
                "delete_where_values": [], "delete_where_operator": "eq", "delimiter": ",",
                "enclosure": "\"", "metadata": [], "column_metadata": [], "write_always": false,
                "tags": [], "schema": []}]}}}"#,
        );
        assert_eq!(
            plan_outputs(&bare, dir.path(), false).unwrap(),
            plan_outputs(&normalised, dir.path(), false).unwrap()
        );
    }

    #[test]
    fn plans_mapped_and_unmapped_files_and_resolves_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("a.csv"), "\"x\"\n").unwrap();
        std::fs::write(out.join("out.c-b.t2.csv"), "\"x\"\n").unwrap();
        std::fs::write(out.join("c.csv"), "\"x\"\n").unwrap();
        std::fs::write(
            out.join("c.csv.manifest"),
            r#"{"destination": "out.c-b.c", "incremental": true}"#,
        )
        .unwrap();
        std::fs::write(out.join(".a.csv.tmp"), "").unwrap();
        let c = config(
            r#"{"storage": {"output": {"tables": [{"source": "a.csv", "destination": "out.c-b.a",
                "primary_key": ["x"], "delete_where_column": "x", "delete_where_values": [1, 2]}]}}}"#,
        );
        let plans = plan_outputs(&c, out, false).unwrap();
        let dests: Vec<&str> = plans.iter().map(|p| p.destination.as_str()).collect();
        assert_eq!(dests, ["out.c-b.a", "out.c-b.c", "out.c-b.t2"]);
        assert_eq!(plans[0].primary_key, ["x"]);
        assert_eq!(plans[0].delete_where[0].where_filters[0].values, ["1", "2"]);
        assert!(plans[1].incremental);
        assert!(plans[0].headless_columns.is_none());
        assert!(plan_outputs(&c, out, true).unwrap().is_empty());
    }

    #[test]
    fn missing_source_orphan_manifest_and_unresolvable_destination_fail() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let c = config(
            r#"{"storage": {"output": {"tables": [{"source": "nope.csv", "destination": "out.c-b.a"}]}}}"#,
        );
        let err = plan_outputs(&c, out, false).unwrap_err();
        assert!(err.to_string().contains("nope.csv"), "{err}");
        std::fs::write(out.join("z.csv.manifest"), "{}").unwrap();
        let err = plan_outputs(&config("{}"), out, false).unwrap_err();
        assert!(err.to_string().contains("orphaned"), "{err}");
        std::fs::write(out.join("z.csv"), "\"a\"\n").unwrap();
        let err = plan_outputs(&config("{}"), out, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("failed to resolve the destination"),
            "{err}"
        );
        let with_bucket = config(r#"{"storage": {"output": {"default_bucket": "out.c-def"}}}"#);
        assert_eq!(
            plan_outputs(&with_bucket, out, false).unwrap()[0].destination,
            "out.c-def.z"
        );
    }

    #[test]
    fn schema_manifest_decides_header_handling() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("h.csv"), "\"id\"\n").unwrap();
        std::fs::write(
            out.join("h.csv.manifest"),
            r#"{"destination": "out.c-a.h", "has_header": true,
                "schema": [{"name": "id", "primary_key": true}, {"name": "v"}]}"#,
        )
        .unwrap();
        std::fs::write(out.join("n.csv"), "\"1\",\"x\"\n").unwrap();
        std::fs::write(
            out.join("n.csv.manifest"),
            r#"{"destination": "out.c-a.n", "schema": [{"name": "id"}, {"name": "v"}]}"#,
        )
        .unwrap();
        let plans = plan_outputs(&config("{}"), out, false).unwrap();
        assert_eq!(
            plans[0].expected_header,
            Some(vec!["id".to_owned(), "v".to_owned()])
        );
        assert_eq!(plans[0].headless_columns, None);
        assert_eq!(plans[0].primary_key, ["id"]);
        // Without has_header the platform reads the first line as data: the file is header-less.
        assert_eq!(
            plans[1].headless_columns,
            Some(vec!["id".to_owned(), "v".to_owned()])
        );
        assert_eq!(plans[1].expected_header, None);
    }

    #[test]
    fn two_files_for_one_destination_fail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "\"x\"\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), "\"x\"\n").unwrap();
        let c = config(
            r#"{"storage": {"output": {"tables": [{"source": "a.csv", "destination": "out.c-b.t"},
                {"source": "b.csv", "destination": "out.c-b.t"}]}}}"#,
        );
        let err = plan_outputs(&c, dir.path(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("a.csv and b.csv both go to out.c-b.t"),
            "{err}"
        );
    }

    #[test]
    fn mapping_primary_key_is_folded_into_a_manifest_schema() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.csv"), "\"id\",\"v\"\n").unwrap();
        std::fs::write(
            dir.path().join("t.csv.manifest"),
            r#"{"destination": "out.c-a.t", "has_header": true,
                "schema": [{"name": "id"}, {"name": "v", "primary_key": true}]}"#,
        )
        .unwrap();
        let c = config(
            r#"{"storage": {"output": {"tables": [{"source": "t.csv", "primary_key": ["id"]}]}}}"#,
        );
        let plans = plan_outputs(&c, dir.path(), false).unwrap();
        assert_eq!(plans[0].primary_key, ["id"]);
        let c = config(
            r#"{"storage": {"output": {"tables": [{"source": "t.csv", "primary_key": ["nope"]}]}}}"#,
        );
        let err = plan_outputs(&c, dir.path(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("not in the manifest's schema: nope"),
            "{err}"
        );
    }

    #[test]
    fn steps_default_by_platform() {
        let c = config("{}");
        let outside = Environment::default();
        let inside = Environment {
            run_id: Some("1".into()),
            ..Default::default()
        };
        assert_eq!(
            Steps::decide(&c, &outside).describe(),
            "export + transform + import"
        );
        assert_eq!(Steps::decide(&c, &inside).describe(), "transform");
        let c = config(r#"{"parameters": {"steps": ["import", "export"]}}"#);
        assert_eq!(Steps::decide(&c, &inside).describe(), "export + import");
    }
}
