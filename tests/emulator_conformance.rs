//! Runs the official Python client `kbcstorage`, unmodified, against the emulator started in-process on port
//! 0 (tests/conformance/kbcstorage_conformance.py). Without `kbcstorage` installed the test fails when `CI` is
//! set and is skipped loudly otherwise.

use kbc_runner::emulator::{Emulator, EmulatorConfig};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_works_unmodified() {
    let probe = Command::new("python3")
        .args(["-c", "import kbcstorage, boto3"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        if std::env::var_os("CI").is_some() {
            panic!("kbcstorage is not installed (pip install kbcstorage); CI must install it");
        }
        eprintln!(
            "\n*** SKIPPED: pip install kbcstorage (the kbcstorage conformance test did not run) ***\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: dir.path().to_owned(),
        tokens: vec!["conformance-token".into()],
    })
    .await
    .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/kbcstorage_conformance.py"
    );
    let url = emu.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("KBC_URL", &url)
            .env("KBC_TOKEN", "conformance-token")
            .env("AWS_ENDPOINT_URL_S3", &url)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    emu.shutdown().await;
    assert!(
        output.status.success(),
        "kbcstorage conformance failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("CONFORMANCE OK"),
        "unexpected output:\n{stdout}"
    );
}
