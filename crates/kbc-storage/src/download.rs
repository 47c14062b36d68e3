//! Downloads of File Storage files: plain and sliced, streamed, in parallel.
//!
//! A sliced file is read from its manifest; its slices download in parallel, bounded by the client's
//! global connection semaphore, each streamed through gunzip (chosen by the gzip magic bytes, not by the
//! name) into a temporary file next to the destination. A merged download then appends the slices in
//! manifest order behind one header row, as soon as each is complete; a sliced download moves them into
//! the destination folder. Memory stays flat: every stage is a bounded stream, never a whole slice.
//! Nothing appears at the destination until everything succeeded (temporary name, then rename).
//!
//! No file is fsync'd: the rename makes the result atomic against a crash of this process, which is the
//! promise; durability against power loss is not one (the data folder is a job's scratch space, and the
//! platform re-runs a failed job), and flushing a 2 GB export to disk would cost several seconds — more
//! than the download itself on a virtual disk.

use super::error::Error;
use super::progress::TransferProgress;
use super::providers::Location;
use super::types::DownloadMode;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::sync::Semaphore;

/// Counts CSV records in a byte stream split at arbitrary points: a newline outside quotes ends a record.
/// Assumes the RFC dialect the Storage API exports (`"` enclosure, `""` escape), where a toggling quote
/// state tracks `""` correctly.
#[derive(Debug, Default, Clone)]
pub struct RecordCounter {
    in_quotes: bool,
    records: u64,
    last: Option<u8>,
}

impl RecordCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        // 64 bytes at a time: bit masks of quotes and newlines, a prefix XOR over the quote mask tells
        // which bytes sit inside quotes, and a popcount counts the newlines outside them. A byte-at-a-time
        // loop cost as much CPU as the gunzip itself (profile in the README's benchmark notes).
        let mut blocks = chunk.chunks_exact(64);
        for block in &mut blocks {
            let (quotes, newlines) = byte_masks(block.try_into().expect("64-byte block"));
            let mut inside = quotes;
            for shift in [1, 2, 4, 8, 16, 32] {
                inside ^= inside << shift;
            }
            if self.in_quotes {
                inside = !inside;
            }
            self.records += u64::from((newlines & !inside).count_ones());
            self.in_quotes = inside >> 63 == 1;
        }
        for &b in blocks.remainder() {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.records += 1,
                _ => {}
            }
        }
        if let Some(&b) = chunk.last() {
            self.last = Some(b);
        }
    }

    /// Records so far, counting a last record without a trailing newline.
    pub fn records(&self) -> u64 {
        self.records + u64::from(self.last.is_some_and(|b| b != b'\n'))
    }

    /// Whether the data ended without a newline (the next slice must not be glued to it).
    pub fn needs_newline(&self) -> bool {
        self.last.is_some_and(|b| b != b'\n')
    }
}

/// Bit `i` of the first mask is set when `block[i]` is `"`, of the second when it is `\n`.
#[cfg(target_arch = "x86_64")]
fn byte_masks(block: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let (mut quotes, mut newlines) = (0u64, 0u64);
    for (k, lane) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load reads exactly the 16 bytes
        // of `lane`, which `chunks_exact(16)` guarantees are there.
        let (q, n) = unsafe {
            let v = _mm_loadu_si128(lane.as_ptr().cast());
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8))),
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8))),
            )
        };
        quotes |= u64::from(q as u16) << (16 * k);
        newlines |= u64::from(n as u16) << (16 * k);
    }
    (quotes, newlines)
}

/// Bit `i` of the first mask is set when `block[i]` is `"`, of the second when it is `\n`.
#[cfg(not(target_arch = "x86_64"))]
fn byte_masks(block: &[u8; 64]) -> (u64, u64) {
    let (mut quotes, mut newlines) = (0u64, 0u64);
    for (i, &b) in block.iter().enumerate() {
        quotes |= u64::from(b == b'"') << i;
        newlines |= u64::from(b == b'\n') << i;
    }
    (quotes, newlines)
}

