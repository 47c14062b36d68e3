//! Official Python clients run unmodified against the emulator: whether their packages are installed (CI
//! must have them; elsewhere a missing one skips loudly), and one script run with its checks.

use kbc_emulator::Emulator;
use std::process::Command;

/// Whether `python3` can import `modules` (comma-separated). Panics under `CI`, where .ci/run installs
/// them with `pip install {pip}`; otherwise prints a loud skip naming `what` did not run.
pub fn installed(modules: &str, pip: &str, what: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{modules}: not installed (pip install {pip}); CI must install them");
    }
    eprintln!("\n*** SKIPPED: pip install {pip} ({what} did not run) ***\n");
    false
}

/// Runs `tests/conformance/{script}` against `emu` (its URL and S3 endpoint, the token, `env` added),
/// stops the emulator, and checks the script passed and said `CONFORMANCE OK`.
pub async fn conformance(
    emu: Emulator,
    token: &str,
    script: &str,
    env: Vec<(&'static str, String)>,
) {
    let path = format!("{}/tests/conformance/{script}", env!("CARGO_MANIFEST_DIR"));
    let url = emu.url();
    let token = token.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(path)
            .env("KBC_URL", &url)
            .env("KBC_TOKEN", token)
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
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("CONFORMANCE OK"),
        "unexpected output of {script}:\n{stdout}"
    );
}
