//! Runs the official Python client `kbcstorage`, unmodified, against the emulator started in-process on port
//! 0 (tests/conformance/kbcstorage_conformance.py), over HTTP and over HTTPS. Without `kbcstorage`
//! installed the test fails when `CI` is set and is skipped loudly otherwise.

mod common;

use kbc_emulator::{Emulator, EmulatorConfig, EmulatorOptions, TlsFiles};

fn kbcstorage_installed() -> bool {
    common::python::installed(
        "kbcstorage, boto3",
        "kbcstorage==0.12.0",
        "the kbcstorage conformance test",
    )
}

async fn conformance(emu: Emulator, env: Vec<(&'static str, String)>) {
    common::python::conformance(emu, "conformance-token", "kbcstorage_conformance.py", env).await;
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
