//! Local CSV files as Storage loads them: plain or gzipped, told apart by their first bytes (never by the
//! file name: `out/tables/x.csv` may be gzipped, `x.csv.gz` may not be), and read in a declared dialect.
//! Uploads, downloads, the job's header check and the `tables` CLI all decide gzip here.

use crate::dialect::Dialect;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// The first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether data starting with `head` is gzipped.
pub(crate) fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&GZIP_MAGIC)
}

/// Opens a file for reading its data: gunzipped (all members) when it is gzipped.
pub fn open(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut file = std::fs::File::open(path)?;
    let mut head = [0u8; 2];
    let got = read_up_to(&mut file, &mut head)?;
    file.rewind()?;
    let file = BufReader::new(file);
    Ok(if is_gzip(&head[..got]) {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(file)
    })
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// A CSV reader over a file (gunzipped when gzipped) in `dialect`, headers not treated specially and rows
/// of any length accepted, so callers decide what a short row means.
pub fn reader(path: &Path, dialect: Dialect) -> std::io::Result<csv::Reader<Box<dyn Read + Send>>> {
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter.byte())
        .quoting(dialect.enclosure.byte().is_some())
        .quote(dialect.enclosure.byte().unwrap_or(b'"'))
        .from_reader(open(path)?))
}

/// Why a header could not be read: the file did not open, or its first record is not CSV (or not
/// gzip, when it starts like gzip).
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("{0}")]
    Open(std::io::Error),
    #[error("{0}")]
    Read(csv::Error),
}

/// The first record of a CSV file, a UTF-8 byte-order mark left out of the first name; `None` for an
/// empty file.
pub fn read_header(path: &Path, dialect: Dialect) -> Result<Option<Vec<String>>, HeaderError> {
    let mut csv = reader(path, dialect).map_err(HeaderError::Open)?;
    let mut record = csv::StringRecord::new();
    if !csv.read_record(&mut record).map_err(HeaderError::Read)? {
        return Ok(None);
    }
    Ok(Some(
        record
            .iter()
            .map(|s| s.trim_start_matches('\u{feff}').to_owned())
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_is_told_by_content_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let hidden = dir.path().join("x.csv");
        std::fs::write(&hidden, gzip(b"\xEF\xBB\xBFa,b\n1,2\n")).unwrap();
        let plain_gz = dir.path().join("y.csv.gz");
        std::fs::write(&plain_gz, b"c;d\n").unwrap();
        assert_eq!(
            read_header(&hidden, Dialect::default()).unwrap(),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        let semicolon = Dialect {
            delimiter: ";".parse().unwrap(),
            ..Dialect::default()
        };
        assert_eq!(
            read_header(&plain_gz, semicolon).unwrap(),
            Some(vec!["c".to_owned(), "d".to_owned()])
        );
        let empty = dir.path().join("e.csv");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(read_header(&empty, Dialect::default()).unwrap(), None);
        let one = dir.path().join("o.csv");
        std::fs::write(&one, b"\x1f").unwrap();
        assert_eq!(
            read_header(&one, Dialect::default()).unwrap(),
            Some(vec!["\u{1f}".to_owned()])
        );
        assert!(matches!(
            read_header(&dir.path().join("none.csv"), Dialect::default()),
            Err(HeaderError::Open(_))
        ));
        assert!(is_gzip(&GZIP_MAGIC) && !is_gzip(b"\x1f") && !is_gzip(b"id"));
    }
}
