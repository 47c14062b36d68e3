//! The table engine: rows on disk and the operations of Storage jobs over them. This module holds the
//! engine's API types; the work is in `io` (reader and writer threads, the data file format), `keys` (key
//! hashes and duplicates), `load`, `select` (selection, delete) and `export`.
//!
//! A table's rows live in one CSV file per generation (`data.<gen>.csv`), each record being the row's import
//! stamp (unix seconds, what `changedSince` filters on) followed by the values in table column order. Rows
//! written before a column was added are shorter and read as `""` for it. Every change streams the old
//! generation plus the incoming data into a new file, so memory never grows with the table; a load with a
//! primary key holds only the incoming load's keys in memory: 16 bytes per row (a sortable 96-bit key hash
//! and the row's index), or, when merging into stored rows, a map from key to row plus a hash of each row.
//!
//! Duplicate primary keys inside one load collapse to the **last** occurrence (last-wins); Keboola keeps an
//! arbitrary one, so callers must not rely on the choice.
//!
//! Data files are flushed but not fsync'd: a generation only becomes visible through the atomic rename of
//! `meta.json`, so a crash of the process never exposes a half-written table; surviving power loss is not
//! a goal of an emulator, and fsync of multi-gigabyte files costs seconds.

use std::path::{Path, PathBuf};

mod export;
mod io;
mod keys;
mod load;
mod select;

pub(crate) use export::{export, rfc_writer};
pub(crate) use keys::has_duplicate_keys;
pub(crate) use load::load;
pub(crate) use select::{
    delete_rows, drop_column, for_each_selected, select_rows, select_rows_ordered,
};

/// How an incoming CSV is written.
#[derive(Debug, Clone)]
pub(crate) struct Dialect {
    pub(crate) delimiter: u8,
    pub(crate) enclosure: Option<u8>,
    pub(crate) escaped_by: Option<u8>,
}

impl Default for Dialect {
    fn default() -> Self {
        Self {
            delimiter: b',',
            enclosure: Some(b'"'),
            escaped_by: None,
        }
    }
}

/// Replaces every character outside `[A-Za-z0-9_]` with `_`, as Storage does for new tables.
pub(crate) fn normalize_column_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A comparison of `whereFilters` (and the deprecated `whereColumn` trio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub(crate) fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Filter {
    /// Index into the table's columns.
    pub(crate) column: usize,
    pub(crate) op: Op,
    pub(crate) values: Vec<Vec<u8>>,
    /// Compare as numbers (`dataType` INTEGER, DOUBLE, ...).
    pub(crate) numeric: bool,
}

/// Which rows an export, preview or delete selects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub(crate) filters: Vec<Filter>,
    /// Rows whose stamp is strictly greater (so `changedSince == lastImportDate` excludes that load).
    pub(crate) changed_since: Option<i64>,
    /// Rows whose stamp is strictly smaller.
    pub(crate) changed_until: Option<i64>,
}

/// One `orderBy` key: a table column index, descending or not, compared as numbers or as bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrderKey {
    pub(crate) column: usize,
    pub(crate) descending: bool,
    pub(crate) numeric: bool,
}

/// A load into a table (create, full or incremental import).
pub(crate) struct Load<'a> {
    pub(crate) sources: Vec<PathBuf>,
    pub(crate) dialect: Dialect,
    /// `columns[]`: the file's columns, and the file has no header.
    pub(crate) file_columns: Option<Vec<String>>,
    pub(crate) without_headers: bool,
    pub(crate) incremental: bool,
    /// Table creation: normalise header names and take them as the table's columns.
    pub(crate) create: bool,
    /// A typed table: no new columns, and every incoming key is re-stamped even when its values are equal
    /// (Keboola's documented difference between typed and string tables).
    pub(crate) typed: bool,
    pub(crate) table_columns: Vec<String>,
    pub(crate) primary_key: Vec<String>,
    pub(crate) existing: Option<&'a Path>,
    pub(crate) stamp: i64,
    pub(crate) out: PathBuf,
    pub(crate) scratch: PathBuf,
}

#[derive(Debug)]
pub(crate) struct LoadOutcome {
    pub(crate) columns: Vec<String>,
    pub(crate) imported_columns: Vec<String>,
    pub(crate) rows_count: u64,
    pub(crate) data_size_bytes: u64,
    pub(crate) changed: bool,
}

/// An export request over a table's rows.
pub(crate) struct Export<'a> {
    pub(crate) data: Option<&'a Path>,
    pub(crate) selection: Selection,
    pub(crate) columns: Vec<usize>,
    pub(crate) limit: Option<u64>,
    pub(crate) gzip: bool,
    /// Append the row's import stamp as a last `_timestamp` column (`2024-01-31 12:00:00`, UTC).
    pub(crate) with_timestamp: bool,
    /// Where slice `i` goes.
    pub(crate) slice_path: &'a (dyn Fn(usize) -> PathBuf + Sync),
    /// Truncate the first slice to this many bytes (fault injection).
    pub(crate) truncate_first_slice: Option<u64>,
}

/// Helpers of the engine's tests: source files, a load with defaults, the stored rows.
#[cfg(test)]
pub(super) mod test_support {
    use super::io::for_each_row;
    use super::{Dialect, Load, LoadOutcome, load};
    use crate::error::JobError;
    use std::path::{Path, PathBuf};

    pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub(crate) fn rows(data: &Path) -> Vec<(i64, Vec<String>)> {
        let mut out = Vec::new();
        for_each_row(Some(data), |s, r| {
            out.push((
                s,
                r.iter()
                    .skip(1)
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            ));
            Ok(true)
        })
        .unwrap();
        out.sort();
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        dir: &Path,
        src: &Path,
        existing: Option<&Path>,
        cols: &[&str],
        pk: &[&str],
        inc: bool,
        stamp: i64,
        out: &str,
    ) -> Result<LoadOutcome, JobError> {
        load(Load {
            sources: vec![src.to_owned()],
            dialect: Dialect::default(),
            file_columns: None,
            without_headers: false,
            incremental: inc,
            create: existing.is_none() && cols.is_empty(),
            typed: false,
            table_columns: cols.iter().map(|s| s.to_string()).collect(),
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            existing,
            stamp,
            out: dir.join(out),
            scratch: dir.join(format!("{out}.scratch")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_column_name;

    #[test]
    fn header_names_are_normalised_on_create() {
        assert_eq!(normalize_column_name("col2 with space"), "col2_with_space");
        assert_eq!(normalize_column_name("language-id"), "language_id");
    }
}