/// What one slice (or plain file) gave.
#[derive(Debug, Default, Clone)]
pub(crate) struct SliceStats {
    pub bytes: u64,
    pub counter: RecordCounter,
}

pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Opens an object as a byte stream.
pub(crate) async fn open_object(
    location: &Location,
    path: &ObjectPath,
) -> Result<ByteStream, Error> {
    let result =
        location.store.get(path).await.map_err(|e| {
            Error::cloud("downloading", format!("{}{path}", location.url_prefix), e)
        })?;
    Ok(Box::pin(
        result.into_stream().map_err(std::io::Error::other),
    ))
}

/// Bytes of decompressed output handled at a time.
const CHUNK: usize = 1024 * 1024;

/// Streams `source` (gunzipped when it starts with the gzip magic) into a new file at `dest`.
///
/// The gunzip and the writes run on a blocking thread with plain `std` files: through `tokio::fs` every
/// write was copied once more into the runtime's own buffer (9 % of an export's CPU in the profile).
pub(crate) async fn stream_to_file(
    source: ByteStream,
    dest: &Path,
    progress: &Arc<TransferProgress>,
    what: &str,
) -> Result<SliceStats, Error> {
    let counted = {
        let progress = progress.clone();
        source.inspect_ok(move |chunk| {
            progress
                .transferred
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        })
    };
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(counted));
    let (dest, progress, label) = (dest.to_owned(), progress.clone(), what.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut out = std::fs::File::create(&dest).map_err(|e| Error::io("creating", &dest, e))?;
        decode(reader, &mut out, &dest, &progress, &label)
    })
    .await
    .map_err(|e| Error::cloud("downloading", what.to_owned(), std::io::Error::other(e)))?
}

/// Reads `input` (the object `what`) to its end, gunzipping it when it starts with the gzip magic (all
/// members), counting records, and writes it to `out` (the file `dest`) a [`CHUNK`] at a time.
fn decode(
    input: impl std::io::Read,
    out: &mut impl std::io::Write,
    dest: &Path,
    progress: &TransferProgress,
    what: &str,
) -> Result<SliceStats, Error> {
    use std::io::{BufRead as _, Read as _};
    let failed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::InvalidData
            || e.kind() == std::io::ErrorKind::InvalidInput
        {
            Error::cloud("decompressing", what.to_owned(), e)
        } else {
            Error::cloud("downloading", what.to_owned(), e)
        }
    };
    let mut raw = std::io::BufReader::with_capacity(64 * 1024, input);
    let gzipped = crate::local_csv::is_gzip(raw.fill_buf().map_err(failed)?);
    let mut reader: Box<dyn std::io::Read> = if gzipped {
        // Concatenated gzip members are valid gzip; some writers produce them.
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut stats = SliceStats::default();
    let mut buf = vec![0; CHUNK];
    loop {
        let mut filled = 0;
        // Fill the buffer (a gunzip read returns little at a time) so that writes stay large.
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failed(e)),
            }
        }
        if filled == 0 {
            return Ok(stats);
        }
        stats.counter.feed(&buf[..filled]);
        stats.bytes += filled as u64;
        progress
            .local_bytes
            .fetch_add(filled as u64, Ordering::Relaxed);
        out.write_all(&buf[..filled])
            .map_err(|e| Error::io("writing", dest, e))?;
    }
}

/// Reads a sliced file's manifest: the slice object paths, in manifest order.
pub(crate) async fn read_manifest(location: &Location) -> Result<Vec<ObjectPath>, Error> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        entries: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        url: String,
    }
    let path = super::providers::object_path(&format!("{}manifest", location.key));
    let bytes = location
        .store
        .get(&path)
        .await
        .map_err(|e| {
            Error::cloud(
                "reading the manifest",
                format!("{}manifest", location.display),
                e,
            )
        })?
        .bytes()
        .await
        .map_err(|e| {
            Error::cloud(
                "reading the manifest",
                format!("{}manifest", location.display),
                e,
            )
        })?;
    let manifest: Manifest =
        super::transport::decode(&format!("the manifest of {}", location.display), &bytes)?;
    manifest
        .entries
        .iter()
        .map(|e| location.entry_path(&e.url))
        .collect()
}

