//! Selecting rows: filters and change stamps ([`Selection`]), previews and dumps (optionally ordered), and
//! the rewrites that drop rows or a column.

use super::io::{data_writer, finish_writer, for_each_row, for_each_row_in};
use super::{Filter, Op, OrderKey, Selection};
use crate::error::JobError;
use csv::ByteRecord;
use std::path::Path;

impl Filter {
    fn matches(&self, value: &[u8]) -> bool {
        match self.op {
            Op::Eq => self.values.iter().any(|v| self.equal(value, v)),
            Op::Ne => !self.values.iter().any(|v| self.equal(value, v)),
            op => {
                let Some(target) = self.values.first() else {
                    return false;
                };
                let ord = if self.numeric {
                    match (parse_num(value), parse_num(target)) {
                        (Some(a), Some(b)) => a.partial_cmp(&b),
                        _ => None,
                    }
                } else {
                    Some(value.cmp(target.as_slice()))
                };
                let Some(ord) = ord else { return false };
                match op {
                    Op::Gt => ord.is_gt(),
                    Op::Ge => ord.is_ge(),
                    Op::Lt => ord.is_lt(),
                    _ => ord.is_le(),
                }
            }
        }
    }

    fn equal(&self, a: &[u8], b: &[u8]) -> bool {
        if self.numeric {
            match (parse_num(a), parse_num(b)) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            }
        } else {
            a == b
        }
    }
}

fn parse_num(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

impl Selection {
    pub(crate) fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.changed_since.is_none() && self.changed_until.is_none()
    }

    pub(super) fn matches(&self, stamp: i64, rec: &ByteRecord) -> bool {
        if self.changed_since.is_some_and(|s| stamp <= s)
            || self.changed_until.is_some_and(|u| stamp >= u)
        {
            return false;
        }
        self.filters
            .iter()
            .all(|f| f.matches(rec.get(f.column + 1).unwrap_or(b"")))
    }
}

/// Rewrites a table without the rows `sel` selects. Returns (deleted, kept, new size).
pub(crate) fn delete_rows(
    data: Option<&Path>,
    sel: &Selection,
    out: &Path,
) -> Result<(u64, u64, u64), JobError> {
    let mut w = data_writer(out)?;
    let (mut deleted, mut kept) = (0u64, 0u64);
    for_each_row(data, |stamp, rec| {
        if sel.matches(stamp, rec) {
            deleted += 1;
        } else {
            w.write_byte_record(rec)
                .map_err(|e| JobError::new("applicationError", e.to_string()))?;
            kept += 1;
        }
        Ok(true)
    })?;
    let size = finish_writer(w)?;
    Ok((deleted, kept, size))
}

/// Rewrites a table without the column at `index`. Returns the new size.
pub(crate) fn drop_column(data: Option<&Path>, index: usize, out: &Path) -> Result<u64, JobError> {
    let mut w = data_writer(out)?;
    let mut rec_out = ByteRecord::new();
    for_each_row(data, |_, rec| {
        rec_out.clear();
        for (i, f) in rec.iter().enumerate() {
            if i != index + 1 {
                rec_out.push_field(f);
            }
        }
        w.write_byte_record(&rec_out)
            .map_err(|e| JobError::new("applicationError", e.to_string()))?;
        Ok(true)
    })?;
    Ok(finish_writer(w)?)
}

/// Selected rows (values of `columns`, up to `limit`), for previews and dumps. Bounded by `limit`.
pub(crate) fn select_rows(
    data: Option<&Path>,
    sel: &Selection,
    columns: &[usize],
    limit: u64,
) -> Result<Vec<Vec<Vec<u8>>>, JobError> {
    let mut rows = Vec::new();
    for_each_row(data, |stamp, rec| {
        if rows.len() as u64 >= limit {
            return Ok(false);
        }
        if sel.matches(stamp, rec) {
            rows.push(
                columns
                    .iter()
                    .map(|&c| rec.get(c + 1).unwrap_or(b"").to_vec())
                    .collect(),
            );
        }
        Ok(true)
    })?;
    Ok(rows)
}

