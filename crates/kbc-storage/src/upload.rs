//! Uploads to File Storage: one file, gzipped on the fly, as a single PUT when small and a multipart
//! upload (bounded parts in flight) when big; or a folder of slices, uploaded in parallel under the file's
//! key, followed by the manifest `{"entries":[{"url":"s3://bucket/keySLICE"}]}` at `key + "manifest"`.
//!
//! Compression runs on every core: the file is cut into chunks that are gzipped in parallel and written in
//! order as gzip members (a gzip file is a series of members; every gzip reader joins them).
//!
//! Memory is bounded by part size × parts in flight × slices in flight, plus chunk size × cores for
//! compression, whatever the file size.

use super::error::Error;
use super::progress::TransferProgress;
use super::providers::{Location, object_path};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter as ObjectWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Part size of multipart uploads. S3 needs at least 5 MiB per part and allows 10 000 parts, so 8 MiB
/// parts carry files up to ~78 GiB; bigger tables should be sliced anyway.
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;

/// Whether a local file starts with the gzip magic bytes.
pub(crate) async fn is_gzipped(path: &Path) -> Result<bool, Error> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("reading", path, e))?;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = f
            .read(&mut magic[got..])
            .await
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(crate::local_csv::is_gzip(&magic[..got]))
}

/// Uploads one local file to `key`, compressing it when `compress` is set.
pub(crate) async fn put_file(
    location: &Location,
    key: &str,
    source: &Path,
    compress: bool,
    parts_in_flight: usize,
    progress: &TransferProgress,
) -> Result<(), Error> {
    let display = location.entry_url(key);
    let mut sink = ObjectWriter::with_capacity(location.store.clone(), object_path(key), PART_SIZE)
        .with_max_concurrency(parts_in_flight.max(1));
    let copied = if compress {
        pump_gzip(source, &mut sink, &display, progress).await
    } else {
        pump(source, &mut sink, &display, progress).await
    };
    finish(copied, &mut sink, &display).await
}

/// Gzips a local file into `target` (parallel members, like [`put_file`] with compression).
pub(crate) async fn gzip_file(source: &Path, target: &Path) -> Result<(), Error> {
    let file = tokio::fs::File::create(target)
        .await
        .map_err(|e| Error::io("writing", target, e))?;
    let mut sink = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let display = target.display().to_string();
    pump_gzip(source, &mut sink, &display, &TransferProgress::default()).await?;
    sink.shutdown()
        .await
        .map_err(|e| Error::io("writing", target, e))
}

/// Bytes of input gzipped as one member by one worker. Small, because each worker holds its chunk mapped
/// and its member in memory while the parts upload (deflate's window is 32 KiB, so the ratio is the same).
const GZIP_CHUNK: usize = 1024 * 1024;