/// The result of a sliced download.
#[derive(Debug, Default)]
pub(crate) struct Downloaded {
    pub bytes: u64,
    pub rows: u64,
    pub slices: usize,
}

/// Downloads slices in parallel and assembles them at `dest`: one CSV behind `header` (merged), or a
/// folder of slice files (sliced).
pub(crate) async fn download_slices(
    location: &Location,
    slices: Vec<ObjectPath>,
    header: &[String],
    dest: &Path,
    mode: DownloadMode,
    slots: Arc<Semaphore>,
    progress: Arc<TransferProgress>,
) -> Result<Downloaded, Error> {
    let parent = parent_dir(dest);
    let work = tempfile::Builder::new()
        .prefix(".kbc-download-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io("creating a temporary folder in", &parent, e))?;
    let names = slice_names(&slices);

    // One task per slice; the semaphore bounds how many transfer at once. Each reports on its own channel
    // so the assembler can take them in manifest order while later ones still download.
    let mut tasks = tokio::task::JoinSet::new();
    let mut receivers = Vec::with_capacity(slices.len());
    for (i, path) in slices.iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        receivers.push(rx);
        let location = location.clone();
        let path = path.clone();
        let file = work.path().join(&names[i]);
        let slots = slots.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let result = async {
                let _permit = slots
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Invalid("the client was shut down".into()))?;
                let what = format!("{}{path}", location.url_prefix);
                let stream = open_object(&location, &path).await?;
                stream_to_file(stream, &file, &progress, &what).await
            }
            .await;
            let _ = tx.send(result.map(|stats| (file, stats)));
        });
    }

    let assembled: Result<Downloaded, Error> = async {
        match mode {
            DownloadMode::Merged => {
                let tmp = work.path().join(".merged.csv");
                std::fs::write(&tmp, header_line(header).as_bytes())
                    .map_err(|e| Error::io("writing", &tmp, e))?;
                let mut total = Downloaded {
                    slices: slices.len(),
                    ..Default::default()
                };
                for rx in receivers {
                    let (slice, stats) = rx
                        .await
                        .map_err(|_| Error::Invalid("a slice download was cancelled".into()))??;
                    let newline = stats.counter.needs_newline();
                    let (from, to) = (slice.clone(), tmp.clone());
                    tokio::task::spawn_blocking(move || append_file(&from, &to, newline))
                        .await
                        .map_err(|e| Error::io("writing", &tmp, std::io::Error::other(e)))??;
                    // Free the disk space as we go.
                    let _ = tokio::fs::remove_file(&slice).await;
                    total.bytes += stats.bytes;
                    total.rows += stats.counter.records();
                    progress.rows.store(total.rows, Ordering::Relaxed);
                }
                replace(&tmp, dest).await?;
                Ok(total)
            }
            DownloadMode::Sliced => {
                let mut total = Downloaded {
                    slices: slices.len(),
                    ..Default::default()
                };
                for rx in receivers {
                    let (_, stats) = rx
                        .await
                        .map_err(|_| Error::Invalid("a slice download was cancelled".into()))??;
                    total.bytes += stats.bytes;
                    total.rows += stats.counter.records();
                    progress.rows.store(total.rows, Ordering::Relaxed);
                }
                let folder = work.path().join(".sliced");
                tokio::fs::create_dir(&folder)
                    .await
                    .map_err(|e| Error::io("creating", &folder, e))?;
                for name in &names {
                    let from = work.path().join(name);
                    tokio::fs::rename(&from, folder.join(name))
                        .await
                        .map_err(|e| Error::io("moving", &from, e))?;
                }
                replace(&folder, dest).await?;
                Ok(total)
            }
        }
    }
    .await;
    let result = match assembled {
        Ok(r) => r,
        Err(e) => {
            // Stop the other transfers before the temporary folder goes away.
            tasks.shutdown().await;
            return Err(e);
        }
    };
    // Surface a panic in a task rather than losing it.
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            return Err(Error::Invalid(format!(
                "a slice download failed unexpectedly: {e}"
            )));
        }
    }
    Ok(result)
}

