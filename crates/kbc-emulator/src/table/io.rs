//! The table engine's I/O: the data file format (stamp, then values; read with [`for_each_row`], written
//! behind a thread), CSV readers for a load's dialect, gzipped sources read ahead on their own thread.

use super::Dialect;
use crate::error::JobError;
use csv::{ByteRecord, ReaderBuilder, WriterBuilder};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::mpsc::sync_channel;

impl Dialect {
    pub(super) fn reader<R: Read>(&self, r: R) -> csv::Reader<R> {
        let mut b = ReaderBuilder::new();
        // The reader keeps its own buffer; sources hand it data without another buffer in between.
        b.has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 16)
            .delimiter(self.delimiter);
        match (self.enclosure, self.escaped_by) {
            (Some(q), None) => {
                b.quote(q);
            }
            (_, Some(e)) => {
                b.quoting(false).escape(Some(e)).double_quote(false);
            }
            (None, None) => {
                b.quoting(false);
            }
        }
        b.from_reader(r)
    }
}

/// Opens a source file, transparently gunzipping it when it starts with the gzip magic bytes. Decompression
/// runs on its own thread, a few buffers ahead of the CSV parser, so a gzipped load uses two cores.
pub(super) fn open_source(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut f, &mut magic)?;
    let f = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        let decoder = MultiGzDecoder::new(BufReader::with_capacity(1 << 16, f));
        Ok(Box::new(ReadAhead::spawn(decoder)))
    } else {
        Ok(Box::new(f))
    }
}