/// Gzips the file in parallel chunks, at the fastest level, writing the members in order. The fastest
/// level because compression is the client's bottleneck on a fast link: in the benchmark (1 M rows,
/// 180 MB) level 6 took 3.2 s of CPU for 21 MB, level 1 1.1 s for 30 MB.
///
/// Workers compress straight from a read-only map of their chunk: reading it into buffers first copied
/// every byte once more, 17 % of an import's CPU in the profile. Members go into buffers from a small pool,
/// because a fresh 4 MiB buffer per chunk cost a page fault per 4 KiB (half of the client's CPU on a VM).
async fn pump_gzip<W: AsyncWrite + Unpin>(
    source: &Path,
    sink: &mut W,
    display: &str,
    progress: &TransferProgress,
) -> Result<(), Error> {
    use futures::StreamExt as _;
    let file = std::fs::File::open(source).map_err(|e| Error::io("reading", source, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading", source, e))?
        .len();
    let file = Arc::new(file);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    // Member buffers; at most `workers` + 1 exist.
    let pool: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    // An empty file still gets one (empty) member, to be a gzip file.
    let chunks = len.div_ceil(GZIP_CHUNK as u64).max(1);
    let mut next = 0u64;
    let mut pending = futures::stream::FuturesOrdered::new();
    loop {
        while next < chunks && pending.len() < workers {
            let (file, pool) = (file.clone(), pool.clone());
            let at = next * GZIP_CHUNK as u64;
            next += 1;
            pending.push_back(tokio::task::spawn_blocking(
                move || -> std::io::Result<(Vec<u8>, usize)> {
                    use std::io::Write as _;
                    let n = (len - at.min(len)).min(GZIP_CHUNK as u64) as usize;
                    let mut output = pool
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop()
                        .unwrap_or_default();
                    output.clear();
                    let mut gz = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
                    if n > 0 {
                        // One map per chunk, unmapped when done, so the file's pages do not add up in
                        // this process's resident memory; populated at once rather than a fault at a
                        // time. GZIP_CHUNK is a multiple of the page size.
                        // SAFETY: read-only and private to this worker. An upload's file must not change
                        // while it runs (a read() loop would upload a torn file); a file truncated under
                        // the map would end the process with SIGBUS instead.
                        let map = unsafe {
                            memmap2::MmapOptions::new()
                                .offset(at)
                                .len(n)
                                .populate()
                                .map(&*file)
                        }?;
                        gz.write_all(&map)?;
                    }
                    Ok((gz.finish()?, n))
                },
            ));
        }
        let Some(done) = pending.next().await else {
            return Ok(());
        };
        let (member, raw) = done
            .map_err(|e| Error::io("compressing", source, std::io::Error::other(e)))?
            .map_err(|e| Error::io("compressing", source, e))?;
        progress
            .local_bytes
            .fetch_add(raw as u64, Ordering::Relaxed);
        sink.write_all(&member)
            .await
            .map_err(|e| Error::cloud("uploading to", display.to_owned(), e))?;
        progress
            .transferred
            .fetch_add(raw as u64, Ordering::Relaxed);
        pool.lock().unwrap_or_else(|p| p.into_inner()).push(member);
    }
}

/// Copies the file into the writer through one reused buffer.
async fn pump<W: AsyncWrite + Unpin>(
    source: &Path,
    sink: &mut W,
    display: &str,
    progress: &TransferProgress,
) -> Result<(), Error> {
    let mut input = tokio::fs::File::open(source)
        .await
        .map_err(|e| Error::io("reading", source, e))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| Error::io("reading", source, e))?;
        if n == 0 {
            return Ok(());
        }
        progress.local_bytes.fetch_add(n as u64, Ordering::Relaxed);
        sink.write_all(&buf[..n])
            .await
            .map_err(|e| Error::cloud("uploading to", display.to_owned(), e))?;
        progress.transferred.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Completes the upload (the single PUT or the multipart completion), or, when the
/// copy failed, aborts a started multipart upload so no orphaned parts are left behind.
async fn finish(
    copied: Result<(), Error>,
    sink: &mut ObjectWriter,
    target: &str,
) -> Result<(), Error> {
    match copied {
        Ok(()) => sink
            .shutdown()
            .await
            .map_err(|e| Error::cloud("uploading to", target.to_owned(), e)),
        Err(e) => {
            if let Err(abort) = sink.abort().await {
                tracing::debug!("aborting the upload to {target} failed too: {abort}");
            }
            Err(e)
        }
    }
}

/// The slice files of a folder: regular files, hidden ones skipped, in name order.
pub(crate) async fn list_slices(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| Error::io("listing", dir, e))?;
    let mut files = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| Error::io("listing", dir, e))?
    {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with(".manifest") {
            continue;
        }
        let meta = tokio::fs::metadata(entry.path())
            .await
            .map_err(|e| Error::io("reading", entry.path(), e))?;
        if meta.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "folder {} has no slice files to upload",
            dir.display()
        )));
    }
    Ok(files)
}

