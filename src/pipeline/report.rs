//! Per-table numbers (rows, bytes, duration, MB/s) and the summary table logged at the end of a run.

use crate::interface::config::Step;
use kbc_storage::human_bytes;
use std::fmt::Write as _;
use std::time::Duration;

/// What happened to one table in one step.
#[derive(Debug, Clone)]
pub struct TableReport {
    pub step: Step,
    /// Table id or file name.
    pub table: String,
    /// Rows moved, when known.
    pub rows: Option<u64>,
    pub bytes: u64,
    pub duration: Duration,
    /// A short remark: `skipped`, `cache hit`, `created`, `incremental` ...
    pub note: String,
}

impl TableReport {
    /// Throughput in MB/s (10^6 bytes), 0 for instant steps.
    pub fn mb_per_s(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.bytes as f64 / 1_000_000.0 / secs
        }
    }

    /// The one-line log of a finished table.
    pub fn line(&self) -> String {
        format!(
            "{} {}: {} rows, {}, {:.2} s, {:.1} MB/s{}",
            self.step.as_str(),
            self.table,
            self.rows
                .map(|r| r.to_string())
                .unwrap_or_else(|| "?".into()),
            human_bytes(self.bytes),
            self.duration.as_secs_f64(),
            self.mb_per_s(),
            if self.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.note)
            }
        )
    }
}

/// Names joined for a message: `a, b, c`.
pub(crate) fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary table: one row per table and step, aligned columns.
pub(crate) fn summary(reports: &[TableReport]) -> String {
    let header = ["step", "table", "rows", "bytes", "seconds", "MB/s", "note"];
    let rows: Vec<[String; 7]> = reports
        .iter()
        .map(|r| {
            [
                r.step.as_str().to_owned(),
                r.table.clone(),
                r.rows.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                human_bytes(r.bytes),
                format!("{:.2}", r.duration.as_secs_f64()),
                format!("{:.1}", r.mb_per_s()),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Numbers right-aligned, text left-aligned.
            if (2..=5).contains(&i) {
                let _ = write!(text, "{cell:>w$}  ");
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_and_summary() {
        let r = TableReport {
            step: Step::Export,
            table: "in.c-a.b".into(),
            rows: Some(10),
            bytes: 3_000_000,
            duration: Duration::from_secs(2),
            note: "cache hit".into(),
        };
        assert!((r.mb_per_s() - 1.5).abs() < 1e-9);
        assert_eq!(
            r.line(),
            "export in.c-a.b: 10 rows, 3.0 MB, 2.00 s, 1.5 MB/s (cache hit)"
        );
        let s = summary(&[r]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("step    table"), "{s}");
        assert!(
            lines[1].contains("3.0 MB") && lines[1].ends_with("cache hit"),
            "{s}"
        );
        assert_eq!(human_bytes(999), "999 B");
    }
}
