//! Exports: selected rows as header-less RFC CSV slices, gzipped on a bounded pool of threads.

use super::Export;
use super::io::for_each_row;
use crate::error::JobError;
use csv::{ByteRecord, QuoteStyle, Terminator, WriterBuilder};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

/// Slices of an export hold at most this many rows …
pub(crate) const SLICE_ROWS: u64 = 250_000;
/// … or about this many uncompressed bytes, whichever comes first.
pub(crate) const SLICE_BYTES: usize = 32 * 1024 * 1024;

/// The RFC CSV writer of exports and previews: every value quoted, `""` escapes, `\n` line ends.
pub(crate) fn rfc_writer<W: Write>(w: W) -> csv::Writer<W> {
    WriterBuilder::new()
        .quote_style(QuoteStyle::Always)
        .terminator(Terminator::Any(b'\n'))
        .from_writer(w)
}

/// Writes header-less RFC CSV slices (at least one, possibly empty), compressing them on a bounded pool of
/// threads while this thread reads and filters. Returns each slice's path and size, in order.
pub(crate) fn export(ex: Export<'_>) -> Result<Vec<(PathBuf, u64)>, JobError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let (tx, rx) = sync_channel::<(usize, Vec<u8>)>(workers);
    let rx = Arc::new(Mutex::new(rx));
    let gzip = ex.gzip;
    let slice_path = ex.slice_path;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                scope.spawn(move || -> Result<Vec<(usize, PathBuf, u64)>, JobError> {
                    let mut done = Vec::new();
                    loop {
                        let msg = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((i, buf)) = msg else { break };
                        let path = slice_path(i);
                        let f = File::create(&path)?;
                        let size = if gzip {
                            let mut enc = GzEncoder::new(
                                BufWriter::with_capacity(1 << 16, f),
                                Compression::fast(),
                            );
                            enc.write_all(&buf)?;
                            let w = enc.finish()?;
                            let f = w
                                .into_inner()
                                .map_err(|e| std::io::Error::other(e.to_string()))?;
                            f.metadata()?.len()
                        } else {
                            let mut w = BufWriter::new(f);
                            w.write_all(&buf)?;
                            w.flush()?;
                            buf.len() as u64
                        };
                        done.push((i, path, size));
                    }
                    Ok(done)
                })
            })
            .collect();
        drop(rx);

        let produced = (|| -> Result<(), JobError> {
            let mut slice = 0usize;
            let mut w = rfc_writer(Vec::with_capacity(1 << 20));
            let mut in_slice = 0u64;
            let mut total = 0u64;
            let mut fields = ByteRecord::new();
            let limit = ex.limit.unwrap_or(u64::MAX);
            let send = |i: usize, w: csv::Writer<Vec<u8>>| -> Result<(), JobError> {
                let buf = w
                    .into_inner()
                    .map_err(|e| JobError::new("applicationError", e.to_string()))?;
                tx.send((i, buf))
                    .map_err(|_| JobError::new("applicationError", "an export worker stopped"))
            };
            for_each_row(ex.data, |stamp, rec| {
                if total >= limit {
                    return Ok(false);
                }
                if !ex.selection.matches(stamp, rec) {
                    return Ok(true);
                }
                fields.clear();
                for &c in &ex.columns {
                    fields.push_field(rec.get(c + 1).unwrap_or(b""));
                }
                if ex.with_timestamp {
                    let ts = chrono::DateTime::from_timestamp(stamp, 0).unwrap_or_default();
                    fields.push_field(ts.format("%Y-%m-%d %H:%M:%S").to_string().as_bytes());
                }
                w.write_byte_record(&fields)
                    .map_err(|e| JobError::new("applicationError", e.to_string()))?;
                in_slice += 1;
                total += 1;
                if in_slice >= SLICE_ROWS || w.get_ref().len() >= SLICE_BYTES {
                    let done = std::mem::replace(&mut w, rfc_writer(Vec::with_capacity(1 << 20)));
                    send(slice, done)?;
                    slice += 1;
                    in_slice = 0;
                }
                Ok(true)
            })?;
            // The last partial slice, or one empty slice for an empty result.
            if in_slice > 0 || slice == 0 {
                send(slice, w)?;
            }
            Ok(())
        })();
        drop(tx);
        let mut slices = Vec::new();
        let mut worker_error = None;
        for h in handles {
            match h.join() {
                Ok(Ok(done)) => slices.extend(done),
                Ok(Err(e)) => worker_error = Some(e),
                Err(_) => {
                    worker_error = Some(JobError::new(
                        "applicationError",
                        "an export worker panicked",
                    ))
                }
            }
        }
        produced?;
        if let Some(e) = worker_error {
            return Err(e);
        }
        slices.sort_by_key(|(i, _, _)| *i);
        let mut out: Vec<(PathBuf, u64)> = slices.into_iter().map(|(_, p, s)| (p, s)).collect();
        if let (Some(limit), Some(first)) = (ex.truncate_first_slice, out.first_mut()) {
            let f = std::fs::OpenOptions::new().write(true).open(&first.0)?;
            f.set_len(limit.min(first.1))?;
            first.1 = limit.min(first.1);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, write};
    use super::super::{Filter, Op, Selection, select_rows};
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    #[test]
    fn export_slices_and_filters() {
        let d = tempfile::tempdir().unwrap();
        let mut text = String::from("id,v\n");
        for i in 0..(SLICE_ROWS + 10) {
            text.push_str(&format!("{i},\"x,\"\"{i}\"\n"));
        }
        let a = write(d.path(), "a.csv", &text);
        run(d.path(), &a, None, &[], &[], false, 5, "g1").unwrap();
        let g1 = d.path().join("g1");
        let dir = d.path().to_owned();
        let namer = move |i: usize| dir.join(format!("s{i:04}"));
        let slices = export(Export {
            data: Some(&g1),
            selection: Selection::default(),
            columns: vec![0, 1],
            limit: None,
            gzip: true,
            with_timestamp: false,
            slice_path: &namer,
            truncate_first_slice: None,
        })
        .unwrap();
        assert_eq!(slices.len(), 2);
        let mut all = String::new();
        for (p, _) in &slices {
            MultiGzDecoder::new(File::open(p).unwrap())
                .read_to_string(&mut all)
                .unwrap();
        }
        assert_eq!(all.lines().count() as u64, SLICE_ROWS + 10);
        assert!(all.starts_with("\"0\",\"x,\"\"0\"\n"));
        let sel = Selection {
            filters: vec![Filter {
                column: 0,
                op: Op::Gt,
                values: vec![b"9".to_vec()],
                numeric: true,
            }],
            changed_since: None,
            changed_until: None,
        };
        let picked = select_rows(Some(&g1), &sel, &[0], 3).unwrap();
        assert_eq!(
            picked,
            vec![
                vec![b"10".to_vec()],
                vec![b"11".to_vec()],
                vec![b"12".to_vec()]
            ]
        );
        let since = Selection {
            changed_since: Some(5),
            ..Default::default()
        };
        assert!(select_rows(Some(&g1), &since, &[0], 3).unwrap().is_empty());
    }
}
