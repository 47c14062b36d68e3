//! Fuzzes manifest and state parsing: any bytes must parse or fail with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("kbc-runner-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("x.csv.manifest");
    if std::fs::write(&path, data).is_ok() {
        let _ = kbc_runner::interface::manifest::load_output_manifest(&path);
        let _ = kbc_runner::interface::manifest::InputManifest::load(&path);
        let _ = kbc_runner::interface::state::State::load(&path);
    }
});