/// Streams the selected rows (values of `columns`, at most `limit` rows) of an open data file (None: the
/// table has no rows) to `f`, without holding them: what a workspace load copies, however big the table.
pub(crate) fn for_each_selected(
    data: Option<std::fs::File>,
    sel: &Selection,
    columns: &[usize],
    limit: Option<u64>,
    mut f: impl FnMut(Vec<&[u8]>) -> Result<(), JobError>,
) -> Result<u64, JobError> {
    let Some(file) = data else { return Ok(0) };
    let mut n = 0u64;
    for_each_row_in(file, |stamp, rec| {
        if limit.is_some_and(|l| n >= l) {
            return Ok(false);
        }
        if sel.matches(stamp, rec) {
            f(columns
                .iter()
                .map(|&c| rec.get(c + 1).unwrap_or(b""))
                .collect())?;
            n += 1;
        }
        Ok(true)
    })?;
    Ok(n)
}

fn compare_rows(a: &[Vec<u8>], b: &[Vec<u8>], keys: &[OrderKey]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (i, k) in keys.iter().enumerate() {
        let (x, y) = (&a[i], &b[i]);
        let ord = if k.numeric {
            // Numbers first, in numeric order; values that are not numbers after them, bytewise.
            match (parse_num(x), parse_num(y)) {
                (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => x.cmp(y),
            }
        } else {
            x.cmp(y)
        };
        let ord = if k.descending { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// The first `limit` selected rows in `keys` order (a preview's `orderBy`): one pass over the table,
/// holding at most `2 × limit` candidates.
pub(crate) fn select_rows_ordered(
    data: Option<&Path>,
    sel: &Selection,
    columns: &[usize],
    keys: &[OrderKey],
    limit: u64,
) -> Result<Vec<Vec<Vec<u8>>>, JobError> {
    let limit = limit as usize;
    // Each candidate: the sort key values, then the selected values.
    type Candidate = (Vec<Vec<u8>>, Vec<Vec<u8>>);
    let mut kept: Vec<Candidate> = Vec::new();
    let trim = |kept: &mut Vec<Candidate>| {
        kept.sort_by(|a, b| compare_rows(&a.0, &b.0, keys));
        kept.truncate(limit);
    };
    for_each_row(data, |stamp, rec| {
        if sel.matches(stamp, rec) {
            let key = keys
                .iter()
                .map(|k| rec.get(k.column + 1).unwrap_or(b"").to_vec())
                .collect();
            let values = columns
                .iter()
                .map(|&c| rec.get(c + 1).unwrap_or(b"").to_vec())
                .collect();
            kept.push((key, values));
            if kept.len() >= 2 * limit.max(1) {
                trim(&mut kept);
            }
        }
        Ok(true)
    })?;
    trim(&mut kept);
    Ok(kept.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, write};
    use super::*;

    #[test]
    fn ordered_selection_keeps_the_first_rows() {
        let d = tempfile::tempdir().unwrap();
        let mut text = String::from("id,g\n");
        for i in 0..5000 {
            text.push_str(&format!("{i},{}\n", i % 7));
        }
        let a = write(d.path(), "a.csv", &text);
        run(d.path(), &a, None, &[], &[], false, 1, "g1").unwrap();
        let g1 = d.path().join("g1");
        let keys = [
            OrderKey {
                column: 1,
                descending: true,
                numeric: false,
            },
            OrderKey {
                column: 0,
                descending: false,
                numeric: true,
            },
        ];
        let rows = select_rows_ordered(Some(&g1), &Selection::default(), &[0], &keys, 3).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![b"6".to_vec()],
                vec![b"13".to_vec()],
                vec![b"20".to_vec()]
            ]
        );
        let keys = [OrderKey {
            column: 0,
            descending: true,
            numeric: true,
        }];
        let rows = select_rows_ordered(Some(&g1), &Selection::default(), &[0], &keys, 2).unwrap();
        assert_eq!(rows, vec![vec![b"4999".to_vec()], vec![b"4998".to_vec()]]);
    }
}
