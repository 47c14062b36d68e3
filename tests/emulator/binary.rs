//! The `kbc-runner emulator` command: its first line, request log, and a taken port.

use reqwest::StatusCode;

#[tokio::test]
async fn binary_prints_its_url_first_and_logs_requests_without_tokens() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "very-secret-token",
            "--store",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let url = first
        .trim_end()
        .strip_prefix("listening on http://127.0.0.1:")
        .map(|port| {
            assert!(port.parse::<u16>().unwrap() > 0);
            format!("http://127.0.0.1:{port}")
        });
    let url = url.unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let r = reqwest::Client::new()
        .get(format!("{url}/v2/storage/tokens/verify"))
        .header("X-StorageApi-Token", "very-secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // SIGTERM stops it cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.starts_with("GET /v2/storage/tokens/verify 200 "),
        "{rest}"
    );
    assert!(!rest.contains("very-secret-token"));
}

#[test]
fn binary_reports_a_taken_port_as_a_user_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
        .args(["emulator", "--listen", &addr, "--token", "t", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&addr),
        "{stderr}"
    );
}
