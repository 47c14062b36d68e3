//! Loads: a CSV source (or several, gzipped or not) into a table's next generation, in three phases:
//! resolve the columns, stage the incoming rows with their keys, write the generation.

use super::io::{
    RowWriteBehind, WriteBehind, data_file, finish_file, finish_writer, for_each_raw_row,
    open_source, rows_writer,
};
use super::keys::{KeyMap, PackedKeys, duplicate_losers, hash_of, key_of, pack_key};
use super::{Load, LoadOutcome, normalize_column_name};
use crate::error::JobError;
use csv::{ByteRecord, ReaderBuilder};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};

fn csv_error(e: csv::Error) -> JobError {
    JobError::new(
        "invalidCsv",
        format!("Load error: the CSV file is invalid: {e}"),
    )
}

/// Whether every value of a record is UTF-8, checked over the record's bytes at once (ten calls per row
/// showed in the profile): valid as a whole, and no value starting with a continuation byte, which is what
/// a character split across two values would look like.
fn record_is_utf8(rec: &ByteRecord) -> bool {
    let all = rec.as_slice();
    all.is_ascii()
        || (std::str::from_utf8(all).is_ok()
            && rec
                .iter()
                .all(|f| f.first().is_none_or(|&b| !(0x80..0xC0).contains(&b))))
}

/// A CSV reader of a load's source.
type SourceReader = csv::Reader<Box<dyn Read + Send>>;

/// The columns of a load: the file's, the table's once loaded, and how they map.
struct Columns {
    /// The file's columns, in file order (header names, or given).
    file: Vec<String>,
    /// The table's columns after the load: the old ones, then new ones from the file.
    table: Vec<String>,
    /// For each table column, its position in the file (`usize::MAX`: not in the file).
    positions: Vec<usize>,
    /// The primary key, as table column indexes.
    pk: Vec<usize>,
}

/// The incoming rows, staged in the stored format (stamped, in table column order) in `load.scratch`,
/// with what the next generation needs to know of their keys.
struct Staged {
    rows: u64,
    /// Merges: key → index of its last incoming row (`u64::MAX` once a stored row proved it unchanged).
    keys: KeyMap<u64>,
    /// Upserts: each incoming row's hash, to tell an unchanged row apart.
    row_hashes: Vec<u64>,
    /// Other loads: the rows that a later row with the same key replaces (None: no key repeats).
    losers: Option<Vec<u64>>,
}

impl Load<'_> {
    /// Whether stored rows are looked up by key (they are merged with the incoming ones).
    fn merges(&self) -> bool {
        self.incremental && self.existing.is_some()
    }

    /// Whether an incoming row equal to its stored row keeps the stored row and its stamp (string tables;
    /// typed tables re-stamp every incoming key).
    fn upserts(&self) -> bool {
        self.merges() && !self.typed
    }
}

/// Runs a load, writing the table's next generation to `load.out`. On error nothing but scratch files was
/// written and the caller keeps the old generation.
pub(crate) fn load(load: Load<'_>) -> Result<LoadOutcome, JobError> {
    let mut sources = load.sources.iter();
    let mut first = match sources.next() {
        Some(p) => Some(load.dialect.reader(open_source(p)?)),
        None => None,
    };
    let columns = resolve_columns(&load, first.as_mut())?;
    let readers =
        first
            .into_iter()
            .map(Ok)
            .chain(sources.map(|p| -> Result<SourceReader, JobError> {
                Ok(load.dialect.reader(open_source(p)?))
            }));
    let staged = stage_incoming(&load, &columns, readers)?;
    write_generation(&load, &columns, staged)
}

