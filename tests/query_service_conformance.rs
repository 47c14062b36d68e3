//! Runs Keboola's official Query Service SDK `keboola-query-service` (0.3.0), unmodified, against the
//! emulator started in-process on port 0 (tests/conformance/query_service_conformance.py); workspaces and
//! imports from them go through the official Storage client `kbcstorage`. Without the two packages installed
//! the test fails when `CI` is set and is skipped loudly otherwise.

mod common;

use std::process::Command;

fn sdk_installed() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import keboola_query_service, kbcstorage, boto3"])
        .output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "keboola-query-service or kbcstorage is not installed \
             (pip install keboola-query-service==0.3.0 kbcstorage==0.12.0); CI must install them"
        );
    }
    eprintln!(
        "\n*** SKIPPED: pip install keboola-query-service==0.3.0 kbcstorage==0.12.0 \
         (the Query Service conformance test did not run) ***\n"
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_query_service_sdk_works_unmodified() {
    if !sdk_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = common::stack::start_emulator(dir.path(), "conformance-token")
        .await
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/query_service_conformance.py"
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
        "Query Service conformance failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("CONFORMANCE OK"),
        "unexpected output:\n{stdout}"
    );
}
