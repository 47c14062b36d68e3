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

pub(super) fn data_writer(path: &Path) -> std::io::Result<csv::Writer<WriteBehind>> {
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
}