/// Downloads one plain (non-sliced) file to `dest`. Such files carry their own header row: a merged
/// download keeps it, a sliced download drops it (slices are header-less) and returns it.
pub(crate) async fn download_plain(
    source: ByteStream,
    dest: &Path,
    mode: DownloadMode,
    progress: &Arc<TransferProgress>,
    what: &str,
) -> Result<(SliceStats, Option<Vec<String>>), Error> {
    let parent = parent_dir(dest);
    let work = tempfile::Builder::new()
        .prefix(".kbc-download-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io("creating a temporary folder in", &parent, e))?;
    let tmp = work.path().join("data.csv");
    let stats = stream_to_file(source, &tmp, progress, what).await?;
    match mode {
        DownloadMode::Merged => {
            replace(&tmp, dest).await?;
            let mut stats = stats;
            // The header is not a data row.
            stats.counter.records = stats.counter.records.saturating_sub(1);
            Ok((stats, None))
        }
        DownloadMode::Sliced => {
            let folder = work.path().join("sliced");
            tokio::fs::create_dir(&folder)
                .await
                .map_err(|e| Error::io("creating", &folder, e))?;
            let body = folder.join("part-00000.csv");
            let (header, header_len) = split_header(&tmp).await?;
            let mut input = tokio::fs::File::open(&tmp)
                .await
                .map_err(|e| Error::io("reading", &tmp, e))?;
            tokio::io::AsyncSeekExt::seek(&mut input, std::io::SeekFrom::Start(header_len))
                .await
                .map_err(|e| Error::io("reading", &tmp, e))?;
            let mut out = tokio::fs::File::create(&body)
                .await
                .map_err(|e| Error::io("creating", &body, e))?;
            tokio::io::copy(&mut input, &mut out)
                .await
                .map_err(|e| Error::io("writing", &body, e))?;
            replace(&folder, dest).await?;
            let mut stats = stats;
            stats.bytes = stats.bytes.saturating_sub(header_len);
            stats.counter.records = stats.counter.records.saturating_sub(1);
            Ok((stats, Some(header)))
        }
    }
}

/// Reads the first CSV record of a file: its fields and its length in bytes.
async fn split_header(path: &Path) -> Result<(Vec<String>, u64), Error> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("reading", path, e))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut in_quotes = false;
    let mut byte = [0u8; 1];
    // A header is short; read byte by byte through the buffer until a newline outside quotes.
    loop {
        let n = reader
            .read(&mut byte)
            .await
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        line.push(byte[0]);
        match byte[0] {
            b'"' => in_quotes = !in_quotes,
            b'\n' if !in_quotes => break,
            _ => {}
        }
        if line.len() > 16 * 1024 * 1024 {
            return Err(Error::Decode {
                what: path.display().to_string(),
                message: "the header row is longer than 16 MiB".into(),
            });
        }
    }
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_slice());
    let fields = match csv.records().next() {
        Some(Ok(r)) => r.iter().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    Ok((fields, line.len() as u64))
}

/// Appends a finished slice to the merged file. Blocking on purpose: between two files `std::io::copy`
/// lets the kernel move the bytes (`copy_file_range`), several times faster than an async copy loop. The
/// file is opened for writing and positioned at its end, not opened with `O_APPEND`: `copy_file_range`
/// refuses an append-mode target, and the copy would fall back to 8 KiB reads and writes.
fn append_file(from: &Path, to: &Path, newline: bool) -> Result<(), Error> {
    use std::io::{Seek as _, Write as _};
    let mut input = std::fs::File::open(from).map_err(|e| Error::io("reading", from, e))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(to)
        .map_err(|e| Error::io("writing", to, e))?;
    out.seek(std::io::SeekFrom::End(0))
        .map_err(|e| Error::io("writing", to, e))?;
    std::io::copy(&mut input, &mut out).map_err(|e| Error::io("writing", to, e))?;
    if newline {
        out.write_all(b"\n")
            .map_err(|e| Error::io("writing", to, e))?;
    }
    Ok(())
}

