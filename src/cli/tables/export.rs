//! `tables export TABLE_ID`: one CSV with one header row (to a file, gzipped or not, or to stdout), or
//! the header-less slices in a folder.

use super::progress::Ticker;
use crate::error::UserError;
use anyhow::Context;
use kbc_storage::{Client, DownloadMode, ExportOptions, Operator, TableId, human_bytes};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Parses `COL=V1,V2` (eq) or `COL!=V1,V2` (ne).
pub(super) fn parse_where(filter: &str) -> Result<kbc_storage::WhereFilter, UserError> {
    let (column, operator, values) = if let Some((c, v)) = filter.split_once("!=") {
        (c, Operator::Ne, v)
    } else if let Some((c, v)) = filter.split_once('=') {
        (c, Operator::Eq, v)
    } else {
        return Err(UserError::new(format!(
            "--where {filter:?}: expected COLUMN=VALUE[,VALUE...] or COLUMN!=VALUE[,VALUE...]"
        )));
    };
    let column = column.trim();
    if column.is_empty() {
        return Err(UserError::new(format!(
            "--where {filter:?}: the column name is empty"
        )));
    }
    Ok(kbc_storage::WhereFilter {
        column: column.to_owned(),
        operator,
        values: values.split(',').map(str::to_owned).collect(),
        data_type: None,
    })
}

pub(super) async fn export(client: &Client, args: super::ExportArgs) -> anyhow::Result<()> {
    let table_id: TableId = args.table_id.parse()?;
    // A destination in a folder that does not exist is the user's to fix; say so before any job runs.
    let target = match (&args.keep_slices, args.output.as_deref()) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(file)) if file != "-" => Some(PathBuf::from(file)),
        _ => None,
    };
    if let Some(parent) = target
        .as_deref()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        crate::user_bail!(
            "cannot write the export: folder {} does not exist",
            parent.display()
        );
    }
    let options = ExportOptions {
        columns: args
            .columns
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
        changed_since: args.changed_since.clone(),
        changed_until: args.changed_until.clone(),
        where_filters: args
            .filters
            .iter()
            .map(|f| parse_where(f))
            .collect::<Result<_, _>>()?,
        limit: args.limit,
        ..Default::default()
    };
    let started = Instant::now();
    let ticker = Ticker::start(client.progress(), "downloaded");
    let (outcome, target) = if let Some(dir) = &args.keep_slices {
        let outcome = client
            .export_table(&table_id, &options, dir, DownloadMode::Sliced)
            .await
            .map_err(anyhow::Error::from);
        (outcome, dir.display().to_string())
    } else {
        match args.output.as_deref() {
            Some(file) if file != "-" => {
                let path = PathBuf::from(file);
                let outcome = if args.gzip {
                    export_gzipped(client, &table_id, &options, &path).await
                } else {
                    client
                        .export_table(&table_id, &options, &path, DownloadMode::Merged)
                        .await
                        .map_err(anyhow::Error::from)
                };
                (outcome, file.to_owned())
            }
            _ => {
                // Stdout: export to a temporary file first, so a failed export never leaves half a
                // CSV on stdout, then stream it out.
                let dir = tempfile::tempdir().context("creating a temporary folder")?;
                let path = dir.path().join("export.csv");
                let outcome = client
                    .export_table(&table_id, &options, &path, DownloadMode::Merged)
                    .await
                    .map_err(anyhow::Error::from);
                if outcome.is_ok() {
                    copy_to_stdout(&path, args.gzip).await?;
                }
                (outcome, "stdout".to_owned())
            }
        }
    };
    ticker.stop().await;
    let outcome = outcome.with_context(|| format!("exporting {}", args.table_id))?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "exported {} to {target}: {} rows, {} in {:.1} s ({}/s){}, file {}, job {}",
        args.table_id,
        outcome.rows,
        human_bytes(outcome.bytes),
        secs,
        human_bytes((outcome.bytes as f64 / secs.max(0.001)) as u64),
        if outcome.cache_hit { ", cached" } else { "" },
        outcome.file_id,
        outcome.job_id
    );
    Ok(())
}

async fn export_gzipped(
    client: &Client,
    table_id: &TableId,
    options: &ExportOptions,
    dest: &Path,
) -> anyhow::Result<kbc_storage::ExportOutcome> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = tempfile::tempdir_in(parent)
        .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
    let plain = dir.path().join("export.csv");
    let outcome = client
        .export_table(table_id, options, &plain, DownloadMode::Merged)
        .await?;
    let gz = dir.path().join("export.csv.gz");
    let input = tokio::fs::File::open(&plain).await?;
    let output = tokio::fs::File::create(&gz).await?;
    let mut encoder =
        async_compression::tokio::write::GzipEncoder::new(tokio::io::BufWriter::new(output));
    let mut reader = tokio::io::BufReader::new(input);
    tokio::io::copy(&mut reader, &mut encoder).await?;
    tokio::io::AsyncWriteExt::shutdown(&mut encoder).await?;
    tokio::fs::rename(&gz, dest)
        .await
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(outcome)
}

async fn copy_to_stdout(path: &Path, gzip: bool) -> anyhow::Result<()> {
    let path = path.to_owned();
    // Blocking std I/O on a blocking thread: stdout is not async.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut input = std::io::BufReader::new(std::fs::File::open(&path)?);
        let stdout = std::io::stdout();
        let out = stdout.lock();
        let result = if gzip {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            std::io::copy(&mut input, &mut enc)
                .and_then(|_| enc.finish())
                .map(|mut o| o.flush())
        } else {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
            std::io::copy(&mut input, &mut out).map(|_| out.flush())
        };
        match result {
            Ok(Ok(())) => Ok(()),
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            Ok(Err(e)) | Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Ok(Err(e)) | Err(e) => Err(anyhow::Error::from(e).context("writing to stdout")),
        }
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_filters_parse() {
        let f = parse_where("status!=done,failed").unwrap();
        assert_eq!((f.column.as_str(), f.operator.as_str()), ("status", "ne"));
        assert_eq!(f.values, vec!["done", "failed"]);
        let f = parse_where("id=1").unwrap();
        assert_eq!(
            (f.column.as_str(), f.operator.as_str(), f.values.len()),
            ("id", "eq", 1)
        );
        assert!(parse_where("nope").is_err());
        assert_eq!(f.operator, Operator::Eq);
        assert!(parse_where("=1").is_err());
    }
}
