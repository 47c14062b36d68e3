//! The table engine: rows on disk and the operations of Storage jobs over them.
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

use super::error::JobError;
use csv::{ByteRecord, QuoteStyle, ReaderBuilder, Terminator, WriterBuilder};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64_with_seed, xxh3_128};

/// Slices of an export hold at most this many rows …
pub const SLICE_ROWS: u64 = 250_000;
/// … or about this many uncompressed bytes, whichever comes first.
pub const SLICE_BYTES: usize = 32 * 1024 * 1024;

/// How an incoming CSV is written.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub delimiter: u8,
    pub enclosure: Option<u8>,
    pub escaped_by: Option<u8>,
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

impl Dialect {
    fn reader<R: Read>(&self, r: R) -> csv::Reader<R> {
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
fn open_source(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
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

/// Replaces every character outside `[A-Za-z0-9_]` with `_`, as Storage does for new tables.
pub fn normalize_column_name(name: &str) -> String {
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
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
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
pub struct Filter {
    /// Index into the table's columns.
    pub column: usize,
    pub op: Op,
    pub values: Vec<Vec<u8>>,
    /// Compare as numbers (`dataType` INTEGER, DOUBLE, ...).
    pub numeric: bool,
}

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

/// Which rows an export, preview or delete selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filters: Vec<Filter>,
    /// Rows whose stamp is strictly greater (so `changedSince == lastImportDate` excludes that load).
    pub changed_since: Option<i64>,
    /// Rows whose stamp is strictly smaller.
    pub changed_until: Option<i64>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.changed_since.is_none() && self.changed_until.is_none()
    }

    fn matches(&self, stamp: i64, rec: &ByteRecord) -> bool {
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

/// Streams the stored rows of a table: `(stamp, record)` where `record[0]` is the stamp field and values start
/// at index 1 (shorter records mean trailing empty values).
pub fn for_each_row(
    data: Option<&Path>,
    mut f: impl FnMut(i64, &ByteRecord) -> Result<bool, JobError>,
) -> Result<(), JobError> {
    let Some(path) = data else { return Ok(()) };
    let file = File::open(path)?;
    let mut rdr = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(file);
    let mut rec = ByteRecord::new();
    while rdr.read_byte_record(&mut rec).map_err(|e| {
        JobError::new(
            "applicationError",
            format!("the emulator's table file is corrupt: {e}"),
        )
    })? {
        let stamp = std::str::from_utf8(rec.get(0).unwrap_or(b"0"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if !f(stamp, &rec)? {
            break;
        }
    }
    Ok(())
}

fn data_writer(path: &Path) -> std::io::Result<csv::Writer<WriteBehind>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let f = File::create(path)?;
    Ok(WriterBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_writer(WriteBehind::spawn(f)))
}

/// Flushes a data writer and hands back its file, positioned at the end.
fn finish_file(w: csv::Writer<WriteBehind>) -> std::io::Result<File> {
    w.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .finish()
}

fn finish_writer(w: csv::Writer<WriteBehind>) -> std::io::Result<u64> {
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
struct WriteBehind {
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
struct RowWriteBehind {
    batch: Vec<ByteRecord>,
    filled: usize,
    behind: Behind<(Vec<ByteRecord>, usize), ()>,
}

impl RowWriteBehind {
    const BATCH: usize = 4096;

    fn spawn(path: &Path) -> std::io::Result<RowWriteBehind> {
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
    fn next_row(&mut self) -> &mut ByteRecord {
        if self.filled == self.batch.len() {
            self.batch.push(ByteRecord::new());
        }
        let row = &mut self.batch[self.filled];
        row.clear();
        row
    }

    fn commit_row(&mut self) -> std::io::Result<()> {
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
    fn finish(mut self) -> std::io::Result<()> {
        if self.filled > 0 {
            self.send()?;
        }
        self.behind.finish()
    }
}

/// A load into a table (create, full or incremental import).
pub struct Load<'a> {
    pub sources: Vec<PathBuf>,
    pub dialect: Dialect,
    /// `columns[]`: the file's columns, and the file has no header.
    pub file_columns: Option<Vec<String>>,
    pub without_headers: bool,
    pub incremental: bool,
    /// Table creation: normalise header names and take them as the table's columns.
    pub create: bool,
    /// A typed table: no new columns, and every incoming key is re-stamped even when its values are equal
    /// (Keboola's documented difference between typed and string tables).
    pub typed: bool,
    pub table_columns: Vec<String>,
    pub primary_key: Vec<String>,
    pub existing: Option<&'a Path>,
    pub stamp: i64,
    pub out: PathBuf,
    pub scratch: PathBuf,
}

#[derive(Debug)]
pub struct LoadOutcome {
    pub columns: Vec<String>,
    pub imported_columns: Vec<String>,
    pub rows_count: u64,
    pub data_size_bytes: u64,
    pub changed: bool,
}

fn csv_error(e: csv::Error) -> JobError {
    JobError::new(
        "invalidCsv",
        format!("Load error: the CSV file is invalid: {e}"),
    )
}

/// The primary-key value of a record whose values start at `offset`, as a 128-bit XXH3 hash (of the value,
/// or of the length-prefixed values of a composite key): loads keep one per incoming row in memory, so it
/// must be small, and at 128 bits a collision among even billions of keys is not a practical concern.
fn key_of(rec: &ByteRecord, offset: usize, pk: &[usize]) -> u128 {
    if let [i] = pk {
        return xxh3_128(rec.get(i + offset).unwrap_or(b""));
    }
    let mut h = Xxh3Default::new();
    for &i in pk {
        let v = rec.get(i + offset).unwrap_or(b"");
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    h.digest128()
}

/// A hash of a record's first `width` values (from `offset`): tells an unchanged upserted row apart.
fn hash_of(rec: &ByteRecord, offset: usize, width: usize) -> u64 {
    let mut h = Xxh3Default::new();
    for i in 0..width {
        let v = rec.get(i + offset).unwrap_or(b"");
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    h.digest()
}

/// Key hashes are already uniformly spread, so the maps holding them use the hash's own bits as the bucket
/// hash instead of hashing it again with SipHash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys go in (below); anything else still gets a sound, if slower, hash.
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u128(&mut self, key: u128) {
        self.0 = (key as u64) ^ ((key >> 64) as u64);
    }
}

type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<u128, BuildHasherDefault<KeyHasher>>;

/// A row's key hash (its top 96 bits) and the row's index in the load, in one sortable value.
fn pack_key(key: u128, index: u32) -> u128 {
    (key & !u128::from(u32::MAX)) | u128::from(index)
}

/// Packed keys bucketed by their top byte: duplicates share a bucket, and each bucket sorts in cache.
struct PackedKeys(Vec<Vec<u128>>);

impl PackedKeys {
    fn new() -> PackedKeys {
        PackedKeys(vec![Vec::new(); 256])
    }

    fn push(&mut self, packed: u128) {
        self.0[(packed >> 120) as usize].push(packed);
    }
}

/// Sorts a load's packed keys and marks every row whose key comes again later (last-wins): a bit set over
/// row indexes, or None when no key repeats. Sorting flat arrays beat inserting into a hash map several
/// times over: at 10 M rows the map's cache misses were the largest cost of a load in the profile. The
/// buckets sort on two threads.
fn duplicate_losers(keys: PackedKeys, rows: u64) -> Option<Vec<u64>> {
    let mut buckets = keys.0;
    let (a, b) = buckets.split_at_mut(128);
    std::thread::scope(|scope| {
        scope.spawn(|| a.iter_mut().for_each(|k| k.sort_unstable()));
        b.iter_mut().for_each(|k| k.sort_unstable());
    });
    let same_key = |a: u128, b: u128| (a ^ b) >> 32 == 0;
    let mut bits: Option<Vec<u64>> = None;
    for w in buckets.iter().flat_map(|k| k.windows(2)) {
        // Within a key the indexes ascend, so every entry but the key's last loses.
        if same_key(w[0], w[1]) {
            let bits = bits.get_or_insert_with(|| vec![0u64; rows.div_ceil(64) as usize]);
            let index = (w[0] & u128::from(u32::MAX)) as usize;
            bits[index / 64] |= 1 << (index % 64);
        }
    }
    bits
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

/// Runs a load, writing the table's next generation to `load.out`. On error nothing but scratch files was
/// written and the caller keeps the old generation.
pub fn load(load: Load<'_>) -> Result<LoadOutcome, JobError> {
    let mut sources = load.sources.iter();
    let mut first_reader = match sources.next() {
        Some(p) => Some(load.dialect.reader(open_source(p)?)),
        None => None,
    };
    let mut rec = ByteRecord::new();

    // The file's columns.
    let file_columns: Vec<String> = if let Some(cols) = &load.file_columns {
        cols.clone()
    } else if load.without_headers {
        load.table_columns.clone()
    } else {
        let mut header = Vec::new();
        if let Some(r) = first_reader.as_mut()
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
    if file_columns.is_empty() || file_columns.iter().any(|c| c.is_empty()) {
        return Err(JobError::new(
            "storage.tables.validation.noColumns",
            "The CSV file has no header row or an empty column name; a table needs named columns.",
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = file_columns.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(JobError::new(
            "storage.tables.validation.duplicateColumn",
            format!("The CSV file has the column \"{dup}\" more than once."),
        ));
    }

    // Match the file's columns against the table's.
    let base: Vec<String> = if load.create {
        file_columns.clone()
    } else {
        load.table_columns.clone()
    };
    let missing: Vec<String> = base
        .iter()
        .filter(|c| !file_columns.contains(c))
        .cloned()
        .collect();
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
    let mut columns = base.clone();
    for c in &file_columns {
        if !columns.contains(c) {
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
            columns.push(c.clone());
        }
    }
    let positions: Vec<usize> = columns
        .iter()
        .map(|c| {
            file_columns
                .iter()
                .position(|f| f == c)
                .unwrap_or(usize::MAX)
        })
        .collect();
    let pk: Vec<usize> = load
        .primary_key
        .iter()
        .map(|k| {
            columns.iter().position(|c| c == k).ok_or_else(|| {
                JobError::new(
                    "storage.tables.validation.invalidPrimaryKeyColumns",
                    format!("Primary key column \"{k}\" is not a column of the table"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let width = columns.len();

    // Pass 1: the incoming rows, stamped and in table column order (the stored format), to scratch; the
    // keys (last-wins) in memory.
    let stamp = load.stamp.to_string();
    let upsert = load.incremental && load.existing.is_some() && !load.typed;
    // Stored rows are looked up by key only when they are merged with the incoming ones.
    let merge = load.incremental && load.existing.is_some();
    // Merges: key → index of its last incoming row (u64::MAX once a stored row proved it unchanged); row
    // hashes live apart, and only for upserts. Other loads: one packed key per row (16 bytes).
    let mut incoming_keys: KeyMap<u64> = KeyMap::default();
    let mut packed_keys = PackedKeys::new();
    let mut row_hashes: Vec<u64> = Vec::new();
    let mut incoming_rows = 0u64;
    {
        let mut scratch = RowWriteBehind::spawn(&load.scratch)?;
        let mut reader = first_reader.take();
        let mut consume = |r: &mut csv::Reader<Box<dyn Read + Send>>| -> Result<(), JobError> {
            while r.read_byte_record(&mut rec).map_err(csv_error)? {
                if rec.len() == 1 && rec.get(0) == Some(b"") && file_columns.len() > 1 {
                    continue; // a blank line
                }
                if rec.len() != file_columns.len() {
                    let line = rec.position().map(|p| p.line()).unwrap_or(0);
                    return Err(JobError::new(
                        "invalidCsv",
                        format!(
                            "Load error: line {line} of the CSV file has {} values but the file has {} columns ({}).",
                            rec.len(),
                            file_columns.len(),
                            file_columns.join(",")
                        ),
                    ));
                }
                // Storage (Snowflake) accepts UTF-8 only and fails the load otherwise; storing the
                // bytes would hand them back later as data nobody can read.
                if !record_is_utf8(&rec)
                    && let Some(i) = rec.iter().position(|f| std::str::from_utf8(f).is_err())
                {
                    let line = rec.position().map(|p| p.line()).unwrap_or(0);
                    return Err(JobError::new(
                        "invalidCsv",
                        format!(
                            "Load error: line {line}, column \"{}\": invalid UTF-8 byte sequence. The CSV file must be UTF-8 encoded.",
                            file_columns.get(i).map(String::as_str).unwrap_or("?")
                        ),
                    ));
                }
                let out = scratch.next_row();
                out.push_field(stamp.as_bytes());
                for &p in &positions {
                    out.push_field(rec.get(p).unwrap_or(b""));
                }
                if !pk.is_empty() {
                    // The row hash only matters when comparing with stored rows (an upsert).
                    if upsert {
                        row_hashes.push(hash_of(out, 1, width));
                    }
                    if merge {
                        incoming_keys.insert(key_of(out, 1, &pk), incoming_rows);
                    } else {
                        let index = u32::try_from(incoming_rows).map_err(|_| {
                            JobError::new(
                                "storage.tables.validation.tooManyRows",
                                "The emulator loads at most 4,294,967,295 rows with a primary key at once.",
                            )
                        })?;
                        packed_keys.push(pack_key(key_of(out, 1, &pk), index));
                    }
                }
                scratch.commit_row()?;
                incoming_rows += 1;
            }
            Ok(())
        };
        if let Some(r) = reader.as_mut() {
            consume(r)?;
        }
        for p in sources {
            let mut r = load.dialect.reader(open_source(p)?);
            consume(&mut r)?;
        }
        scratch.finish()?;
    }
    let outcome = |rows_count, data_size_bytes, changed| LoadOutcome {
        columns: columns.clone(),
        imported_columns: file_columns.clone(),
        rows_count,
        data_size_bytes,
        changed,
    };
    // Rows of a non-merging load that a later row with the same key replaces (None: no duplicate keys).
    let losers = if merge {
        None
    } else {
        duplicate_losers(packed_keys, incoming_rows)
    };
    let no_duplicates = pk.is_empty()
        || if merge {
            incoming_keys.len() as u64 == incoming_rows
        } else {
            losers.is_none()
        };

    // A full load without duplicate keys: the scratch file already is the next generation.
    if !load.incremental && no_duplicates {
        if let Some(parent) = load.out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&load.scratch, &load.out)?;
        let size = std::fs::metadata(&load.out)?.len();
        return Ok(outcome(
            incoming_rows,
            size,
            load.existing.is_some() || incoming_rows > 0,
        ));
    }

    // Pass 2: the next generation.
    let mut out = data_writer(&load.out)?;
    let mut rows_count = 0u64;
    let mut changed = false;
    let mut rec_out = ByteRecord::new();
    let werr = |e: csv::Error| JobError::new("applicationError", e.to_string());
    if load.incremental {
        // Existing rows: kept, unless an incoming row replaces them with different values.
        for_each_row(load.existing, |_, row| {
            if !pk.is_empty()
                && let Some(entry) = incoming_keys.get_mut(&key_of(row, 1, &pk))
            {
                let unchanged = upsert
                    && *entry != u64::MAX
                    && row_hashes.get(*entry as usize) == Some(&hash_of(row, 1, width));
                if unchanged {
                    *entry = u64::MAX; // keep the stored row and its stamp
                } else if *entry != u64::MAX {
                    changed = true;
                    return Ok(true); // replaced below
                } else {
                    return Ok(true); // a stored duplicate of an already kept key
                }
            }
            rec_out.clear();
            rec_out.push_field(row.get(0).unwrap_or(b"0"));
            for i in 1..=width {
                rec_out.push_field(row.get(i).unwrap_or(b""));
            }
            out.write_byte_record(&rec_out).map_err(werr)?;
            rows_count += 1;
            Ok(true)
        })?;
    } else {
        changed = load.existing.is_some();
    }
    if pk.is_empty() {
        // An append: the scratch rows go in as they are.
        let mut f = finish_file(out)?;
        std::io::copy(&mut File::open(&load.scratch)?, &mut f)?;
        let size = f.metadata()?.len();
        let _ = std::fs::remove_file(&load.scratch);
        return Ok(outcome(
            rows_count + incoming_rows,
            size,
            changed || incoming_rows > 0,
        ));
    }
    // Incoming rows: the winner of each key, unless it left a stored row unchanged.
    {
        let f = File::open(&load.scratch)?;
        let mut rdr = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 16)
            .from_reader(f);
        let mut row = ByteRecord::new();
        let mut idx = 0u64;
        while rdr.read_byte_record(&mut row).map_err(csv_error)? {
            let wins = match &losers {
                Some(bits) => bits[(idx / 64) as usize] & (1 << (idx % 64)) == 0,
                None if merge => incoming_keys
                    .get(&key_of(&row, 1, &pk))
                    .is_some_and(|&e| e == idx),
                None => true,
            };
            if wins {
                out.write_byte_record(&row).map_err(werr)?;
                rows_count += 1;
                changed = true;
            }
            idx += 1;
        }
    }
    let data_size_bytes = finish_writer(out)?;
    let _ = std::fs::remove_file(&load.scratch);
    Ok(outcome(rows_count, data_size_bytes, changed))
}

/// Rewrites a table without the rows `sel` selects. Returns (deleted, kept, new size).
pub fn delete_rows(
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
pub fn drop_column(data: Option<&Path>, index: usize, out: &Path) -> Result<u64, JobError> {
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

/// Whether the key columns hold a duplicate (the check of a primary-key add).
pub fn has_duplicate_keys(data: Option<&Path>, key: &[usize]) -> Result<bool, JobError> {
    let mut seen = KeySet::default();
    let mut dup = false;
    for_each_row(data, |_, rec| {
        if !seen.insert(key_of(rec, 1, key)) {
            dup = true;
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(dup)
}

/// The RFC CSV writer of exports and previews: every value quoted, `""` escapes, `\n` line ends.
pub fn rfc_writer<W: Write>(w: W) -> csv::Writer<W> {
    WriterBuilder::new()
        .quote_style(QuoteStyle::Always)
        .terminator(Terminator::Any(b'\n'))
        .from_writer(w)
}

/// Selected rows (values of `columns`, up to `limit`), for previews and dumps. Bounded by `limit`.
pub fn select_rows(
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

/// One `orderBy` key: a table column index, descending or not, compared as numbers or as bytes.
#[derive(Debug, Clone, Copy)]
pub struct OrderKey {
    pub column: usize,
    pub descending: bool,
    pub numeric: bool,
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
pub fn select_rows_ordered(
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

/// An export request over a table's rows.
pub struct Export<'a> {
    pub data: Option<&'a Path>,
    pub selection: Selection,
    pub columns: Vec<usize>,
    pub limit: Option<u64>,
    pub gzip: bool,
    /// Append the row's import stamp as a last `_timestamp` column (`2024-01-31 12:00:00`, UTC).
    pub with_timestamp: bool,
    /// Where slice `i` goes.
    pub slice_path: &'a (dyn Fn(usize) -> PathBuf + Sync),
    /// Truncate the first slice to this many bytes (fault injection).
    pub truncate_first_slice: Option<u64>,
}

/// Writes header-less RFC CSV slices (at least one, possibly empty), compressing them on a bounded pool of
/// threads while this thread reads and filters. Returns each slice's path and size, in order.
pub fn export(ex: Export<'_>) -> Result<Vec<(PathBuf, u64)>, JobError> {
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
    use super::*;

    pub(super) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub(super) fn rows(data: &Path) -> Vec<(i64, Vec<String>)> {
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
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

    #[test]
    fn header_names_are_normalised_on_create() {
        assert_eq!(normalize_column_name("col2 with space"), "col2_with_space");
        assert_eq!(normalize_column_name("language-id"), "language_id");
    }

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

/// Property tests (issue 7): the load parser never panics on any bytes, and any table of strings a CSV
/// writer can express comes back out of a load unchanged.
#[cfg(test)]
mod properties {
    use super::tests::{rows, run, write};
    use super::*;
    use proptest::prelude::*;

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