/// Uploads slices under the location's key, then the manifest naming them in order.
pub(crate) async fn put_sliced(
    location: &Location,
    slices: &[PathBuf],
    compress: bool,
    slots: Arc<Semaphore>,
    max_parallel: usize,
    progress: Arc<TransferProgress>,
) -> Result<(), Error> {
    let local = Arc::new(Semaphore::new(max_parallel.max(1)));
    let mut keys = Vec::with_capacity(slices.len());
    let mut tasks = tokio::task::JoinSet::new();
    for slice in slices {
        let name = slice
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let already = is_gzipped(slice).await?;
        let gz = compress && !already;
        // Gzipped objects need a `.gz` name, also when the local slice was gzipped already.
        let suffix = if (gz || already) && !name.ends_with(".gz") {
            ".gz"
        } else {
            ""
        };
        let key = format!("{}{name}{suffix}", location.key);
        keys.push(key.clone());
        let location = location.clone();
        let slice = slice.clone();
        let slots = slots.clone();
        let local = local.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let _mine = local
                .acquire_owned()
                .await
                .map_err(|_| Error::Invalid("the client was shut down".into()))?;
            let _permit = slots
                .acquire_owned()
                .await
                .map_err(|_| Error::Invalid("the client was shut down".into()))?;
            // Slices already run in parallel; one part in flight each keeps memory bounded.
            put_file(&location, &key, &slice, gz, 1, &progress).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let result = joined
            .map_err(|e| Error::Invalid(format!("a slice upload failed unexpectedly: {e}")))?;
        if let Err(e) = result {
            tasks.shutdown().await;
            return Err(e);
        }
    }
    let entries: Vec<_> = keys
        .iter()
        .map(|k| serde_json::json!({"url": location.entry_url(k), "mandatory": true}))
        .collect();
    let manifest = serde_json::json!({ "entries": entries }).to_string();
    let manifest_key = format!("{}manifest", location.key);
    location
        .store
        .put(&object_path(&manifest_key), manifest.into_bytes().into())
        .await
        .map_err(|e| {
            Error::cloud(
                "uploading the manifest to",
                location.entry_url(&manifest_key),
                e,
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::{open_object, read_manifest, stream_to_file};
    use object_store::ObjectStore;
    use object_store::memory::InMemory;

    fn location(store: Arc<InMemory>) -> Location {
        Location {
            store: store as Arc<dyn ObjectStore>,
            key: "upl/9.csv".into(),
            url_prefix: "s3://b/".into(),
            container: None,
            display: "s3://b/upl/9.csv".into(),
        }
    }

    #[tokio::test]
    async fn big_files_go_multipart_gzipped_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big.csv");
        // Incompressible-ish data above one part, so the multipart path runs.
        let mut data = Vec::new();
        let mut x: u64 = 1;
        while data.len() < PART_SIZE * 2 + 1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.extend_from_slice(format!("\"{x}\",\"{}\"\n", x % 977).as_bytes());
        }
        std::fs::write(&src, &data).unwrap();
        let store = Arc::new(InMemory::new());
        let loc = location(store.clone());
        let progress = TransferProgress::default();
        put_file(&loc, "upl/9.csv.gz", &src, true, 2, &progress)
            .await
            .unwrap();
        assert_eq!(
            progress.local_bytes.load(Ordering::Relaxed),
            data.len() as u64
        );
        let stored = store
            .get(&object_path("upl/9.csv.gz"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&stored[..2], &[0x1f, 0x8b]);
        let back = dir.path().join("back.csv");
        let stream = open_object(&loc, &object_path("upl/9.csv.gz"))
            .await
            .unwrap();
        stream_to_file(stream, &back, &Arc::default(), "x")
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
    }

    #[tokio::test]
    async fn an_empty_file_uploads_as_a_valid_empty_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("empty.csv");
        std::fs::write(&src, b"").unwrap();
        let store = Arc::new(InMemory::new());
        let loc = location(store.clone());
        put_file(
            &loc,
            "upl/e.csv.gz",
            &src,
            true,
            1,
            &TransferProgress::default(),
        )
        .await
        .unwrap();
        let stored = store
            .get(&object_path("upl/e.csv.gz"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(&stored[..]),
            &mut out,
        )
        .unwrap();
        assert!(stored.starts_with(&[0x1f, 0x8b]) && out.is_empty());
    }

    #[tokio::test]
    async fn sliced_upload_writes_slices_and_a_manifest_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("t.csv");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("part2.csv"), "\"2\"\n").unwrap();
        std::fs::write(folder.join("part1.csv"), "\"1\"\n").unwrap();
        std::fs::write(folder.join(".hidden"), "x").unwrap();
        let slices = list_slices(&folder).await.unwrap();
        assert_eq!(slices.len(), 2);
        let store = Arc::new(InMemory::new());
        let loc = location(store.clone());
        put_sliced(
            &loc,
            &slices,
            true,
            Arc::new(Semaphore::new(2)),
            2,
            Arc::default(),
        )
        .await
        .unwrap();
        let paths = read_manifest(&loc).await.unwrap();
        let names: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            vec!["upl/9.csvpart1.csv.gz", "upl/9.csvpart2.csv.gz"]
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(list_slices(&empty).await.unwrap_err().is_user());
    }

    #[tokio::test]
    async fn gzipped_slices_always_get_a_gz_name_and_odd_names_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("t");
        std::fs::create_dir(&folder).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"\"1\"\n").unwrap();
        std::fs::write(folder.join("a~1[x] #%.csv"), gz.finish().unwrap()).unwrap();
        let slices = list_slices(&folder).await.unwrap();
        let store = Arc::new(InMemory::new());
        let loc = location(store.clone());
        put_sliced(
            &loc,
            &slices,
            false,
            Arc::new(Semaphore::new(1)),
            1,
            Arc::default(),
        )
        .await
        .unwrap();
        let key = "upl/9.csva~1[x] #%.csv.gz";
        assert_eq!(read_manifest(&loc).await.unwrap(), vec![object_path(key)]);
        // Stored under exactly the manifest's key, not a re-encoded one.
        let stored: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(None))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        assert!(stored.contains(&key.to_owned()), "{stored:?}");
    }
}