/// Phase 1: the file's columns (from the header, which `first` is positioned after, or as given), checked
/// and matched against the table's.
fn resolve_columns(load: &Load<'_>, first: Option<&mut SourceReader>) -> Result<Columns, JobError> {
    let file = file_columns(load, first)?;
    let base: Vec<String> = if load.create {
        file.clone()
    } else {
        load.table_columns.clone()
    };
    let missing: Vec<String> = base.iter().filter(|c| !file.contains(c)).cloned().collect();
    if !missing.is_empty() {
        let mut err = JobError::new(
            "csvImport.columnsNotMatch",
            format!(
                "Some columns are missing in the csv file. Missing columns: {}. Expected columns: {}. Please check if the expected delimiter \"{}\" is used in the csv file.",
                missing.join(","),
                base.join(","),
                load.dialect.delimiter as char
            ),
        );
        err.results = Some(serde_json::json!({"missingColumns": missing, "expectedColumns": base}));
        return Err(err);
    }
    let mut table = base;
    for c in &file {
        if !table.contains(c) {
            if load.typed {
                return Err(JobError::new(
                    "storage.tables.validation.unknownColumns",
                    format!(
                        "The column \"{c}\" is not in the typed table's definition; add it with POST tables/{{id}}/columns first."
                    ),
                ));
            }
            // A new column must be a valid name: Storage does not rename columns of existing tables.
            if normalize_column_name(c) != *c {
                return Err(JobError::new(
                    "storage.tables.validation.invalidColumnName",
                    format!(
                        "The new column \"{c}\" has an invalid name: only alphanumeric characters and underscores are allowed."
                    ),
                ));
            }
            table.push(c.clone());
        }
    }
    let positions = table
        .iter()
        .map(|c| file.iter().position(|f| f == c).unwrap_or(usize::MAX))
        .collect();
    let pk = load
        .primary_key
        .iter()
        .map(|k| {
            table.iter().position(|c| c == k).ok_or_else(|| {
                JobError::new(
                    "storage.tables.validation.invalidPrimaryKeyColumns",
                    format!("Primary key column \"{k}\" is not a column of the table"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Columns {
        file,
        table,
        positions,
        pk,
    })
}

/// The file's columns: given (`columns[]`), the table's (`withoutHeaders`), or the header row's (BOM
/// removed; normalised when the load creates the table). Named, and each once.
fn file_columns(
    load: &Load<'_>,
    first: Option<&mut SourceReader>,
) -> Result<Vec<String>, JobError> {
    let columns: Vec<String> = if let Some(cols) = &load.file_columns {
        cols.clone()
    } else if load.without_headers {
        load.table_columns.clone()
    } else {
        let mut header = Vec::new();
        let mut rec = ByteRecord::new();
        if let Some(r) = first
            && r.read_byte_record(&mut rec).map_err(csv_error)?
        {
            header = rec
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let f = if i == 0 {
                        f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
                    } else {
                        f
                    };
                    String::from_utf8_lossy(f).into_owned()
                })
                .collect();
        }
        if load.create {
            header.iter().map(|h| normalize_column_name(h)).collect()
        } else {
            header
        }
    };
    if columns.is_empty() || columns.iter().any(|c| c.is_empty()) {
        return Err(JobError::new(
            "storage.tables.validation.noColumns",
            "The CSV file has no header row or an empty column name; a table needs named columns.",
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = columns.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(JobError::new(
            "storage.tables.validation.duplicateColumn",
            format!("The CSV file has the column \"{dup}\" more than once."),
        ));
    }
    Ok(columns)
}

/// Phase 2: reads every source once, writing the incoming rows stamped and in table column order (the
/// stored format) to `load.scratch`, and keeps their keys in memory (last-wins).
fn stage_incoming(
    load: &Load<'_>,
    cols: &Columns,
    readers: impl Iterator<Item = Result<SourceReader, JobError>>,
) -> Result<Staged, JobError> {
    let stamp = load.stamp.to_string();
    let (upsert, merge) = (load.upserts(), load.merges());
    let width = cols.table.len();
    // Merges keep a map from key to row; other loads one packed key per row (16 bytes), sorted at the end.
    let mut keys: KeyMap<u64> = KeyMap::default();
    let mut packed_keys = PackedKeys::new();
    let mut row_hashes: Vec<u64> = Vec::new();
    let mut rows = 0u64;
    let mut rec = ByteRecord::new();
    let mut scratch = RowWriteBehind::spawn(&load.scratch)?;
    for reader in readers {
        let mut r = reader?;
        while r.read_byte_record(&mut rec).map_err(csv_error)? {
            if rec.len() == 1 && rec.get(0) == Some(b"") && cols.file.len() > 1 {
                continue; // a blank line
            }
            check_record(&rec, &cols.file)?;
            let out = scratch.next_row();
            out.push_field(stamp.as_bytes());
            for &p in &cols.positions {
                out.push_field(rec.get(p).unwrap_or(b""));
            }
            if !cols.pk.is_empty() {
                // The row hash only matters when comparing with stored rows (an upsert).
                if upsert {
                    row_hashes.push(hash_of(out, 1, width));
                }
                if merge {
                    keys.insert(key_of(out, 1, &cols.pk), rows);
                } else {
                    let index = u32::try_from(rows).map_err(|_| {
                        JobError::new(
                            "storage.tables.validation.tooManyRows",
                            "The emulator loads at most 4,294,967,295 rows with a primary key at once.",
                        )
                    })?;
                    packed_keys.push(pack_key(key_of(out, 1, &cols.pk), index));
                }
            }
            scratch.commit_row()?;
            rows += 1;
        }
    }
    scratch.finish()?;
    let losers = if merge {
        None
    } else {
        duplicate_losers(packed_keys, rows)
    };
    Ok(Staged {
        rows,
        keys,
        row_hashes,
        losers,
    })
}

/// An incoming record has the file's width and is UTF-8.
fn check_record(rec: &ByteRecord, file_columns: &[String]) -> Result<(), JobError> {
    let line = || rec.position().map(|p| p.line()).unwrap_or(0);
    if rec.len() != file_columns.len() {
        return Err(JobError::new(
            "invalidCsv",
            format!(
                "Load error: line {} of the CSV file has {} values but the file has {} columns ({}).",
                line(),
                rec.len(),
                file_columns.len(),
                file_columns.join(",")
            ),
        ));
    }
    // Storage (Snowflake) accepts UTF-8 only and fails the load otherwise; storing the bytes would hand
    // them back later as data nobody can read.
    if !record_is_utf8(rec)
        && let Some(i) = rec.iter().position(|f| std::str::from_utf8(f).is_err())
    {
        return Err(JobError::new(
            "invalidCsv",
            format!(
                "Load error: line {}, column \"{}\": invalid UTF-8 byte sequence. The CSV file must be UTF-8 encoded.",
                line(),
                file_columns.get(i).map(String::as_str).unwrap_or("?")
            ),
        ));
    }
    Ok(())
}

/// Phase 3: the next generation at `load.out`: the stored rows an incremental load keeps, then the
/// incoming rows that win their key (all of them without a key).
fn write_generation(
    load: &Load<'_>,
    cols: &Columns,
    mut staged: Staged,
) -> Result<LoadOutcome, JobError> {
    let outcome = |rows_count, data_size_bytes, changed| LoadOutcome {
        columns: cols.table.clone(),
        imported_columns: cols.file.clone(),
        rows_count,
        data_size_bytes,
        changed,
    };
    let no_duplicates = cols.pk.is_empty()
        || if load.merges() {
            staged.keys.len() as u64 == staged.rows
        } else {
            staged.losers.is_none()
        };
    // A full load without duplicate keys: the scratch file already is the next generation.
    if !load.incremental && no_duplicates {
        if let Some(parent) = load.out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&load.scratch, &load.out)?;
        let size = std::fs::metadata(&load.out)?.len();
        return Ok(outcome(
            staged.rows,
            size,
            load.existing.is_some() || staged.rows > 0,
        ));
    }
    let mut file = data_file(&load.out)?;
    let (kept, stored_changed) = if load.incremental {
        keep_stored_rows(load, cols, &mut staged, &mut file)?
    } else {
        (0, load.existing.is_some())
    };
    let mut out = rows_writer(file);
    if cols.pk.is_empty() {
        // An append: the scratch rows go in as they are.
        let mut f = finish_file(out)?;
        std::io::copy(&mut File::open(&load.scratch)?, &mut f)?;
        let size = f.metadata()?.len();
        let _ = std::fs::remove_file(&load.scratch);
        return Ok(outcome(
            kept + staged.rows,
            size,
            stored_changed || staged.rows > 0,
        ));
    }
    let won = write_winners(load, cols, &staged, &mut out)?;
    let data_size_bytes = finish_writer(out)?;
    let _ = std::fs::remove_file(&load.scratch);
    Ok(outcome(
        kept + won,
        data_size_bytes,
        stored_changed || won > 0,
    ))
}

/// Copies the stored rows an incremental load keeps: all but those an incoming row replaces with
/// different values. Marks the incoming rows that left their stored row unchanged. Returns (kept, whether a
/// stored row was replaced). A kept row is copied as stored, not formatted again: an incremental load of a
/// few rows into a big table is mostly this copy.
fn keep_stored_rows(
    load: &Load<'_>,
    cols: &Columns,
    staged: &mut Staged,
    out: &mut impl Write,
) -> Result<(u64, bool), JobError> {
    let (upsert, width) = (load.upserts(), cols.table.len());
    let widened = width > load.table_columns.len();
    let (mut kept, mut changed) = (0u64, false);
    for_each_raw_row(load.existing, |row, raw| {
        if !cols.pk.is_empty()
            && let Some(entry) = staged.keys.get_mut(&key_of(&row, 1, &cols.pk))
        {
            let unchanged = upsert
                && *entry != u64::MAX
                && staged.row_hashes.get(*entry as usize) == Some(&hash_of(&row, 1, width));
            if unchanged {
                *entry = u64::MAX; // keep the stored row and its stamp
            } else if *entry != u64::MAX {
                changed = true;
                return Ok(true); // replaced below
            } else {
                return Ok(true); // a stored duplicate of an already kept key
            }
        }
        out.write_all(raw)?;
        if widened {
            // Stored rows hold every column: the new ones are empty in the kept rows.
            for _ in row.len()..=width {
                out.write_all(b",")?;
            }
        }
        out.write_all(b"\n")?;
        kept += 1;
        Ok(true)
    })?;
    Ok((kept, changed))
}

/// Copies the incoming rows that win their key (the last of each), unless they left a stored row
/// unchanged. Returns how many.
fn write_winners(
    load: &Load<'_>,
    cols: &Columns,
    staged: &Staged,
    out: &mut csv::Writer<WriteBehind>,
) -> Result<u64, JobError> {
    let merge = load.merges();
    let mut rdr = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(File::open(&load.scratch)?);
    let mut row = ByteRecord::new();
    let (mut idx, mut won) = (0u64, 0u64);
    while rdr.read_byte_record(&mut row).map_err(csv_error)? {
        let wins = match &staged.losers {
            Some(bits) => bits[(idx / 64) as usize] & (1 << (idx % 64)) == 0,
            None if merge => staged
                .keys
                .get(&key_of(&row, 1, &cols.pk))
                .is_some_and(|&e| e == idx),
            None => true,
        };
        if wins {
            out.write_byte_record(&row).map_err(write_error)?;
            won += 1;
        }
        idx += 1;
    }
    Ok(won)
}

fn write_error(e: csv::Error) -> JobError {
    JobError::new("applicationError", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{rows, run, write};
    use super::*;
    use csv::ByteRecord;

    #[test]
    fn utf8_check_sees_a_character_split_across_two_values() {
        let rec = |fields: &[&[u8]]| {
            let mut r = ByteRecord::new();
            for f in fields {
                r.push_field(f);
            }
            r
        };
        assert!(record_is_utf8(&rec(&[b"1", b"plain"])));
        assert!(record_is_utf8(&rec(&[
            "Z\u{fc}rich".as_bytes(),
            "\u{6771}".as_bytes(),
            b""
        ])));
        // "é" is C3 A9: valid bytes as a whole, but neither value is UTF-8 on its own.
        assert!(!record_is_utf8(&rec(&[b"caf\xC3", b"\xA9"])));
        assert!(!record_is_utf8(&rec(&[b"ok", b"\xFF"])));
    }

    #[test]
    fn upsert_keeps_unchanged_stamps_and_dedups_last_wins() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.csv", "id,name\na,b\nc,d\na,x\n");
        let o = run(d.path(), &a, None, &[], &["id"], false, 10, "g1").unwrap();
        assert_eq!(o.rows_count, 2);
        assert_eq!(
            rows(&d.path().join("g1")),
            vec![
                (10, vec!["a".into(), "x".into()]),
                (10, vec!["c".into(), "d".into()])
            ]
        );
        let b = write(
            d.path(),
            "b.csv",
            "name,id,extra\nx,a,\nupdated,c,1\nv,new,\n",
        );
        let g1 = d.path().join("g1");
        let o = run(
            d.path(),
            &b,
            Some(&g1),
            &["id", "name"],
            &["id"],
            true,
            20,
            "g2",
        )
        .unwrap();
        assert_eq!(o.columns, ["id", "name", "extra"]);
        assert_eq!(o.rows_count, 3);
        assert_eq!(
            rows(&d.path().join("g2")),
            vec![
                (10, vec!["a".into(), "x".into(), "".into()]),
                (20, vec!["c".into(), "updated".into(), "1".into()]),
                (20, vec!["new".into(), "v".into(), "".into()]),
            ]
        );
    }

    #[test]
    fn incremental_without_pk_appends_and_full_truncates() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.csv", "id\n1\n");
        run(d.path(), &a, None, &[], &[], false, 1, "g1").unwrap();
        let g1 = d.path().join("g1");
        assert_eq!(
            run(d.path(), &a, Some(&g1), &["id"], &[], true, 2, "g2")
                .unwrap()
                .rows_count,
            2
        );
        let g2 = d.path().join("g2");
        assert_eq!(
            run(d.path(), &a, Some(&g2), &["id"], &[], false, 3, "g3")
                .unwrap()
                .rows_count,
            1
        );
    }

    #[test]
    fn missing_columns_fail_with_details() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.csv", "id\n1\n");
        let e = run(d.path(), &a, None, &["id", "name"], &[], true, 1, "g1").unwrap_err();
        assert_eq!(e.code, "csvImport.columnsNotMatch");
        assert_eq!(
            e.results.unwrap()["missingColumns"],
            serde_json::json!(["name"])
        );
    }

    #[test]
    fn new_columns_with_invalid_names_fail_the_load() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.csv", "id,bad name\n1,x\n");
        let e = run(d.path(), &a, None, &["id"], &[], true, 1, "g1").unwrap_err();
        assert_eq!(e.code, "storage.tables.validation.invalidColumnName");
        let o = run(d.path(), &a, None, &[], &[], false, 1, "g2").unwrap();
        assert_eq!(o.columns, ["id", "bad_name"]);
    }
}

/// Property tests (issue 7): the load parser never panics on any bytes, and any table of strings a CSV
/// writer can express comes back out of a load unchanged.
#[cfg(test)]
mod properties {
    use super::super::io::for_each_row;
    use super::super::test_support::{rows, run, write};
    use super::super::{Dialect, Load};
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn load_into(
        dir: &Path,
        bytes: &[u8],
        existing: Option<&Path>,
        dialect: Dialect,
    ) -> Result<LoadOutcome, JobError> {
        let src = dir.join("in.csv");
        std::fs::write(&src, bytes).unwrap();
        load(Load {
            sources: vec![src],
            dialect,
            file_columns: None,
            without_headers: false,
            incremental: existing.is_some(),
            create: existing.is_none(),
            typed: false,
            table_columns: if existing.is_some() {
                vec!["id".into(), "v".into()]
            } else {
                Vec::new()
            },
            primary_key: if existing.is_some() {
                vec!["id".into()]
            } else {
                Vec::new()
            },
            existing,
            stamp: 7,
            out: dir.join("out"),
            scratch: dir.join("scratch"),
        })
    }

    /// Bytes that look like CSV often enough to reach the deep paths: quotes, separators, newlines, a
    /// BOM, invalid UTF-8.
    fn csvish() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b','),
                Just(b'"'),
                Just(b'\n'),
                Just(b'\r'),
                Just(b';'),
                Just(0xEF),
                Just(0xBB),
                Just(0xBF),
                Just(0xFF),
                Just(b'a'),
                Just(b'i'),
                Just(b'd'),
                any::<u8>(),
            ],
            0..200,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_create_a_table_or_fail_cleanly(bytes in csvish(), semicolon in any::<bool>()) {
            let d = tempfile::tempdir().unwrap();
            let dialect = Dialect { delimiter: if semicolon { b';' } else { b',' }, ..Dialect::default() };
            let _ = load_into(d.path(), &bytes, None, dialect);
        }

        #[test]
        fn any_bytes_upsert_or_fail_cleanly(bytes in csvish()) {
            let d = tempfile::tempdir().unwrap();
            let base = d.path().join("base");
            std::fs::write(&base, "\"1\",\"a\",\"x\"\n").unwrap();
            let mut body = b"id,v\n".to_vec();
            body.extend_from_slice(&bytes);
            match load_into(d.path(), &body, Some(&base), Dialect::default()) {
                // A failure carries a Storage error code (what a client shows the user).
                Err(e) => prop_assert!(!e.code.is_empty()),
                Ok(o) => prop_assert!(o.rows_count >= 1),
            }
        }

        /// Keys repeat often (a small key space, composite or single): a full load, and an incremental
        /// load into a new table, keep exactly the last row of each key.
        #[test]
        fn loads_keep_the_last_row_of_each_key(
            input in prop::collection::vec((0u8..6, 0u8..2, 0u16..1000), 0..60),
            composite in any::<bool>(),
            incremental in any::<bool>(),
        ) {
            let d = tempfile::tempdir().unwrap();
            let mut text = String::from("a,b,v\n");
            let mut expected = std::collections::BTreeMap::new();
            for (a, b, v) in &input {
                text.push_str(&format!("{a},{b},{v}\n"));
                let key = if composite { (*a, *b) } else { (*a, 0) };
                expected.insert(key, (*a, *b, *v));
            }
            let src = write(d.path(), "in.csv", &text);
            let pk: &[&str] = if composite { &["a", "b"] } else { &["a"] };
            let o = run(d.path(), &src, None, &[], pk, incremental, 5, "g").unwrap();
            let mut want: Vec<Vec<String>> = expected
                .values()
                .map(|(a, b, v)| vec![a.to_string(), b.to_string(), v.to_string()])
                .collect();
            want.sort();
            let got: Vec<Vec<String>> = rows(&d.path().join("g")).into_iter().map(|(_, r)| r).collect();
            prop_assert_eq!(o.rows_count, want.len() as u64);
            prop_assert_eq!(got, want);
        }

        /// An incremental load replaces each stored row whose key comes in, and keeps the others, whatever
        /// keys and values hold: quotes, commas and newlines send stored rows down the quoted path of the
        /// data-file scanner, the rest down its plain path.
        #[test]
        fn incremental_loads_replace_stored_rows_by_key(
            stored in prop::collection::btree_map("[ab\",\n]{0,3}", "[xy\", \n]{0,4}", 0..30),
            incoming in prop::collection::btree_map("[ab\",\n]{0,3}", "[xyz\", \n]{0,4}", 0..30),
        ) {
            let d = tempfile::tempdir().unwrap();
            let csv_of = |m: &std::collections::BTreeMap<String, String>| {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(["k", "v"]).unwrap();
                for (k, v) in m {
                    w.write_record([k, v]).unwrap();
                }
                String::from_utf8(w.into_inner().unwrap()).unwrap()
            };
            let first = write(d.path(), "first.csv", &csv_of(&stored));
            run(d.path(), &first, None, &[], &["k"], false, 5, "g1").unwrap();
            let second = write(d.path(), "second.csv", &csv_of(&incoming));
            let g1 = d.path().join("g1");
            let o = run(d.path(), &second, Some(&g1), &["k", "v"], &["k"], true, 6, "g2").unwrap();
            let mut want = stored.clone();
            want.extend(incoming.clone());
            let got: std::collections::BTreeMap<String, String> = rows(&d.path().join("g2"))
                .into_iter()
                .map(|(_, r)| (r[0].clone(), r[1].clone()))
                .collect();
            prop_assert_eq!(o.rows_count, want.len() as u64);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn written_rows_load_back_unchanged(
            rows in prop::collection::vec(("[^\u{0}]{0,12}", "[^\u{0}]{0,12}"), 0..20)
        ) {
            let d = tempfile::tempdir().unwrap();
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(["id", "v"]).unwrap();
            for (a, b) in &rows {
                w.write_record([a, b]).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let o = load_into(d.path(), &bytes, None, Dialect::default()).unwrap();
            prop_assert_eq!(o.rows_count, rows.len() as u64);
            let mut back = Vec::new();
            for_each_row(Some(&d.path().join("out")), |stamp, rec| {
                assert_eq!(stamp, 7);
                let get = |i: usize| String::from_utf8(rec.get(i).unwrap_or(b"").to_vec()).unwrap();
                back.push((get(1), get(2)));
                Ok(true)
            })
            .unwrap();
            prop_assert_eq!(back, rows);
        }
    }
}
