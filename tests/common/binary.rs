//! The built `kbc-runner` as the platform runs it: a clean environment (only `PATH`), and what it printed.

use std::path::Path;
use std::process::{Command, Stdio};

/// The binary with an empty environment but `PATH`, and no stdin.
pub fn kbc_runner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kbc-runner"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    c
}

/// The exit code and the output of one run.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end. Whatever the outcome, it must not be a panic (Rust's exit 101, or the word
/// in stderr): a panic is never the answer to bad input.
pub fn run(mut command: Command) -> Ran {
    let out = command.output().expect("the binary starts");
    let ran = Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_ne!(ran.code, Some(101), "panicked: {}", ran.stderr);
    ran
}

/// Makes a tree usable by any uid (for runs as an unprivileged user): folders 0777, executables 0755,
/// other files 0666.
pub fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap();
    let mode = if meta.is_dir() {
        0o777
    } else if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o666
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            open_up(&entry.unwrap().path());
        }
    }
}
