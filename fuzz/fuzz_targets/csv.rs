//! Fuzzes CSV header reading (what the import checks before uploading): any bytes, any delimiter and
//! enclosure, named `.gz` or not (gzip is told by the content), must give a header or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&options, body)) = data.split_first() else {
        return;
    };
    let dialect = kbc_storage::Dialect {
        delimiter: [",", ";", "\t", "|"][usize::from(options & 3)]
            .parse()
            .expect("a one-byte delimiter"),
        enclosure: ["\"", "'", ""][usize::from((options >> 2) % 3)]
            .parse()
            .expect("a one-byte or empty enclosure"),
    };
    let name = if options & 0x80 != 0 { "x.csv.gz" } else { "x.csv" };
    let dir = std::env::temp_dir().join(format!("kbc-runner-fuzz-csv-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    if std::fs::write(&path, body).is_ok() {
        let _ = kbc_runner::pipeline::import::read_header(&path, dialect);
    }
});