/// A reader fed by a thread that reads `inner` in 1 MiB chunks, at most four chunks ahead (bounded memory).
/// Spent chunks go back to the thread for reuse: fresh 1 MiB buffers cost a page fault per 4 KiB.
/// Dropping it stops the thread at its next send.
struct ReadAhead {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    spent: std::sync::mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    fn spawn(mut inner: impl Read + Send + 'static) -> ReadAhead {
        const CHUNK: usize = 1 << 20;
        let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(4);
        let (spent, reuse) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            loop {
                let mut buf = reuse.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                match read_up_to(&mut inner, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break; // the reader was dropped
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        ReadAhead {
            rx,
            spent,
            chunk: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let spent = std::mem::replace(&mut self.chunk, chunk);
                    // The thread may have finished; then the buffer is simply dropped.
                    let _ = self.spent.send(spent);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Streams the stored rows of a table: `(stamp, record)` where `record[0]` is the stamp field and values start
/// at index 1 (shorter records mean trailing empty values).
pub(super) fn for_each_row(
    data: Option<&Path>,
    f: impl FnMut(i64, &ByteRecord) -> Result<bool, JobError>,
) -> Result<(), JobError> {
    let Some(path) = data else { return Ok(()) };
    for_each_row_in(File::open(path)?, f)
}

/// [`for_each_row`] over a data file already open (a reader that opened it keeps it readable after a load
/// replaced and removed it).
pub(super) fn for_each_row_in(
    file: File,
    mut f: impl FnMut(i64, &ByteRecord) -> Result<bool, JobError>,
) -> Result<(), JobError> {
    let mut split = ByteRecord::new();
    scan_rows(file, |row, _| {
        let rec = match row {
            StoredRow::Parsed(rec) => rec,
            StoredRow::Plain(raw) => {
                split.clear();
                let mut field = 0;
                for comma in memchr::memchr_iter(b',', raw) {
                    split.push_field(&raw[field..comma]);
                    field = comma + 1;
                }
                split.push_field(&raw[field..]);
                &split
            }
        };
        let stamp = std::str::from_utf8(rec.get(0).unwrap_or(b"0"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        f(stamp, rec)
    })
}

/// Streams the stored rows of a table with each row's bytes as stored (no terminator), so that a row kept
/// as it is can be copied without formatting it again. A row without quotes is not split into values
/// until one is asked for: a key lookup needs one or two of them.
pub(super) fn for_each_raw_row(
    data: Option<&Path>,
    f: impl FnMut(StoredRow<'_>, &[u8]) -> Result<bool, JobError>,
) -> Result<(), JobError> {
    let Some(path) = data else { return Ok(()) };
    scan_rows(File::open(path)?, f)
}

/// The one loop over a data file's rows: quoted rows parsed, plain ones handed over as they are.
fn scan_rows(
    file: File,
    mut f: impl FnMut(StoredRow<'_>, &[u8]) -> Result<bool, JobError>,
) -> Result<(), JobError> {
    let mut rows = RowScanner::new(file);
    let (mut quoted_rows, mut rec) = (QuotedRows::default(), ByteRecord::new());
    while let Some((raw, quoted)) = rows.next().map_err(corrupt)? {
        let row = if quoted {
            quoted_rows.parse(raw, &mut rec).map_err(corrupt)?;
            StoredRow::Parsed(&rec)
        } else {
            StoredRow::Plain(raw)
        };
        if !f(row, raw)? {
            break;
        }
    }
    Ok(())
}

fn corrupt(e: std::io::Error) -> JobError {
    JobError::new(
        "applicationError",
        format!("the emulator's table file is corrupt: {e}"),
    )
}

/// Values of a record by index (the stamp is value 0 of a stored row); None past its last value.
pub(super) trait Values {
    fn value(&self, i: usize) -> Option<&[u8]>;
}

impl Values for ByteRecord {
    fn value(&self, i: usize) -> Option<&[u8]> {
        self.get(i)
    }
}

/// A stored row: its bytes when it holds no quote (its values are what lies between commas), else parsed.
pub(super) enum StoredRow<'a> {
    Plain(&'a [u8]),
    Parsed(&'a ByteRecord),
}

impl StoredRow<'_> {
    /// How many values the row has, the stamp included.
    pub(super) fn len(&self) -> usize {
        match self {
            StoredRow::Parsed(rec) => rec.len(),
            StoredRow::Plain(raw) => memchr::memchr_iter(b',', raw).count() + 1,
        }
    }
}

impl Values for StoredRow<'_> {
    fn value(&self, i: usize) -> Option<&[u8]> {
        match self {
            StoredRow::Parsed(rec) => rec.get(i),
            StoredRow::Plain(raw) => {
                let (mut field, mut n) = (0, 0);
                for comma in memchr::memchr_iter(b',', raw) {
                    if n == i {
                        return Some(&raw[field..comma]);
                    }
                    field = comma + 1;
                    n += 1;
                }
                (n == i).then(|| &raw[field..])
            }
        }
    }
}

/// Reads a data file record by record. The emulator writes its data files itself (RFC 4180, `\n` after each
/// record, a value quoted only when it must be), so a record holding no quote ends at the next newline and
/// its values lie between commas: found with memchr, many times faster than the CSV state machine, which
/// with re-formatting the kept rows was two thirds of an incremental load into a big table. A record with
/// a quote ends at the first newline outside quotes and goes through csv-core, as every record did before.
struct RowScanner<R> {
    src: R,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> RowScanner<R> {
    const CHUNK: usize = 1 << 20;

    fn new(src: R) -> Self {
        RowScanner {
            src,
            buf: vec![0; Self::CHUNK],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next record's bytes (no terminator), and whether it holds a quote; None at the end of the file.
    fn next(&mut self) -> std::io::Result<Option<(&[u8], bool)>> {
        let (from, to, quoted) = loop {
            let Some((len, quoted)) = record_end(&self.buf[self.start..self.end], self.eof) else {
                if self.eof {
                    return Ok(None);
                }
                self.fill()?;
                continue;
            };
            let from = self.start;
            self.start = (from + len + 1).min(self.end);
            let mut to = from + len;
            if to > from && self.buf[to - 1] == b'\r' {
                to -= 1; // a CRLF terminator (outside quotes: the writer quotes a value's own CR)
            }
            if to > from {
                break (from, to, quoted);
            } // else a blank line, skipped as the csv reader does
        };
        Ok(Some((&self.buf[from..to], quoted)))
    }

    /// Moves the unread bytes to the front and reads more after them (the buffer doubles for a record longer
    /// than it).
    fn fill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(())
    }
}

/// Where the first record of `window` ends (its length without the newline), and whether it holds a quote.
/// None when the newline that ends it is not in `window` yet; at the end of the file, the rest is the last
/// record.
fn record_end(window: &[u8], eof: bool) -> Option<(usize, bool)> {
    let (mut in_quotes, mut quoted, mut pos) = (false, false, 0);
    while let Some(i) = memchr::memchr2(b'\n', b'"', &window[pos..]) {
        let at = pos + i;
        if window[at] == b'"' {
            // An escaped quote ("") toggles twice: still inside.
            in_quotes = !in_quotes;
            quoted = true;
        } else if !in_quotes {
            return Some((at, quoted));
        }
        pos = at + 1;
    }
    (eof && !window.is_empty()).then_some((window.len(), quoted))
}

/// Parses whole records that hold quotes with csv-core (the csv crate's own parser).
struct QuotedRows {
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for QuotedRows {
    fn default() -> Self {
        QuotedRows {
            // `new`, not `default`: csv-core's `Default` leaves its state machine unbuilt.
            core: csv_core::Reader::new(),
            out: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl QuotedRows {
    fn parse(&mut self, raw: &[u8], rec: &mut ByteRecord) -> std::io::Result<()> {
        use csv_core::ReadRecordResult::*;
        self.core.reset();
        // Values are never longer than the record, and there is at most one more value than bytes.
        self.out.resize(raw.len(), 0);
        self.ends.resize(raw.len() + 1, 0);
        let (mut input, mut o, mut e) = (raw, 0, 0);
        loop {
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[o..], &mut self.ends[e..]);
            input = &input[nin..];
            o += nout;
            e += nend;
            match res {
                InputEmpty => continue, // the whole record was given: the next call, with none, ends it
                Record => break,
                End | OutputFull | OutputEndsFull => {
                    return Err(std::io::Error::other("a record could not be parsed"));
                }
            }
        }
        rec.clear();
        let mut field = 0;
        for &end in &self.ends[..e] {
            rec.push_field(&self.out[field..end]);
            field = end;
        }
        Ok(())
    }
}

pub(super) fn data_writer(path: &Path) -> std::io::Result<csv::Writer<WriteBehind>> {
    Ok(rows_writer(data_file(path)?))
}

/// A new data file, written behind; [`rows_writer`] formats rows into it.
pub(super) fn data_file(path: &Path) -> std::io::Result<WriteBehind> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(WriteBehind::spawn(File::create(path)?))
}

pub(super) fn rows_writer(file: WriteBehind) -> csv::Writer<WriteBehind> {
    WriterBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_writer(file)
}

/// Flushes a data writer and hands back its file, positioned at the end.
pub(super) fn finish_file(w: csv::Writer<WriteBehind>) -> std::io::Result<File> {
    w.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .finish()
}

pub(super) fn finish_writer(w: csv::Writer<WriteBehind>) -> std::io::Result<u64> {
    // Not fsync'd (see the module doc): atomic against process crashes, which is what the store promises.
    Ok(finish_file(w)?.metadata()?.len())
}

/// A thread that takes items in order — at most four waiting, so memory stays bounded — and hands each
/// back for reuse once done with it. The two writers below put the kernel's copy into the page cache, and
/// the CSV formatting, on it: together a third of a load's parsing thread in the profile.
struct Behind<T, R> {
    tx: Option<std::sync::mpsc::SyncSender<T>>,
    spent: std::sync::mpsc::Receiver<T>,
    thread: Option<std::thread::JoinHandle<std::io::Result<R>>>,
}

impl<T: Send + 'static, R: Send + 'static> Behind<T, R> {
    /// The thread owns `state`: `consume` runs for every item, `end` once the sender is finished.
    fn spawn<S: Send + 'static>(
        mut state: S,
        mut consume: impl FnMut(&mut S, &mut T) -> std::io::Result<()> + Send + 'static,
        end: impl FnOnce(S) -> std::io::Result<R> + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel::<T>(4);
        let (give_back, spent) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            for mut item in rx {
                consume(&mut state, &mut item)?;
                let _ = give_back.send(item);
            }
            end(state)
        });
        Behind {
            tx: Some(tx),
            spent,
            thread: Some(thread),
        }
    }

    /// An item the thread is done with, if one is back.
    fn reuse(&self) -> Option<T> {
        self.spent.try_recv().ok()
    }

    /// Hands an item over; a closed channel means the thread stopped, and its error is the one to report.
    fn send(&mut self, item: T) -> std::io::Result<()> {
        if self.tx.as_ref().is_some_and(|tx| tx.send(item).is_ok()) {
            Ok(())
        } else {
            Err(self
                .finish()
                .err()
                .unwrap_or_else(|| std::io::Error::other("the writer thread stopped")))
        }
    }

    /// Closes the channel and waits for the thread: what it ends with, or the error it stopped on.
    fn finish(&mut self) -> std::io::Result<R> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the writer thread panicked")),
            None => Err(std::io::Error::other("the writer was already finished")),
        }
    }
}

impl<T, R> Drop for Behind<T, R> {
    fn drop(&mut self) {
        // An abandoned writer (a failed load) still lets its thread end.
        self.tx = None;
    }
}

/// A writer whose `write` calls only fill 1 MiB buffers, written to the file behind.
pub(super) struct WriteBehind {
    buf: Vec<u8>,
    behind: Behind<Vec<u8>, File>,
}

impl WriteBehind {
    const CHUNK: usize = 1 << 20;

    fn spawn(file: File) -> WriteBehind {
        let behind = Behind::spawn(
            file,
            |file: &mut File, chunk: &mut Vec<u8>| {
                file.write_all(chunk)?;
                chunk.clear();
                Ok(())
            },
            Ok,
        );
        WriteBehind {
            buf: Vec::with_capacity(Self::CHUNK),
            behind,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let next = self
            .behind
            .reuse()
            .unwrap_or_else(|| Vec::with_capacity(Self::CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.behind.send(full)
    }

    /// Writes what is left and returns the file, positioned at its end.
    fn finish(mut self) -> std::io::Result<File> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.behind.finish()
    }
}

impl Write for WriteBehind {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(Self::CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == Self::CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands over what is buffered; the bytes reach the file before `finish` returns.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

/// Pass 1's scratch writer: rows go behind in batches of 4,096, formatted as CSV and written there.
pub(super) struct RowWriteBehind {
    batch: Vec<ByteRecord>,
    filled: usize,
    behind: Behind<(Vec<ByteRecord>, usize), ()>,
}

impl RowWriteBehind {
    const BATCH: usize = 4096;

    pub(super) fn spawn(path: &Path) -> std::io::Result<RowWriteBehind> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let writer = WriterBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_writer(file);
        let behind = Behind::spawn(
            writer,
            |w: &mut csv::Writer<BufWriter<File>>,
             (batch, filled): &mut (Vec<ByteRecord>, usize)| {
                batch[..*filled]
                    .iter()
                    .try_for_each(|row| w.write_byte_record(row))
                    .map_err(std::io::Error::from)
            },
            |mut w| w.flush(),
        );
        Ok(RowWriteBehind {
            batch: Vec::new(),
            filled: 0,
            behind,
        })
    }

    /// The next row to fill, empty; `commit_row` hands it over.
    pub(super) fn next_row(&mut self) -> &mut ByteRecord {
        if self.filled == self.batch.len() {
            self.batch.push(ByteRecord::new());
        }
        let row = &mut self.batch[self.filled];
        row.clear();
        row
    }

    pub(super) fn commit_row(&mut self) -> std::io::Result<()> {
        self.filled += 1;
        if self.filled == Self::BATCH {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> std::io::Result<()> {
        let (next, _) = self.behind.reuse().unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, next);
        let filled = std::mem::take(&mut self.filled);
        self.behind.send((full, filled))
    }

    /// Writes the rows still in hand and waits until all are in the file.
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        if self.filled > 0 {
            self.send()?;
        }
        self.behind.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    #[test]
    fn write_behind_writers_report_a_full_disk() {
        // /dev/full fails every write with ENOSPC: the error must come back, not vanish with the thread.
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let mut rows = RowWriteBehind::spawn(full).unwrap();
        let mut failed = false;
        for i in 0..50_000 {
            rows.next_row()
                .push_field(format!("row {i} with some padding").as_bytes());
            if rows.commit_row().is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed || rows.finish().is_err());

        let mut bytes = data_writer(full).unwrap();
        let mut failed = false;
        for i in 0..50_000 {
            if bytes
                .write_record([format!("row {i} with some padding")])
                .is_err()
            {
                failed = true;
                break;
            }
        }
        assert!(failed || finish_writer(bytes).is_err());
    }

    #[test]
    fn gzipped_sources_are_read_whole_and_corrupt_ones_fail() {
        let d = tempfile::tempdir().unwrap();
        let mut text = String::from("id,v\n");
        for i in 0..200_000 {
            text.push_str(&format!("{i},value {i}\n"));
        }
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let p = d.path().join("a.csv.gz");
        std::fs::write(&p, &gz).unwrap();
        let mut all = String::new();
        open_source(&p).unwrap().read_to_string(&mut all).unwrap();
        assert_eq!(all, text);
        std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
        let mut cut = String::new();
        assert!(open_source(&p).unwrap().read_to_string(&mut cut).is_err());
    }

    /// Every row of `path` as read by `for_each_row_in`, and as `for_each_raw_row` sees it: its values
    /// through [`Values`] and its bytes.
    type BothWays = (Vec<Vec<Vec<u8>>>, Vec<Vec<Vec<u8>>>, Vec<u8>);
    fn read_both_ways(path: &Path) -> BothWays {
        let mut parsed = Vec::new();
        for_each_row_in(File::open(path).unwrap(), |_, rec| {
            parsed.push(rec.iter().map(<[u8]>::to_vec).collect());
            Ok(true)
        })
        .unwrap();
        let (mut raw_values, mut bytes) = (Vec::new(), Vec::new());
        for_each_raw_row(Some(path), |row, raw| {
            let values: Vec<Vec<u8>> = (0..)
                .map_while(|i| row.value(i).map(<[u8]>::to_vec))
                .collect();
            raw_values.push(values);
            bytes.extend_from_slice(raw);
            bytes.push(b'\n');
            Ok(true)
        })
        .unwrap();
        (parsed, raw_values, bytes)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// The scanner reads back what the data writer wrote, value for value, quotes, commas, newlines and
        /// carriage returns included, and a row's bytes are the row as written.
        #[test]
        fn the_scanner_reads_what_the_writer_wrote(
            rows in proptest::collection::vec(
                proptest::collection::vec("[a-c,\"\n\r é]{0,6}", 1..5), 0..40),
        ) {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("data.csv");
            let mut w = data_writer(&path).unwrap();
            for row in &rows {
                w.write_record(row).unwrap();
            }
            finish_writer(w).unwrap();
            let expected: Vec<Vec<Vec<u8>>> = rows
                .iter()
                .map(|r| r.iter().map(|v| v.as_bytes().to_vec()).collect())
                .collect();
            let (parsed, raw_values, bytes) = read_both_ways(&path);
            proptest::prop_assert_eq!(&parsed, &expected);
            proptest::prop_assert_eq!(&raw_values, &expected);
            proptest::prop_assert_eq!(bytes, std::fs::read(&path).unwrap());
        }
    }

    #[test]
    fn the_scanner_takes_long_records_crlf_and_a_last_row_without_newline() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("data.csv");
        // A quoted value of 3 MiB with newlines in it: the record spans several refills of the 1 MiB buffer,
        // and newlines inside quotes end nothing.
        let long = "x\n".repeat(3 << 19);
        let text = format!("1,a\r\n\n2,\"{}\",b\n3,\"q\"\"\",c", long);
        std::fs::write(&path, &text).unwrap();
        let (parsed, raw_values, bytes) = read_both_ways(&path);
        let expected = vec![
            vec![b"1".to_vec(), b"a".to_vec()],
            vec![b"2".to_vec(), long.into_bytes(), b"b".to_vec()],
            vec![b"3".to_vec(), b"q\"".to_vec(), b"c".to_vec()],
        ];
        // (assert! rather than assert_eq!: a failure would print the 3 MiB value)
        assert!(parsed == expected, "parsed: {} rows", parsed.len());
        assert!(raw_values == expected, "raw: {} rows", raw_values.len());
        // The blank line is skipped and the CR of the CRLF is not part of the row's bytes.
        let mut rows_as_stored = text.replace("\r\n\n", "\n").into_bytes();
        rows_as_stored.push(b'\n');
        assert!(bytes == rows_as_stored);
    }
}
