//! Fuzzes config.json parsing: any bytes must parse or fail with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kbc_runner::interface::Config::parse(Path::new("config.json"), text);
    }
});
