//! Tests of the binary as the platform and the Docker image run it: exit codes of the command line itself,
//! GELF logging over TCP, and a run as an unprivileged user without `HOME`.

mod common;

use common::binary::{kbc_runner, open_up};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kbc-runner")
}

/// A data folder with the given config.json and the folders the platform creates.
fn data_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    for sub in ["in/tables", "in/files", "out/tables", "out/files"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    dir
}

fn run(data: &Path, extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = kbc_runner();
    cmd.env("KBC_DATADIR", format!("{}/", data.display()));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn bad_command_line_is_a_user_error_and_help_is_success() {
    let out = Command::new(binary())
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "emulator", "tables"] {
        assert!(help.contains(command), "help lists `{command}`:\n{help}");
    }
}

#[test]
fn data_dir_flag_beats_environment() {
    let data = data_dir("{}");
    let out = Command::new(binary())
        .env_clear()
        .env("KBC_DATADIR", "/nonexistent/kbc-runner/")
        .args(["run", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.path().join("out/state.json").is_file());
}

#[test]
fn missing_data_folder_names_the_way_out() {
    let out = run(Path::new("/nonexistent/kbc-runner-data"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--data-dir") && err.contains("KBC_DATADIR"),
        "{err}"
    );
}

/// A one-connection TCP server standing in for the platform's GELF server: its port, and a thread that
/// returns every byte it received once the binary closes the connection.
fn gelf_server() -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    });
    (port, reader)
}

/// Logs reach a GELF TCP server as NUL-terminated JSON messages with the fields the platform requires.
#[test]
fn logs_go_to_gelf_over_tcp() {
    let (port, reader) = gelf_server();
    let data = data_dir(r##"{"parameters": {"#storage_token": "gelf-secret-value-1"}}"##);
    let out = run(
        data.path(),
        &[("KBC_LOGGER_ADDR", "127.0.0.1"), ("KBC_LOGGER_PORT", &port)],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The platform turns the whole stdout into one more event at the end: with GELF, stdout stays empty
    // so nothing shows twice.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "stdout must be empty when logging to GELF"
    );
    let bytes = reader.join().unwrap();
    assert_eq!(bytes.last(), Some(&0u8), "every message ends with NUL");
    let messages: Vec<serde_json::Value> = bytes
        .split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| serde_json::from_slice(m).expect("each message is JSON"))
        .collect();
    assert!(!messages.is_empty(), "at least one log message");
    let host = kbc_runner::logging::hostname();
    for m in &messages {
        assert_eq!(m["host"], host.as_str());
        assert!(m["short_message"].is_string());
        assert!(m["timestamp"].is_number());
        assert!((0..=7).contains(&m["level"].as_u64().unwrap()));
    }
    assert!(!String::from_utf8_lossy(&bytes).contains("gelf-secret-value-1"));
}

/// Inside Keboola with GELF: a user error (here `import` in `steps`, which the platform's own output mapping
/// does) ends as exactly one line on stderr, stdout stays empty, and out/tables is left alone.
#[test]
fn user_error_under_gelf_is_one_stderr_line() {
    let (port, reader) = gelf_server();
    let data = data_dir(
        r#"{"parameters": {"steps": ["transform", "import"]},
            "storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-a.t"}]}}}"#,
    );
    std::fs::write(data.path().join("out/tables/t.csv"), "\"a\"\n\"1\"\n").unwrap();
    let out = run(
        data.path(),
        &[
            ("KBC_RUNID", "123"),
            ("KBC_LOGGER_ADDR", "127.0.0.1"),
            ("KBC_LOGGER_PORT", &port),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("output mapping"), "{stderr}");
    assert!(data.path().join("out/tables/t.csv").is_file());
    let _ = reader.join().unwrap();
}

/// The image runs as an arbitrary UID with no writable home: the binary must need nothing but the data
/// folder and /tmp. Runs only as root (it needs `setpriv` to drop privileges), as CI does.
#[test]
fn runs_as_unprivileged_user_without_home() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to switch to an unprivileged uid");
        return;
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(setpriv) = setpriv else {
        panic!("setpriv (util-linux) is needed for this test");
    };
    // The build folder may not be reachable by another user: copy the binary somewhere that is.
    let work = tempfile::Builder::new()
        .prefix("kbc-runner-uid-")
        .tempdir_in("/tmp")
        .unwrap();
    let bin: PathBuf = work.path().join("kbc-runner");
    std::fs::copy(binary(), &bin).unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(data.join("in")).unwrap();
    std::fs::write(data.join("config.json"), r#"{"parameters": {}}"#).unwrap();
    std::fs::write(data.join("in/state.json"), r#"{"cursor": 7}"#).unwrap();
    open_up(work.path());
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("KBC_DATADIR", format!("{}/", data.display()))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("out/state.json")).unwrap()).unwrap();
    assert_eq!(state["cursor"], 7);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(data.join("out/state.json"))
            .unwrap()
            .uid(),
        65534
    );
}
