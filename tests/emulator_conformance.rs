//! Runs the official Python client `kbcstorage`, unmodified, against the emulator started in-process on port
//! 0 (tests/conformance/kbcstorage_conformance.py), over HTTP and over HTTPS. Without `kbcstorage`
//! installed the test fails when `CI` is set and is skipped loudly otherwise.

mod common;

use kbc_emulator::{Emulator, EmulatorConfig, EmulatorOptions, TlsFiles};
use std::process::Command;

fn kbcstorage_installed() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import kbcstorage, boto3"])
        .output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("kbcstorage is not installed (pip install kbcstorage); CI must install it");
    }
    eprintln!(
        "\n*** SKIPPED: pip install kbcstorage (the kbcstorage conformance test did not run) ***\n"
    );
    false
}

/// Runs the conformance script against `emu` with `env` added, and checks it passed.
async fn conformance(emu: Emulator, env: Vec<(&'static str, String)>) {
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
            .envs(env)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_works_unmodified() {
    if !kbcstorage_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = common::stack::start_emulator(dir.path(), "conformance-token")
        .await
        .unwrap();
    conformance(emu, Vec::new()).await;
}

/// The same over HTTPS: requests trusts the test CA through `REQUESTS_CA_BUNDLE`, boto3 through
/// `AWS_CA_BUNDLE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_works_over_tls() {
    if !kbcstorage_installed() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca_path, cert_path, key_path) = common::tls::test_ca(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start_with_options(
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: dir.path().to_owned(),
            tokens: vec!["conformance-token".into()],
        },
        EmulatorOptions {
            tls: Some(TlsFiles {
                cert: cert_path,
                key: key_path,
            }),
            public_url: None,
            ..EmulatorOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(emu.url().starts_with("https://"));
    let ca = ca_path.to_string_lossy().into_owned();
    conformance(
        emu,
        vec![("REQUESTS_CA_BUNDLE", ca.clone()), ("AWS_CA_BUNDLE", ca)],
    )
    .await;
}