/// The RFC header row the Storage API would write: every name quoted, `"` doubled, `\n` at the end.
pub fn header_line(columns: &[String]) -> String {
    let mut line = columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// Local names for slices: the last segment of the object name, without `.gz` (they are stored
/// decompressed); the manifest position when names collide or are empty.
fn slice_names(slices: &[ObjectPath]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    slices
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let base = p.filename().unwrap_or_default();
            let base = base.strip_suffix(".gz").unwrap_or(base);
            let safe: String = base
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let name = if safe.is_empty() || safe.starts_with('.') || !seen.insert(safe.clone()) {
                format!("slice-{i:05}")
            } else {
                safe
            };
            seen.insert(name.clone());
            name
        })
        .collect()
}

fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Moves `from` to `dest`, replacing a file or folder that is there. A file over a file is one rename, so
/// `dest` is never missing and a failed move keeps the old file; a folder on either side has to be removed
/// first (rename does not replace a folder with a file, nor a non-empty folder).
async fn replace(from: &Path, dest: &Path) -> Result<(), Error> {
    if let Ok(meta) = tokio::fs::symlink_metadata(dest).await {
        let removed = if meta.is_dir() {
            tokio::fs::remove_dir_all(dest).await
        } else if tokio::fs::metadata(from).await.is_ok_and(|m| m.is_dir()) {
            tokio::fs::remove_file(dest).await
        } else {
            Ok(()) // a file over a file: the rename below replaces it
        };
        removed.map_err(|e| Error::io("replacing", dest, e))?;
    }
    tokio::fs::rename(from, dest)
        .await
        .map_err(|e| Error::io("moving the download to", dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    async fn sliced_fixture(slices: &[&[u8]], gz: bool) -> Location {
        let store = Arc::new(InMemory::new());
        let mut entries = Vec::new();
        for (i, s) in slices.iter().enumerate() {
            let key = format!("exp/7.csv{i:04}_part_00{}", if gz { ".gz" } else { "" });
            let data = if gz { gzip(s) } else { s.to_vec() };
            store
                .put(&ObjectPath::from(key.as_str()), data.into())
                .await
                .unwrap();
            entries.push(serde_json::json!({"url": format!("s3://b/{key}")}));
        }
        let manifest = serde_json::json!({ "entries": entries }).to_string();
        store
            .put(
                &ObjectPath::from("exp/7.csvmanifest"),
                manifest.into_bytes().into(),
            )
            .await
            .unwrap();
        Location {
            store: store as Arc<dyn ObjectStore>,
            key: "exp/7.csv".into(),
            url_prefix: "s3://b/".into(),
            container: None,
            display: "s3://b/exp/7.csv".into(),
        }
    }

    /// A merged download of `paths` behind `header`, `connections` slices at a time.
    async fn merged(
        location: &Location,
        paths: Vec<ObjectPath>,
        header: &[&str],
        dest: &Path,
        connections: usize,
    ) -> Result<Downloaded, Error> {
        let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
        download_slices(
            location,
            paths,
            &header,
            dest,
            DownloadMode::Merged,
            Arc::new(Semaphore::new(connections)),
            Arc::default(),
        )
        .await
    }

    #[test]
    fn counts_records_across_chunks_and_quotes() {
        let data = b"\"1\",\"a\nb\"\n\"2\",\"say \"\"hi\"\"\"\n\"3\",\"x\"";
        for split in 0..data.len() {
            let mut c = RecordCounter::default();
            c.feed(&data[..split]);
            c.feed(&data[split..]);
            assert_eq!(c.records(), 3, "split at {split}");
            assert!(c.needs_newline());
        }
    }

    proptest::proptest! {
        /// The 64-byte block path agrees with a plain byte-at-a-time count, wherever the chunks split.
        #[test]
        fn block_counting_matches_a_byte_loop(
            data in proptest::collection::vec(proptest::sample::select(b"\"\na,".to_vec()), 0..600),
            split in 0usize..600,
        ) {
            let (mut in_quotes, mut expected) = (false, 0u64);
            for &b in &data {
                match b {
                    b'"' => in_quotes = !in_quotes,
                    b'\n' if !in_quotes => expected += 1,
                    _ => {}
                }
            }
            let split = split.min(data.len());
            let mut c = RecordCounter::default();
            c.feed(&data[..split]);
            c.feed(&data[split..]);
            proptest::prop_assert_eq!(c.records, expected);
            proptest::prop_assert_eq!(c.in_quotes, in_quotes);
        }
    }

    #[tokio::test]
    async fn merged_download_has_one_header_and_all_slices_in_order() {
        let slices: Vec<&[u8]> = vec![
            b"\"1\",\"multi\nline\"\n",
            b"\"2\",\"\xc5\xbelu\xc5\xa5ou\xc4\x8dk\xc3\xbd\"\n\"3\",\"q\"\"uote\"\n",
            b"",
            b"\"4\",\"no newline at end\"",
            b"\"5\",\"e\"\n",
        ];
        let location = sliced_fixture(&slices, true).await;
        let paths = read_manifest(&location).await.unwrap();
        assert_eq!(paths.len(), 5);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        let progress = Arc::new(TransferProgress::default());
        let header = vec!["id".to_owned(), "na\"me".to_owned()];
        // One connection at a time still completes (no deadlock between assembler and downloads).
        let got = download_slices(
            &location,
            paths,
            &header,
            &dest,
            DownloadMode::Merged,
            Arc::new(Semaphore::new(1)),
            progress.clone(),
        )
        .await
        .unwrap();
        let text = std::fs::read_to_string(&dest).unwrap();
        let mut expected = String::from("\"id\",\"na\"\"me\"\n");
        for s in &slices {
            expected.push_str(std::str::from_utf8(s).unwrap());
        }
        expected = expected.replace("end\"\"5\"", "end\"\n\"5\"");
        assert_eq!(text, expected);
        assert_eq!(got.rows, 5);
        assert_eq!(got.slices, 5);
        assert!(progress.transferred.load(Ordering::Relaxed) > 0);
        // Nothing left behind but the result.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out.csv")]);
    }

    #[tokio::test]
    async fn sliced_download_keeps_header_less_decompressed_slices() {
        let slices: Vec<&[u8]> = vec![b"\"1\",\"a\"\n", b"\"2\",\"b\"\n"];
        let location = sliced_fixture(&slices, true).await;
        let paths = read_manifest(&location).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("t.csv");
        std::fs::write(&dest, "old").unwrap();
        let got = download_slices(
            &location,
            paths,
            &[],
            &dest,
            DownloadMode::Sliced,
            Arc::new(Semaphore::new(4)),
            Arc::default(),
        )
        .await
        .unwrap();
        assert_eq!(got.rows, 2);
        let mut files: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2);
        assert_eq!(std::fs::read(&files[0]).unwrap(), slices[0]);
        assert_eq!(std::fs::read(&files[1]).unwrap(), slices[1]);
        assert!(
            files[0]
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("0000_part_00")
        );
    }

    #[tokio::test]
    async fn a_missing_slice_fails_and_leaves_nothing() {
        let location = sliced_fixture(&[b"\"1\"\n"], false).await;
        let mut paths = read_manifest(&location).await.unwrap();
        paths.push(ObjectPath::from("exp/7.csv0099_part_00"));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        let err = merged(&location, paths, &["a"], &dest, 2)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("0099_part_00"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn merged_slices_larger_than_a_buffer_keep_their_order_and_bytes() {
        // Slices of different sizes around CHUNK, four downloading at once, so the buffer is reused with
        // shorter data in it and later slices finish before earlier ones are appended.
        let sizes = [
            3 * CHUNK + 17,
            10,
            CHUNK,
            2 * CHUNK - 1,
            0,
            CHUNK + 1,
            77,
            5 * CHUNK / 2,
        ];
        let slices: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut data = Vec::with_capacity(n + 32);
                let mut row = 0;
                while data.len() < n {
                    data.extend_from_slice(format!("\"{i}\",\"{row}\",\"x\"\n").as_bytes());
                    row += 1;
                }
                data
            })
            .collect();
        let views: Vec<&[u8]> = slices.iter().map(Vec::as_slice).collect();
        let location = sliced_fixture(&views, true).await;
        let paths = read_manifest(&location).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        let got = merged(&location, paths, &["s", "r", "x"], &dest, 4)
            .await
            .unwrap();
        let mut expected = b"\"s\",\"r\",\"x\"\n".to_vec();
        let header = expected.len();
        slices.iter().for_each(|s| expected.extend_from_slice(s));
        let text = std::fs::read(&dest).unwrap();
        assert_eq!(text.len(), expected.len());
        assert!(
            text == expected,
            "the merged file differs from the slices in order"
        );
        let rows: usize = slices
            .iter()
            .map(|s| s.iter().filter(|&&b| b == b'\n').count())
            .sum();
        assert_eq!(got.rows, rows as u64);
        assert_eq!(got.bytes, (expected.len() - header) as u64);
    }

    #[tokio::test]
    async fn a_corrupt_slice_fails_naming_it_and_leaves_nothing() {
        let location = sliced_fixture(&[b"\"1\"\n", b"\"2\"\n", b"\"3\"\n"], true).await;
        // The middle slice: gzip magic, then garbage.
        location
            .store
            .put(
                &ObjectPath::from("exp/7.csv0001_part_00.gz"),
                vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xfe, 0xfd].into(),
            )
            .await
            .unwrap();
        let paths = read_manifest(&location).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        let err = merged(&location, paths, &["a"], &dest, 2)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("decompressing") && text.contains("0001_part_00"),
            "{text}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_download_replaces_files_and_folders_and_a_failed_move_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let (dest, file, folder) = (
            dir.path().join("dest"),
            dir.path().join("new.csv"),
            dir.path().join("new"),
        );
        let new_file = || std::fs::write(&file, "new").unwrap();
        let new_folder = || {
            std::fs::create_dir(&folder).unwrap();
            std::fs::write(folder.join("slice"), "s").unwrap();
        };
        std::fs::write(&dest, "old").unwrap();
        new_file();
        replace(&file, &dest).await.unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        new_folder();
        replace(&folder, &dest).await.unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("slice")).unwrap(), "s");
        new_folder();
        replace(&folder, &dest).await.unwrap();
        assert!(dest.join("slice").is_file());
        new_file();
        replace(&file, &dest).await.unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert!(!file.exists() && !folder.exists());
        // Nothing to move: the file that was there stays.
        let err = replace(&dir.path().join("missing"), &dest)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("moving the download to"), "{err}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
    }

    #[tokio::test]
    async fn plain_files_keep_or_drop_their_header() {
        let dir = tempfile::tempdir().unwrap();
        let data = gzip(b"\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"b\"\n");
        let stream = |d: Vec<u8>| -> ByteStream {
            Box::pin(futures::stream::iter(vec![Ok(Bytes::from(d))]))
        };
        let merged = dir.path().join("m.csv");
        let (stats, _) = download_plain(
            stream(data.clone()),
            &merged,
            DownloadMode::Merged,
            &Arc::default(),
            "x",
        )
        .await
        .unwrap();
        assert_eq!(stats.counter.records(), 2);
        assert_eq!(
            std::fs::read_to_string(&merged).unwrap(),
            "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"b\"\n"
        );
        let sliced = dir.path().join("s.csv");
        let (_, header) = download_plain(
            stream(data),
            &sliced,
            DownloadMode::Sliced,
            &Arc::default(),
            "x",
        )
        .await
        .unwrap();
        assert_eq!(header.unwrap(), vec!["id", "v"]);
        assert_eq!(
            std::fs::read_to_string(sliced.join("part-00000.csv")).unwrap(),
            "\"1\",\"a\"\n\"2\",\"b\"\n"
        );
    }
}
